"""The notebooks as users run them: committed clean, and executed end to end by papermill."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from helpers import (
    SKIPPED_IN_MESSY,
    launch_chromium,
    make_classes,
    make_messy,
    tiny_vit,
    tree_digest,
)

from embedscope.cli import NOTEBOOKS, main

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")))
def test_notebook_is_committed_clean_with_one_parameters_cell(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    assert any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:  # no logic in notebooks: no function or class definitions, no loops
        assert not any(
            line.lstrip().startswith(("def ", "class ", "for ", "while "))
            for line in cell.source.splitlines()
        ), cell.source


def _inline_explorer_runs(exported: Path) -> None:
    """The explorer shown inline in 04_explore (an iframe carrying the whole page) comes alive
    when the exported notebook is opened in Chromium, with no server and no network."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(exported.as_uri())
        frame = page.frame_locator("iframe[srcdoc]").first
        frame.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
        assert frame.locator("#plot .main-svg").count() > 0
        browser.close()
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests


def _run_all(source: Path, data: Path, reports: Path, *extra: str) -> int:
    args = ["--notebooks-dir", str(NOTEBOOK_DIR), "--data-root", str(data)]
    return main(["run-all", "--source", str(source), *args, "--reports-root", str(reports), *extra])


def test_run_all_executes_the_four_notebooks_and_writes_every_output(
    tmp_path: Path, builtin_cache: Path, capsys
) -> None:
    source = make_classes(tmp_path / "tiny set", per_class=12)  # > k=10 neighbours per class
    (source / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data, reports = tmp_path / "data", tmp_path / "reports"
    rc = _run_all(source, data, reports)
    assert rc == 0, capsys.readouterr().err
    out = reports / "tiny-set"
    for nb in NOTEBOOKS:
        executed = nbformat.read(out / nb, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        exported = (out / nb).with_suffix(".html").read_text(encoding="utf-8")
        assert len(exported) > 10_000 and '<script src="http' not in exported  # opens offline
    csv = pd.read_csv(out / "embedding_image_df.csv")
    assert list(csv.columns) == ["x", "y", "z", "image_path", "label"]
    assert len(csv) == 36 and csv[["x", "y", "z"]].notna().all().all()
    assert all(Path(p).is_file() for p in csv["image_path"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ingest"]["images"] == 36
    assert metrics["ingest"]["skipped_files"][0]["path"] == "red/broken.jpg"
    assert metrics["knn_accuracy"] == 1.0  # solid-colour classes are trivially separable
    for stage in ("ingest", "embed", "reduce", "explore"):
        assert stage in metrics
    assert metrics["embed"]["seconds_embed"] >= 0 and metrics["embed"]["dim"] == 1280
    assert set(metrics["notebook_seconds"]) == {n.removesuffix(".ipynb") for n in NOTEBOOKS}
    html = (out / "explorer.html").read_text(encoding="utf-8")
    assert "connect-src 'none'" in html and "<script src=" not in html
    _inline_explorer_runs(out / "04_explore.html")
    # a second run reuses the manifest rows and the cached embeddings: nothing embedded again
    assert _run_all(source, data, reports, "--method", "umap", "--dims", "2") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["embed"]["embedded_now"] == 0 and metrics["embed"]["from_cache"] == 36
    # 05_compare: the built-in model against a local folder, two reducers, side by side
    vit = tiny_vit(tmp_path / "tiny-vit")
    args = [
        "--notebooks-dir",
        str(NOTEBOOK_DIR),
        "--data-root",
        str(data),
        "--reports-root",
        str(reports),
        "--name",
        "tiny-set",
        "--methods",
        "pca",
        "umap",
    ]
    assert main(["compare", "--models", "mobilenet_v2", str(vit), *args]) == 0
    table = pd.DataFrame(json.loads((out / "metrics.json").read_text())["compare"])
    assert len(table) == 4 and set(table["method"]) == {"pca", "umap"}
    assert table.loc[table["model"] == "mobilenet_v2", "knn_accuracy"].eq(1.0).all()
    assert (out / "05_compare.html").exists()
    assert metrics["reduce"]["method"] == "umap"
    assert pd.read_csv(out / "embedding_image_df.csv")["z"].isna().all()


def test_a_failing_notebook_names_itself_and_the_cell(tmp_path: Path, capsys) -> None:
    rc = _run_all(tmp_path / "missing", tmp_path / "d", tmp_path / "r")
    err = capsys.readouterr().err
    assert rc == 1
    assert "01_download.ipynb failed in cell" in err and "does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_a_messy_folder_goes_through_with_every_file_accounted_for(
    tmp_path: Path, builtin_cache: Path
) -> None:
    source = make_messy(tmp_path / "messy")
    before = tree_digest(source)
    data, reports = tmp_path / "data", tmp_path / "reports"
    assert _run_all(source, data, reports, "--param", "max_pixels=1000000") == 0
    assert tree_digest(source) == before, "nothing under the source folder may change"
    out = reports / "messy"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s["path"] for s in metrics["ingest"]["skipped_files"]} == SKIPPED_IN_MESSY
    assert metrics["embed"]["images"] == metrics["ingest"]["images"] > 20
    assert metrics["embed"]["skipped_files"] == []
    assert len(pd.read_csv(out / "embedding_image_df.csv")) == metrics["ingest"]["images"]
    shown = json.dumps(nbformat.read(out / "01_download.ipynb", as_version=4).cells)
    assert all(path in shown for path in SKIPPED_IN_MESSY), "01_download lists every skip"
