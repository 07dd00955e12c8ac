"""The notebooks as users run them: committed clean, and executed end to end by papermill."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from helpers import (
    SKIPPED_IN_MESSY,
    launch_chromium,
    make_classes,
    make_messy,
    tiny_notebook,
    tiny_vit,
    tree_digest,
)

from embedscope import ingest as ingest_module
from embedscope.cli import main, report_app
from embedscope.compare import small_multiples
from embedscope.execute import NotebookFailed, run_notebook
from embedscope.explore.palette import class_colour
from embedscope.points import SCHEMA
from embedscope.runs import NOTEBOOKS, RAY_MISSING

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")))
def test_notebook_is_committed_clean_with_one_parameters_cell(name: str) -> None:
    ids = [c.get("id") for c in json.loads((NOTEBOOK_DIR / name).read_text())["cells"]]
    assert len(set(ids)) == len(ids), "cell ids must be unique (nbformat rewrites duplicates)"
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
        assert int(frame.locator("body").get_attribute("data-drawn")) > 0, "points drawn"
        browser.close()
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests


def _run_all(source: Path, data: Path, reports: Path, *extra: str) -> int:
    args = ["--notebooks-dir", str(NOTEBOOK_DIR), "--data-root", str(data)]
    return main(["run-all", "--source", str(source), *args, "--reports-root", str(reports), *extra])


def _names_no_directory_of_this_machine(folder: Path, *roots: Path) -> None:
    """Every file of a report, text or not, is free of the run's absolute directories."""
    needles = {str(r).encode() for r in (*roots, Path.home()) if len(str(r)) > 1}
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            leaks = [n.decode() for n in needles if n in blob]
            assert not leaks, f"{path.name} names {leaks}"


