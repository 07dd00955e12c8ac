"""Search by meaning with a real CLIP code path: a tiny random CLIPModel and CLIP's real BPE
tokenizer, saved with save_pretrained and loaded back through from_pretrained; every ranking is
checked against a brute-force one computed here with transformers directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    dash_call,
    launch_chromium,
    make_classes,
    plotly_array,
    tiny_clip,
    tiny_vit,
)

from embedscope.embed import embed
from embedscope.execute import run_notebook
from embedscope.explore.dash import create_app
from embedscope.explore.live import LiveExplorer
from embedscope.ingest import ingest, load_manifest
from embedscope.layout import Layout
from embedscope.models import ModelUnavailable
from embedscope.search import (
    MAX_LIKE,
    NoTextTower,
    Searcher,
    load_prompt_scores,
    load_text_tower,
    more_like_this,
    prompt_scores,
    second_opinion,
    text_query,
)
from embedscope.store import load_embeddings

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NO_TOWER = "text search needs a model with a text tower (CLIP, SigLIP…); {} has none"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return str(tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip: str) -> Layout:
    tmp = tmp_path_factory.mktemp("search")
    layout = Layout("colours", tmp / "data", tmp / "reports")
    ingest(str(make_classes(tmp / "images", per_class=4)), layout)
    embed(layout, clip, precision="fp32", progress=False)
    return layout


def _brute_force(clip: str, layout: Layout, texts: list[str]) -> np.ndarray:
    """Cosine of every stored vector to each text, straight from transformers."""
    from transformers import CLIPModel, CLIPTokenizer

    model, tok = CLIPModel.from_pretrained(clip).eval(), CLIPTokenizer.from_pretrained(clip)
    with torch.inference_mode():
        out = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    text = out if isinstance(out, torch.Tensor) else out.pooler_output
    text = torch.nn.functional.normalize(text, dim=-1).numpy()
    images = np.asarray(load_embeddings(layout, clip).vectors, dtype=np.float64)
    return (images / np.linalg.norm(images, axis=1, keepdims=True)) @ text.T


def test_the_tokenizer_is_clips_real_bpe_vocabulary(clip: str) -> None:
    tower = load_text_tower(clip)
    ids = tower.tokenizer("a photo of a dog")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 1929, 49407]  # OpenAI CLIP's own numbering
    assert len(tower.tokenizer) == 49408


def test_text_query_ranks_every_image_like_brute_force(dataset: Layout, clip: str) -> None:
    query = "a red square on a sofa"
    sims = _brute_force(clip, dataset, [query])[:, 0]
    top = text_query(dataset, clip, query, k=12)
    rows = load_embeddings(dataset, clip).rows
    expected = np.argsort(-sims, kind="stable")
    assert top["path"].tolist() == rows["path"].iloc[expected].tolist()
    np.testing.assert_allclose(top["score"], sims[expected], atol=1e-5)
    assert len(text_query(dataset, clip, query, k=3)) == 3
    with pytest.raises(ValueError, match="type a text"):
        text_query(dataset, clip, "  ", k=3)


def test_more_like_this_from_a_row_and_from_a_file(dataset: Layout, clip: str) -> None:
    vectors = np.asarray(load_embeddings(dataset, clip).vectors, dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit[5]
    sims[5] = -np.inf  # the point itself is not "more like" itself
    got = more_like_this(dataset, clip, 5, k=4)
    assert got["position"].tolist() == np.argsort(-sims, kind="stable")[:4].tolist()
    assert len(more_like_this(dataset, clip, 5, k=500)) == min(MAX_LIKE, 11)
    _, root = load_manifest(dataset)
    path = load_embeddings(dataset, clip).rows["path"][7]
    from_file = more_like_this(dataset, clip, root / path, k=12)  # embedded now
    assert from_file.set_index("path")["score"][path] > 0.999
    with pytest.raises(ValueError, match="no row 99"):
        more_like_this(dataset, clip, 99, k=3)


def test_prompt_columns_and_zero_shot_labels(dataset: Layout, clip: str) -> None:
    facts = prompt_scores(dataset, clip, ["a blurry photo"])
    classes = ["blue", "green", "red"]
    texts = [f"a photo of a {c}" for c in classes] + ["a blurry photo"]
    assert facts["prompts"] == texts
    table = load_prompt_scores(dataset, clip)
    sims = _brute_force(clip, dataset, texts)
    for j, t in enumerate(texts):
        np.testing.assert_allclose(table[f"prompt: {t}"], sims[:, j], atol=1e-5)
    zero_shot = np.array(classes)[sims[:, :3].argmax(axis=1)]
    assert table["zero_shot_label"].tolist() == zero_shot.tolist()
    labels = load_embeddings(dataset, clip).rows["label"].to_numpy()
    assert table["zero_shot_disagrees"].tolist() == (zero_shot != labels).tolist()
    assert sum(facts["zero_shot_labels"].values()) == 12
    assert facts["zero_shot_disagrees"] == int((zero_shot != labels).sum())
    scored = pd.DataFrame({"label": labels, "zero_shot_label": zero_shot})
    scored["suggested_label"], scored["mislabel_score"] = labels, np.linspace(0, 1, 12)
    agreement = second_opinion(scored)
    assert agreement["both_disagree"] == 0 and agreement["neighbours_disagree"] == 0
    assert agreement["zero_shot_disagrees"] == facts["zero_shot_disagrees"]


def test_a_flat_folder_has_no_class_prompts_and_says_so(clip: str, tmp_path: Path) -> None:
    """A flat folder names no class: with no prompt listed there is nothing to score (before:
    02_embed failed with "no text to encode"), and an earlier run's scores go; listed prompts
    are scored as usual but name no zero-shot label (they describe, they are not classes)."""
    from embedscope.analyse import analyse

    classes = make_classes(tmp_path / "classes", per_class=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in classes.rglob("*.*"):
        path.rename(flat / path.name)
    layout = Layout("flat", tmp_path / "data", tmp_path / "reports")
    ingest(str(flat), layout)
    embed(layout, clip, precision="fp32", progress=False)
    listed = prompt_scores(layout, clip, ["a dog", "a cat"])
    assert listed == {"prompts": ["a dog", "a cat"]}
    assert list(load_prompt_scores(layout, clip).columns) == ["prompt: a dog", "prompt: a cat"]
    facts = prompt_scores(layout, clip, [])
    assert facts["prompts"] == [] and "no labels" in facts["skipped"]
    assert load_prompt_scores(layout, clip).columns.empty
    found = analyse(layout, clip)
    report, per_image = found.report, found
    assert report["knn_accuracy"] is None and "flat folder" in report["label_issues"]["skipped"]
    assert set(per_image["suggested_label"]) == {"(unlabelled)"}


def test_a_model_without_a_text_tower_says_so_in_one_sentence(tmp_path: Path) -> None:
    vit = str(tiny_vit(tmp_path / "vit"))
    with pytest.raises(NoTextTower) as err:
        load_text_tower(vit)
    assert str(err.value) == NO_TOWER.format(vit)
    layout = Layout("vit", tmp_path / "data", tmp_path / "reports")
    ingest(str(make_classes(tmp_path / "images", per_class=2)), layout)
    embed(layout, vit, progress=False)
    searcher = Searcher.from_layout(layout, vit)
    with pytest.raises(NoTextTower, match="has none$"):
        searcher.text("a dog")
    assert len(searcher.like(0, k=3)[0]) == 3  # "more like this" works with any model
    assert prompt_scores(layout, vit) == {"skipped": NO_TOWER.format(vit)}
    assert load_prompt_scores(layout, vit).empty


def test_a_clip_folder_saved_without_its_tokenizer_says_so(clip: str, tmp_path: Path) -> None:
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(Path(clip) / name, folder / name)
    with pytest.raises(ModelUnavailable, match="has a text tower but no tokenizer: save it") as err:
        load_text_tower(str(folder))
    assert "\n" not in str(err.value)
    layout = Layout("no-tokenizer", tmp_path / "data", tmp_path / "reports")
    ingest(str(make_classes(tmp_path / "images", per_class=2)), layout)
    embed(layout, str(folder), progress=False)
    assert prompt_scores(layout, str(folder)) == {"skipped": str(err.value)}  # 02 goes on


def test_live_panel_answers_a_typed_query_and_more_like_this(dataset: Layout, clip: str) -> None:
    """The panel's search runs in the kernel (the text tower lives there): the top k become the
    panel's selection, with their scores, sent to the panel's gallery."""
    emb = load_embeddings(dataset, clip)
    _, root = load_manifest(dataset)
    rng = np.random.default_rng(0)
    points = emb.rows.assign(x=rng.normal(size=12), y=rng.normal(size=12))
    prompt_scores(dataset, clip)  # its own prompt columns, whichever test ran before
    points = points.join(load_prompt_scores(dataset, clip))
    live = LiveExplorer(points, root, searcher=Searcher.from_layout(dataset, clip))
    assert "prompt: a photo of a red" in json.dumps(live._data)  # the panel can colour by it
    sent: list[tuple[dict, list]] = []
    live.send = lambda content, buffers=None: sent.append((content, buffers or []))
    found = live.search("a red square on a sofa", k=5)
    sims = _brute_force(clip, dataset, ["a red square on a sofa"])[:, 0]
    expected = np.argsort(-sims, kind="stable")[:5].tolist()
    assert found.index.tolist() == live.selected.index.tolist() == expected
    assert live.selected["score"].iloc[0] == pytest.approx(sims[expected[0]], abs=1e-5)
    ((content, (body,)),) = sent  # the selection, as the panel's box select would make it
    assert content == {"kind": "select"}
    assert np.frombuffer(bytes(body), "<i4").tolist() == expected
    clicked = expected[1]
    like = live.more_like_this(clicked, k=5)
    assert len(live.selected) == 5 and like.index.tolist() == live.selected.index.tolist()
    assert clicked not in live.selected.index  # more like it, not itself
    live.clear_selection()
    assert live.selected.empty


def test_dash_search_fills_the_gallery_with_scores_and_rings_them(
    dataset: Layout, clip: str
) -> None:
    app = create_app(dataset, model=clip, method="pca", dims=2)
    client = app.server.test_client()
    # the search callback shares the selection with the box/lasso one: Dash names its outputs
    key = next(k for k in app.callback_map if "search-message.children" in k)
    outputs = key.strip(".").split("...")
    clicks = {"search.n_clicks": 1, "query.n_submit": None, "more-like.n_clicks": 0}
    state = {"query.value": "a red square on a sofa", "k.value": 4, "map.clickData": None}
    got = dash_call(client, outputs, clicks, state)
    sims = _brute_force(clip, dataset, ["a red square on a sofa"])[:, 0]
    expected = np.argsort(-sims, kind="stable")[:4].tolist()
    assert got["selection"]["data"] == expected
    scores = got["scores"]["data"]
    np.testing.assert_allclose([scores[str(r)] for r in expected], sims[expected], atol=1e-4)
    inputs = {"selection.data": expected, "ops.data": [], "scores.data": scores}
    shown = dash_call(
        client, ["gallery.children", "gallery-note.children", "counter.children"], inputs
    )
    last_line = shown["gallery"]["children"][0]["props"]["children"][-1]["props"]["children"]
    assert last_line == f"score {scores[str(expected[0])]:.3f}"
    drawn = {
        "labels.value": ["blue", "green", "red"],
        "selection.data": expected,
        "scores.data": scores,
    }
    box = {"map.selectedData": None}
    ring = dash_call(client, ["map.figure"], drawn, box, "scores.data")["map"]["figure"]["data"][-1]
    assert ring["name"] == "selection (4)" and plotly_array(ring["customdata"]).tolist() == expected
    clicked = {"points": [{"curveNumber": 0, "pointNumber": 0, "customdata": 2}]}
    like = {"search.n_clicks": 1, "query.n_submit": None, "more-like.n_clicks": 1}
    got = dash_call(client, outputs, like, state | {"map.clickData": clicked}, "more-like.n_clicks")
    assert len(got["selection"]["data"]) == 4 and 2 not in got["selection"]["data"]
    refused = dash_call(client, outputs, clicks, state | {"query.value": ""})
    assert refused["search-message"]["children"] == "type a text to search for"


def test_notebooks_02_to_04_with_a_clip_folder_write_prompts_and_zero_shot(
    dataset: Layout, clip: str
) -> None:
    params = {"name": dataset.name, "model": clip, "method": "pca", "dims": 3}
    params |= {"data_root": str(dataset.data_root), "reports_root": str(dataset.reports_root)}
    out = dataset.reports_dir
    for nb in ("02_embed.ipynb", "03_reduce.ipynb", "04_explore.ipynb"):  # 01 is model-free
        run_notebook(NOTEBOOK_DIR / nb, out / nb, params, cwd=NOTEBOOK_DIR, roots={})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prompts"]["prompts"] == [f"a photo of a {c}" for c in ("blue", "green", "red")]
    assert sum(metrics["prompts"]["zero_shot_labels"].values()) == 12
    assert metrics["zero_shot"]["zero_shot_disagrees"] == metrics["prompts"]["zero_shot_disagrees"]
    html = (out / "explorer.html").read_text(encoding="utf-8")
    assert '"name":"prompt: a photo of a red","kind":"number"' in html
    assert '"name":"zero_shot_label","kind":"category"' in html
    _explorer_colours_by_a_prompt(out / "explorer.html", load_prompt_scores(dataset, clip))
    reduce = nbformat.read(out / "03_reduce.ipynb", as_version=4)
    shown = json.dumps([c.get("outputs") for c in reduce.cells if c.cell_type == "code"])
    assert "zero_shot_label" in shown and "top_mislabel_flagged_by_zero_shot" in shown


def _explorer_colours_by_a_prompt(page_file: Path, table: pd.DataFrame) -> None:
    """In Chromium, "Colour by" offers the prompt and colours every point by its similarity."""
    from playwright.sync_api import sync_playwright

    prompt = "prompt: a photo of a red"
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
        assert prompt in page.locator("#colour option").all_text_contents()
        page.select_option("#colour", label=prompt)
        traces = page.evaluate(  # what "colour by" shows: name, a colour scale, every value
            "() => { const c = window.embedscope.colouring(); "
            "return [[c.name, c.scale, Array.from(c.values)]]; }"
        )
        browser.close()
    assert [t[:2] for t in traces] == [[prompt, True]]
    np.testing.assert_allclose(traces[0][2], table[prompt], rtol=1e-3, atol=1e-4)
