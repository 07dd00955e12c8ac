"""Decisions add up over rounds, in a real headless Chromium: decide in explorer.html, run the
stages again with the downloaded file (the package functions 01_download to 04_explore call),
decide more, run again. Every round's decisions hold: in the manifest, in
``data/<name>/decisions.csv``, and in the next page, which opens with all of them as decisions
(so its download is the complete set, rows of dropped images no longer on the map included)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import test_explore as base
from helpers import make_classes, tiny_vit

from embedscope.decisions import apply_to_dataset, dataset_decisions, read_decisions
from embedscope.embed import embed
from embedscope.explore import write_explorer
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.points import point_table

browser = base.browser  # one Chromium for the module
A, B, C, D, E = (
    "red/red_0.png",
    "blue/blue_0.png",
    "green/green_1.jpg",
    "red/red_2.png",
    "blue/blue_1.jpg",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("rounds")
    return {
        "tmp": tmp,
        "source": make_classes(tmp / "imgs", per_class=4, size=24),
        "model": str(tiny_vit(tmp / "vit")),
        "layout": Layout("rounds", tmp / "data", tmp / "reports"),
    }


def run_round(world: dict[str, Any], decisions: Path | None) -> tuple[pd.DataFrame, dict, Path]:
    """One ``make run-all NAME=rounds DECISIONS=...``, stage by stage: ingest and apply the
    decisions (01_download), embed (02), project (03), the page with the kept decisions (04).
    Two flagged images make a review queue."""
    layout, model = world["layout"], world["model"]
    ingest(str(world["source"]), layout)
    manifest, applied = apply_to_dataset(layout, decisions)
    embed(layout, model, progress=False)
    points = point_table(layout, model, "pca", 3, 0)  # no findings.csv: the test flags two
    flagged = points["path"].isin([A, C])
    points = points.assign(
        issues=flagged.map({True: "label", False: ""}),
        reason=flagged.map({True: "a test's flag", False: ""}),
        review_priority=flagged.astype(float),
    )
    write_explorer(points, world["source"], layout.explorer, title="rounds",
                   decisions=dataset_decisions(layout))  # fmt: skip
    return manifest.set_index("path"), applied, layout.explorer


def _row(p: base.Page, path: str) -> int:
    return p.page.evaluate("(p) => window.embedscope.data.path.indexOf(p)", path)


def _edit(p: base.Page, op: str, path: str, value: str | None = None) -> None:
    """One edit through the functions the page's buttons call."""
    said = p.page.evaluate(
        "([op, row, value]) => window.embedscope.edit({op: op, rows: [row], value: value})",
        [op, _row(p, path), value],
    )
    assert said == "", said


def _counts(p: base.Page) -> dict[str, Any]:
    return p.page.evaluate(
        "() => { const b = document.getElementById('decided'); return {text: b.textContent,"
        " ...Object.fromEntries(['decisions', 'relabelled', 'dropped', 'tagged']"
        ".map((k) => [k, Number(b.dataset[k])]))}; }"
    )


def _reviewed(p: base.Page) -> str:
    p.page.click("#review-open")
    text = p.page.text_content("#review-progress")
    p.page.click("#review-close")
    return text or ""


def _download(p: base.Page, folder: Path) -> tuple[Path, list[list[str]]]:
    with p.page.expect_download() as info:
        p.page.click("#download-decisions")
    out = folder / "decisions.csv"
    folder.mkdir(parents=True, exist_ok=True)
    info.value.save_as(out)
    return out, list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))[1:]


def test_three_rounds_in_the_page_every_decision_holds(browser, world) -> None:
    tmp, layout = world["tmp"], world["layout"]
    # round 1: a fresh page, no decisions yet
    _, applied, page = run_round(world, None)
    assert applied["decisions"] == 0
    p = base.Page(browser, page)
    assert _counts(p)["text"] == "No decisions yet." and _reviewed(p) == "0 of 2 reviewed"
    _edit(p, "label", A, "green")
    _edit(p, "drop", B)
    file1, rows = _download(p, tmp / "round1")
    assert rows == [[B, "", "drop"], [A, "green", ""]]
    p.close()

    # round 2: both hold; the page opens with them as decisions, B is not on the map
    manifest, applied, page = run_round(world, file1)
    assert manifest.loc[A, ["label", "original_label"]].tolist() == ["green", "red"]
    assert manifest.loc[B, "reason"] == "dropped by decision"
    assert (applied["merged"], applied["decisions"]) == (2, 2)
    p = base.Page(browser, page)
    assert _row(p, B) == -1 and _row(p, A) >= 0
    seen = _counts(p)
    assert (seen["decisions"], seen["relabelled"], seen["dropped"]) == (2, 1, 1)
    assert seen["text"].startswith("2 decisions: 1 relabelled · 1 dropped")
    assert _reviewed(p) == "1 of 2 reviewed"  # A, decided in round 1, counts once
    p.page.evaluate("(i) => window.embedscope.pin(i)", _row(p, A))
    assert "was red" in p.page.text_content("#detail-card")  # its label before round 1
    _edit(p, "tag", C, "check")
    p.page.reload()  # browser-stored decisions beside the kept ones: nothing counted twice
    p.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert _counts(p)["decisions"] == 3 and _reviewed(p) == "2 of 2 reviewed"
    _edit(p, "drop", D)
    file2, rows = _download(p, tmp / "round2")
    assert rows == [[B, "", "drop"], [C, "", "check"], [A, "green", ""], [D, "", "drop"]]
    p.close()

    # round 3: all four hold; undo one kept decision (A back to its own label), add one
    manifest, applied, page = run_round(world, file2)
    assert read_decisions(layout.decisions).values.tolist() == rows  # sorted by path
    assert manifest.loc[A, "label"] == "green" and manifest.loc[C, "tags"] == "check"
    assert (manifest.loc[[B, D], "status"] == "skipped").all()
    p = base.Page(browser, page)
    seen = _counts(p)
    assert (seen["decisions"], seen["dropped"], seen["tagged"]) == (4, 2, 1)
    assert "(2 of images not on the map)" in seen["text"]
    _edit(p, "label", A, "red")
    _edit(p, "tag", E, "blurry")
    file3, rows = _download(p, tmp / "round3")
    assert rows == [
        [B, "", "drop"],
        [E, "", "blurry"],
        [C, "", "check"],
        [A, "", ""],
        [D, "", "drop"],
    ]
    p.assert_safe()
    p.close()

    manifest, applied, _ = run_round(world, file3)
    assert manifest.loc[A, ["label", "tags"]].tolist() == ["red", ""]  # taken back
    assert manifest.loc[E, "tags"] == "blurry" and manifest.loc[C, "tags"] == "check"
    assert read_decisions(layout.decisions)["path"].tolist() == [B, E, C, D]
    layout.decisions.unlink()  # start over
    manifest, applied, _ = run_round(world, None)
    assert applied["decisions"] == 0 and (manifest["status"] == "ok").all()