@pytest.mark.faults
def test_run_all_executes_the_four_notebooks_and_writes_every_output(
    tmp_path: Path, builtin_cache: Path, capfd
) -> None:
    source = make_classes(tmp_path / "tiny set", per_class=12)  # > k=10 neighbours per class
    (source / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data, reports = tmp_path / "data", tmp_path / "reports"
    rc = _run_all(source, data, reports)
    printed = capfd.readouterr()
    assert rc == 0, printed.err
    # quiet: one line when a stage starts and one when it ends, nothing from kernels or models,
    # then what the run found in three lines and the page to open
    lines = printed.out.strip().splitlines()
    assert len(lines) == 2 * len(NOTEBOOKS) + 4, printed.out
    assert not printed.err.strip(), printed.err
    out = reports / "tiny-set"
    assert lines[-4] == (
        "[embedscope] 36 images embedded, 1 file skipped (truncated or corrupt image data: 1)"
    ), lines[-4]
    assert lines[-3].startswith("[embedscope] findings: "), lines[-3]
    assert lines[-2] == (
        "[embedscope] knn_accuracy 1.000 against 0.333 by always guessing the commonest of "
        "3 classes: the model separates the classes well"
    ), lines[-2]
    assert lines[-1] == f"[embedscope] done: open {out / 'explorer.html'}"
    _names_no_directory_of_this_machine(out, tmp_path, NOTEBOOK_DIR.parent)
    for nb in NOTEBOOKS:
        executed = nbformat.read(out / nb, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        exported = (out / nb).with_suffix(".html").read_text(encoding="utf-8")
        assert len(exported) > 10_000 and '<script src="http' not in exported  # opens offline
    points = pd.read_parquet(out / "points-pca-3d.parquet")  # the table every editor read
    assert list(points.columns) == list(SCHEMA) and len(points) == 36
    assert points["z"].notna().all() and not points["path"].str.startswith("/").any()
    csv = pd.read_csv(out / "embedding_image_df.csv")
    assert list(csv.columns) == ["x", "y", "z", "image_path", "label"]
    assert len(csv) == 36 and csv[["x", "y", "z"]].notna().all().all()
    assert all((source / p).is_file() for p in csv["image_path"])  # relative to the dataset
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
    # a second run reuses the manifest rows and the cached embeddings: nothing embedded again,
    # also on the Ray engine (a local Ray started and stopped by 02_embed), same cache
    args = ["--method", "umap", "--dims", "2", "--param", "engine=ray"]
    assert _run_all(source, data, reports, *args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["embed"]["embedded_now"] == 0 and metrics["embed"]["from_cache"] == 36
    assert metrics["embed"]["engine"] == "ray"
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
    missing = str(tmp_path / "no-such-model")  # skipped, named; the others compared
    assert main(["compare", "--models", "mobilenet_v2", str(vit), missing, *args]) == 0
    assert f"skipped model {missing!r}: no model folder at" in capfd.readouterr().err
    table = pd.DataFrame(json.loads((out / "metrics.json").read_text())["compare"])
    assert len(table) == 4 and set(table["method"]) == {"pca", "umap"}
    assert table.loc[table["model"] == "mobilenet_v2", "knn_accuracy"].eq(1.0).all()
    assert (out / "05_compare.html").exists()
    _names_no_directory_of_this_machine(out, tmp_path, NOTEBOOK_DIR.parent)
    assert metrics["reduce"]["method"] == "umap"
    assert pd.read_csv(out / "embedding_image_df.csv")["z"].isna().all()
    assert pd.read_parquet(out / "points-umap-2d.parquet").attrs["method"] == "umap"
    # make serve shows the report's own map (the last run's UMAP 2D), or the one asked for
    assert report_app("tiny-set", data, reports).title == "embedscope · tiny-set · umap 2D"
    asked = report_app("tiny-set", data, reports, method="pca", dims=3)
    assert asked.title == "embedscope · tiny-set · pca 3D"
    where = ["--data-root", str(data), "--reports-root", str(reports)]
    assert main(["serve", "--name", "nope", *where]) == 1
    err = capfd.readouterr().err
    assert (
        err == "embedscope: error: no report 'nope' to serve: run `make run-all NAME=nope "
        "SOURCE=<your folder>` first\n"
    ), err
    # a run that fails later leaves this report whole, and its own notebooks apart in failed/
    before = tree_digest(out)
    assert _run_all(source, data, reports, "--param", 'pooling="bogus"') == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "02_embed.ipynb failed in cell" in err, err
    assert f"(executed notebook: {out / 'failed' / '02_embed.ipynb'})" in err, err
    assert {p: d for p, d in tree_digest(out).items() if not p.startswith("failed/")} == before
    assert sorted(p.name for p in (out / "failed").glob("*.ipynb")) == list(NOTEBOOKS[:2])
    _names_no_directory_of_this_machine(out, tmp_path, NOTEBOOK_DIR.parent)
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_source_that_cannot_work_is_refused_before_any_notebook(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing path, a folder without files, a file that is no archive, a model that is no
    folder, a Kaggle dataset neither cached nor reachable: one sentence each before anything
    runs, and no report folder made."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("hello")
    make_classes(tmp_path / "one", per_class=1)
    cases = [
        ("missing", [], "does not exist"),
        ("empty", [], "holds no files: nothing to embed"),
        ("notes.txt", [], "is a file but not a .zip or .tar(.gz) archive"),
        ("one", ["--model", str(tmp_path / "nowhere")], "no model folder at"),
    ]
    for source, extra, says in cases:
        rc = _run_all(tmp_path / source, tmp_path / "d", tmp_path / "r", *extra)
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1 and says in err, err
        assert not (tmp_path / "r").exists(), "no report, not even a failed notebook"
    # Kaggle: the probe goes to a closed local port, whatever this machine's network is
    monkeypatch.setattr(ingest_module, "KAGGLE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    where = ["--data-root", str(tmp_path / "d"), "--reports-root", str(tmp_path / "r")]
    assert main(["run-all", "--source", "kaggle:owner/data", *where]) == 1
    err = capsys.readouterr().err
    assert err == (
        "embedscope: error: Kaggle dataset 'owner/data' is not in the local kagglehub cache "
        "and 127.0.0.1 cannot be reached (offline or behind a firewall): download it where the "
        "network works and pass its folder as SOURCE\n"
    ), err
    assert not (tmp_path / "r").exists()
    (tmp_path / "kagglehub" / "datasets" / "owner" / "data").mkdir(parents=True)
    ingest_module.check_source("kaggle:owner/data")  # cached: kagglehub needs no network


def test_a_source_of_no_images_says_so_at_the_first_notebook(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk" / "cats"
    junk.mkdir(parents=True)
    (junk / "a.jpg").write_text("not a picture")
    (junk / "b.png").write_bytes(b"")
    rc = _run_all(tmp_path / "junk", tmp_path / "d", tmp_path / "r")
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "01_download.ipynb failed" in err and f"no images found in {tmp_path / 'junk'}" in err
    assert "2 files, all skipped — reasons: " in err and "IndexError" not in err
    assert "empty file" in err and "not an image" in err
    assert [p.name for p in (tmp_path / "r" / "junk").iterdir()] == ["failed"]
    _names_no_directory_of_this_machine(tmp_path / "r", tmp_path)


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory, builtin_cache: Path) -> tuple[Path, dict, Path, Path]:
    """One run-all over the messy folder, shared by the tests that look at it."""
    tmp = tmp_path_factory.mktemp("messy-run")
    source = make_messy(tmp / "messy")
    before = tree_digest(source)
    data, reports = tmp / "data", tmp / "reports"
    assert _run_all(source, data, reports, "--param", "max_pixels=1000000") == 0
    return source, before, data, reports


def test_a_messy_folder_goes_through_with_every_file_accounted_for(messy_run) -> None:
    source, before, _, reports = messy_run
    assert tree_digest(source) == before, "nothing under the source folder may change"
    out = reports / "messy"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s["path"] for s in metrics["ingest"]["skipped_files"]} == SKIPPED_IN_MESSY
    assert metrics["embed"]["images"] == metrics["ingest"]["images"] > 20
    assert metrics["embed"]["skipped_files"] == []
    assert metrics["decisions"]["file"] is None and metrics["decisions"]["relabelled"] == 0
    assert len(pd.read_csv(out / "embedding_image_df.csv")) == metrics["ingest"]["images"]
    shown = json.dumps(nbformat.read(out / "01_download.ipynb", as_version=4).cells)
    assert all(path in shown for path in SKIPPED_IN_MESSY), "01_download lists every skip"
    reduce_nb = json.dumps(nbformat.read(out / "03_reduce.ipynb", as_version=4).cells)
    assert "suggested_label" in reduce_nb and "suggested_share" in reduce_nb  # mislabel table
    findings = pd.read_csv(out / "findings.csv", keep_default_na=False).set_index("path")
    assert len(findings) == metrics["embed"]["images"]
    assert list(findings["review_priority"]) == sorted(findings["review_priority"], reverse=True)
    # the later copy in path order is the duplicate ("odd/" sorts before "red/")
    assert findings.loc["red/red_0.png", "exact_duplicate_of"] == "odd/dup of red.png"
    assert "exact_duplicate" in findings.loc["red/red_0.png", "issues"].split(";")
    assert metrics["findings"]["images_flagged"] == (findings["issues"] != "").sum()
    assert metrics["findings"]["exact_duplicate"] >= 1
    page = (out / "explorer.html").read_text(encoding="utf-8")
    # the page carries every point's suggestion (label names, codes and shares)
    assert '"suggested":{"names":[' in page and '"share":{"dtype":"f4"' in page


EVIL = "odd/<img src=x onerror=alert(1)>.png"


def test_decisions_change_the_next_run_and_embed_nothing(messy_run, capsys) -> None:
    """The round trip: a decisions.csv from the explorer relabels, drops and tags in the next
    run's manifest, metrics and explorer; the source stays as it was; nothing is re-embedded."""
    source, before, data, reports = messy_run
    decided = pd.DataFrame(
        [
            ("red/red_1.jpg", "blue", ""),
            (EVIL, "green", "hostile name"),
            ("blue/blue_0.png", "", "drop"),
            ("odd/tiny.bmp", "", "drop;too small"),
            ("green/green_1.jpg", "", "check"),
            ("red/red_0.png", "", "keep:exact_duplicate"),
            ("nope/not-there.png", "red", "drop"),
        ],
        columns=["path", "label", "tags"],
    )
    file = reports.parent / "decisions.csv"
    decided.to_csv(file, index=False)
    # and a labels file, named from where the user stands: it labels only the images it names
    mine = reports.parent / "my labels"
    mine.mkdir(exist_ok=True)
    (mine / "labels.csv").write_text("path,label\ntop-level.png,red\nnope/gone.png,blue\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(mine)
        rc = _run_all(
            source, data, reports, "--param", "max_pixels=1000000", "--decisions", str(file),
            "--labels", "labels.csv",
        )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert tree_digest(source) == before, "decisions never touch the source folder"
    out = reports / "messy"
    metrics = json.loads((out / "metrics.json").read_text())
    applied = metrics["decisions"]
    assert applied["file"] == "[decisions folder]/decisions.csv"  # no path of this machine
    assert applied["kept"] == "[data]/messy/decisions.csv"  # merged there, for the next rounds
    assert (applied["relabelled"], applied["dropped"], applied["tagged"]) == (2, 2, 4)
    assert applied["unknown_paths"] == ["nope/not-there.png"]
    assert metrics["embed"]["embedded_now"] == 0  # labels and drops change no image
    assert metrics["embed"]["from_cache"] == metrics["embed"]["images"]
    manifest = pd.read_parquet(data / "messy" / "manifest.parquet").set_index("path")
    assert (
        manifest.loc["red/red_1.jpg", "label"] == "blue" and manifest.loc[EVIL, "label"] == "green"
    )
    for dropped in ("blue/blue_0.png", "odd/tiny.bmp"):
        assert manifest.loc[dropped, ["status", "reason"]].tolist() == [
            "skipped",
            "dropped by decision",
        ]
    assert manifest.loc["odd/tiny.bmp", "tags"] == "drop;too small"
    skipped = {s["path"] for s in metrics["ingest"]["skipped_files"]}
    assert skipped == SKIPPED_IN_MESSY | {"blue/blue_0.png", "odd/tiny.bmp"}
    csv = pd.read_csv(out / "embedding_image_df.csv")
    assert len(csv) == metrics["embed"]["images"] == metrics["ingest"]["images"]
    label_of = dict(zip(csv["image_path"], csv["label"], strict=True))  # dataset-relative
    assert label_of["red/red_1.jpg"] == "blue" and "blue/blue_0.png" not in label_of
    shown = json.dumps(nbformat.read(out / "01_download.ipynb", as_version=4).cells)
    assert "unknown path (nothing changed): 'nope/not-there.png'" in shown
    assert metrics["ingest"]["labels_file"] == {
        "file": "labels.csv",  # relative to where the run started (its folder)
        "applied": 1,
        "unknown_paths": ["nope/gone.png"],
    }
    assert "labels file labels.csv: labelled 1 file" in shown
    assert "unknown path (nothing changed): 'nope/gone.png'" in shown
    assert manifest.loc["top-level.png", "label"] == "red"  # named by the labels file
    assert manifest.loc["green/green_0.png", "label"] == "green"  # not named: its folder's
    _names_no_directory_of_this_machine(out, reports.parent, NOTEBOOK_DIR.parent)
    # 02_embed's tables show every sentence whole (pandas cut them at 50 characters with "…")
    embed_nb = json.dumps(nbformat.read(out / "02_embed.ipynb", as_version=4).cells)
    facts = metrics["embed"]
    said = [v for k, v in facts.items() if isinstance(v, str) and k != "skipped_files"]
    said.append((facts["precision_check"] or {}).get("reason", ""))
    for text in said:
        assert json.dumps(text)[1:-1] in embed_nb, text
    for nb in NOTEBOOKS:  # counts read right: "1 file skipped", never "1 files skipped"
        text = json.dumps(nbformat.read(out / nb, as_version=4).cells)
        assert not re.search(r"(?<![\d.,])1 (image|file|label|path|exact duplicate)s\b", text), nb
    findings = pd.read_csv(out / "findings.csv", keep_default_na=False).set_index("path")
    kept = findings.loc["red/red_0.png"]  # a person kept it: no longer flagged for that
    assert kept["exact_duplicate_of"] == "odd/dup of red.png"
    assert "exact_duplicate" not in kept["issues"].split(";") and not kept["exact_duplicate"]


def test_a_flat_folder_runs_end_to_end_and_serves(tmp_path: Path, builtin_cache: Path) -> None:
    """Images straight in the source folder carry no labels: every notebook runs, no label is
    judged and each says why in one line, clusters, outliers and quality are found as usual,
    and the page and the Dash app open coloured by cluster (before: 04_explore failed with
    KeyError 'probe_label', and ``embedscope serve`` printed its traceback)."""
    from embedscope.explore.dash import create_app
    from embedscope.layout import Layout

    classes = make_classes(tmp_path / "classes", per_class=8)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in classes.rglob("*.*"):
        path.rename(flat / path.name)
    data, reports = tmp_path / "data", tmp_path / "reports"
    assert _run_all(flat, data, reports) == 0
    out = reports / "flat"
    why = "label issues not judged: the images carry no labels (a flat folder)"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_accuracy"] is None and metrics["analysis"]["reason"] == why
    assert metrics["analysis"]["label_issues"]["skipped"] == why
    assert metrics["analysis"]["clusters"] >= 2 and metrics["analysis"]["cluster_purity"] is None
    assert metrics["findings"]["mislabel"] == 0 and metrics["findings"]["labelled_images"] == 0
    for nb in ("03_reduce.ipynb", "04_explore.ipynb"):
        assert why in json.dumps(nbformat.read(out / nb, as_version=4).cells), nb
    findings = pd.read_csv(out / "findings.csv", keep_default_na=False)
    assert len(findings) == 24 and not findings["label_issue"].any()
    assert findings["outlier_score"].between(0, 1).all() and "grayscale" in findings
    page = (out / "explorer.html").read_text(encoding="utf-8")
    assert '"colourBy":"0"' in page or '"colourBy":"1"' in page  # a column: the clusters
    app = create_app(Layout("flat", data, reports), method="pca", dims=3)
    names = [t.name for t in app.layout["map"].figure.data]
    assert names and all(n.startswith("cluster ") or n == "no cluster" for n in names), names


def test_a_bad_decisions_file_stops_the_run_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "decisions.csv"
    bad.write_text("path,label\nred/a.png,blue\n")
    rc = _run_all(tmp_path / "src", tmp_path / "d", tmp_path / "r", "--decisions", str(bad))
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "needs exactly the columns path,label,tags" in err
    assert not (tmp_path / "r").exists(), "no notebook ran"


def test_a_labels_file_is_read_from_where_the_user_stands_and_checked_first(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run-all LABELS=fixes.csv` reads the file from where make was run (before: from
    notebooks/, a FileNotFoundError in 01_download, and LABELS was not even passed on)."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "bad.csv").write_text("file,label\nred/a.png,blue\n")
    monkeypatch.chdir(here)
    for given, says in [
        (["--labels", "missing.csv"], f"labels file {here / 'missing.csv'} does not exist"),
        (["--labels", "bad.csv"], f"labels file {here / 'bad.csv'} needs the columns path,label"),
        (["--param", "labels=bad.csv"], f"labels file {here / 'bad.csv'} needs the columns"),
    ]:
        rc = _run_all(tmp_path / "src", tmp_path / "d", tmp_path / "r", *given)
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"embedscope: error: {says}"), err
    assert not (tmp_path / "r").exists(), "no notebook ran"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run-all", "--method", "foo"], "METHOD (--method) must be one of pca, ipca, umap, "
         "tsne, not 'foo'"),
        (["run-all", "--dims", "4"], "DIMS (--dims) must be one of 3, 2, not '4'"),
        (["serve", "--name", "x", "--method", "PCA"], "METHOD (--method) must be one of"),
        (["compare", "--name", "x", "--methods", "pca", "umpa"], "METHODS (--methods) must be "
         "one of pca, ipca, umap, tsne, not 'umpa'"),
        (["compare", "--name", "x", "--dims", "x"], "--dims must be one of 3, 2, not 'x'"),
    ],
)  # fmt: skip
def test_a_method_or_dims_not_offered_names_the_make_variable(argv, says, capsys) -> None:
    """`make run-all METHOD=foo` printed argparse's usage and named only `--method`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"embedscope: error: {says}") and len(err.splitlines()) == 1, err


def test_a_misspelt_param_names_the_closest_real_one_and_runs_nothing(tmp_path: Path, capsys):
    rc = _run_all(tmp_path / "src", tmp_path / "d", tmp_path / "r", "--param", "bach_size=4")
    err = capsys.readouterr().err
    assert rc == 2, "a usage error, as argparse's own"
    assert err == (
        "embedscope: error: no notebook has a parameter 'bach_size'; the closest is 'batch_size'\n"
    )
    assert not (tmp_path / "r").exists(), "no notebook ran"


def test_the_ray_engine_without_ray_says_what_to_install(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a `make run-all` install: no Ray
    rc = _run_all(tmp_path / "src", tmp_path / "d", tmp_path / "r", "--param", "engine=ray")
    err = capsys.readouterr().err
    assert rc == 1 and err == f"embedscope: error: {RAY_MISSING}\n"
    assert "make ray" in RAY_MISSING and "-e '.[ray]'" in RAY_MISSING
    assert not (tmp_path / "r").exists(), "no notebook ran"


def test_compare_small_multiples_carry_one_legend_in_the_page_palette() -> None:
    rng = np.random.default_rng(0)
    maps = {
        (model, method): pd.DataFrame(
            {"x": rng.normal(size=6), "y": rng.normal(size=6), "label": list("aabbcc")}
        )
        for model in ("m1", "m2")
        for method in ("pca", "umap")
    }
    fig = small_multiples(maps, cols=2)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    colours = [h.get_color() for h in legend.legend_handles]
    assert colours == [class_colour(c, k) for k, c in enumerate("abc")]
    assert fig._repr_png_()[:4] == b"\x89PNG"


@pytest.mark.faults
def test_what_a_kernel_prints_on_its_own_never_reaches_the_terminal(tmp_path: Path, capfd) -> None:
    """A kernel's own stderr (zmq's shutdown noise, now and then) goes to a log, not the user;
    when the kernel dies, its last words are the one line the user gets."""
    noisy = tiny_notebook(tmp_path / "noisy.ipynb", "import os\nos.write(2, b'kernel noise\\n')")
    run_notebook(noisy, tmp_path / "out" / "noisy.ipynb", {}, cwd=tmp_path, roots={})
    assert "kernel noise" not in capfd.readouterr().err
    code = "import os\nos.write(2, b'dying words\\n')\nos._exit(3)"
    dying = tiny_notebook(tmp_path / "dying.ipynb", code)
    with pytest.raises(NotebookFailed, match=r"dying.ipynb: the kernel died \(dying words\)"):
        run_notebook(dying, tmp_path / "out" / "dying.ipynb", {}, cwd=tmp_path, roots={})
    assert "dying words" not in capfd.readouterr().err
