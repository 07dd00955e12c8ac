"""Leaks in the review queue, in a real Chromium: a tiny train/test dataset with planted copies
(test_leaks.make_splits) run through the stages' functions; the page and the Dash app colour,
filter and select by split, show each leak beside its train image (large), and their keys
(k keep, t drop the train copy, d drop the copy) write decisions.csv; the next run with that
file counts the leaks and the honest numbers accordingly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import test_explore as base
from helpers import tiny_vit
from test_leaks import make_splits

from embedscope.analyse import analyse
from embedscope.decisions import (
    DecisionLog,
    ReviewQueue,
    apply_to_dataset,
    dataset_decisions,
    decisions_csv,
    own_labels,
)
from embedscope.embed import embed
from embedscope.explore import write_explorer
from embedscope.explore.dash import create_app
from embedscope.findings import findings_table, write_findings
from embedscope.findings.leaks import dataset_leaks, leak_pairs, write_leaks
from embedscope.ingest import ingest, load_manifest
from embedscope.layout import Layout
from embedscope.points import neighbor_rows, point_table, write_points
from embedscope.splits import split_report
from embedscope.store import load_embeddings
from embedscope.thumbs import ThumbnailCache

browser = base.browser  # one Chromium for the module


def run(layout: Layout, source: Path, model: str, decisions: Path | None = None) -> dict:
    """One run as the notebooks make it: 01 (ingest, decisions), 02 (embed), 03 (leaks,
    findings, leaks.csv, the honest numbers), 04 (the point table and the page)."""
    ingest(str(source), layout, workers=1)
    apply_to_dataset(layout, decisions)
    embed(layout, model, progress=False)
    manifest, root = load_manifest(layout)
    emb = load_embeddings(layout, model)
    analysis = analyse(layout, model)
    leaks = dataset_leaks(root, emb.rows, emb.vectors, manifest)
    findings = findings_table(emb.rows, analysis, manifest, leaks=leaks)
    write_findings(findings, layout)
    pairs = leak_pairs(emb.rows, leaks["split"], leaks)
    write_leaks(pairs, layout.leaks)
    honest = split_report(emb.vectors, emb.rows["label"], leaks["split"], leaks["leak"])
    points = point_table(layout, model, "pca", 2, analysis=analysis)
    write_points(layout, points)
    kept = dataset_decisions(layout)
    near = neighbor_rows(points)
    thumbnails = ThumbnailCache(layout)
    write_explorer(points, root, layout.explorer, neighbors=near, thumbnails=thumbnails,
                   decisions=kept)  # fmt: skip
    return {"findings": findings.set_index("path"), "pairs": pairs, "honest": honest,
            "points": points}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("leak-review")
    truth = make_splits(tmp / "ds")
    layout = Layout("ds", tmp / "data", tmp / "reports")
    model = str(tiny_vit(tmp / "vit"))
    first = run(layout, tmp / "ds", model)
    return {"layout": layout, "source": tmp / "ds", "model": model, "truth": truth, **first}


def test_the_point_table_carries_the_split_and_the_queue_pairs_each_leak(world) -> None:
    points, truth = world["points"], world["truth"]
    assert set(points["split"]) == {"train", "test"} and points["leak_of"].dtype == "str"
    queue = ReviewQueue(points)
    leaks = [r for r in queue.rows if "leak" in queue.issues[r]]
    path = points["path"].tolist()
    assert {path[r]: [path[j] for j in queue.others[r]] for r in leaks} == {
        copy: [source] for copy, source in truth.items()
    }
    assert all(not queue.others[r] for r in queue.rows if r not in leaks)


@pytest.fixture
def dash_server(world) -> Iterator[str]:
    from werkzeug.serving import make_server

    app = create_app(world["layout"], model=world["model"], method="pca", dims=2)
    srv = make_server("127.0.0.1", 0, app.server, threaded=True)  # a free port
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_dash_colours_and_selects_by_split_and_pairs_a_leak(browser, world, dash_server) -> None:
    points, truth = world["points"], world["truth"]
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page.goto(dash_server)
    page.wait_for_selector("#colour-by")
    n_test = int((points["split"] == "test").sum())
    # what the map draws: each trace's name and point count
    traces = """() => { const g = document.querySelector('#map .js-plotly-plot');
        return g && g._fullData ? g._fullData.map(t => t.name + ':' + t.customdata.length).join()
            : ''; }"""
    page.locator("#colour-by label").filter(has_text="colour by split").click()
    page.wait_for_function(f"() => ({traces})() === 'test:{n_test},train:{len(points) - n_test}'")
    page.locator("#splits label").filter(has_text="train").click()  # show test only
    page.wait_for_function(f"() => ({traces})() === 'test:{n_test},train:0'")
    page.click("#select-split")  # the dropdown opens on the first split: test
    page.wait_for_function(
        "(n) => document.querySelector('#gallery-note').textContent.endsWith(n + ' selected')",
        arg=n_test,
    )
    # ... and rings them on the 2D map, as a search's results are
    page.wait_for_function(f"() => ({traces})().endsWith('selection ({n_test}):{n_test}')")
    # the review queue: a leak beside its train image, both the originals; t drops the source
    page.click("#review-open")
    page.locator("#review-issue label").filter(has_text="leak").first.click()
    page.wait_for_selector(".review-pair #review-image")
    copy = page.locator("#review-image").get_attribute("title")
    source = page.locator(".review-pair img.review-other").get_attribute("title")
    assert truth[copy] == source
    page.keyboard.press("t")
    page.wait_for_function(
        "() => document.querySelector('#counter').textContent.includes('1 dropped')"
    )
    with page.expect_download() as info:
        page.click("#download-decisions")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert text == f"path,label,tags\n{source},,drop\n"
    page.close()


def _review_box(page, selector: str) -> list[dict]:
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].map((f) => {
            const t = f.querySelector('.thumb'), r = t.getBoundingClientRect();
            return {index: Number(f.dataset.index), large: t.dataset.large, left: r.left,
                    top: r.top, width: r.width, path: f.querySelector('.path').textContent}; })""",
        selector,
    )


def test_page_reviews_a_leak_beside_its_train_image_and_the_next_run_applies_it(
    browser, world, tmp_path: Path
) -> None:
    layout, points, truth = world["layout"], world["points"], world["truth"]
    first = world["honest"]["test"]
    assert first["leaks"] == 4 and len(world["pairs"]) == 4
    n_test = int((points["split"] == "test").sum())
    p = base.Page(browser, layout.explorer)
    # colour by split: the legend lists the splits, a click hides one, "select by" picks one
    p.page.select_option("#colour", label="split")
    assert p.page.locator("#legend .entry").all_text_contents() == ["test", "train"]
    p.page.click("#legend .entry[data-name='train']")
    assert p.plotted() == n_test
    p.page.click("#legend .entry[data-name='train']")
    p.page.select_option("#where-field", label="split")
    p.page.select_option("#where-cat", label="test")
    p.page.click("#where-go")
    p.page.wait_for_function("(n) => document.body.dataset.selected === String(n)", arg=n_test)
    # the review queue, leaks only: each beside its train image, both large, side by side
    p.page.click("#review-open")
    p.page.select_option("#review-issue", value="leak")
    path, done = points["path"].tolist(), []
    for key in ("k", "t", "d"):
        shown = _review_box(p.page, "#review-picture .review-copy")
        copy, source = shown
        assert truth[copy["path"]] == source["path"] == path[source["index"]]
        assert copy["large"] == source["large"] == "192" and copy["width"] == source["width"] == 320
        assert source["left"] >= copy["left"] + 320 and source["top"] == copy["top"]
        assert p.page.locator("#review-drop_other").is_visible()
        done.append((copy["index"], key))
        p.page.keyboard.press(key)
    # reviewed: the images decided, and the one whose train copy t dropped (settled too)
    assert p.page.locator("#review-progress").text_content() == "3 of 4 reviewed"
    with p.page.expect_download() as info:
        p.page.click("#download-decisions")
    saved = tmp_path / "decisions.csv"
    info.value.save_as(saved)
    p.assert_safe()
    p.close()
    # the same keys through decisions.ReviewQueue write the same file
    queue, log = ReviewQueue(points), DecisionLog(labels=own_labels(points))
    actions = {"k": "keep", "t": "drop_other", "d": "drop"}
    for row, key in done:
        assert queue.decide(log, row, "leak", actions[key])
    assert saved.read_text(encoding="utf-8") == decisions_csv(log.table)
    assert queue.progress(log.table, "leak") == "3 of 4 reviewed"  # as the page counted
    kept, no_source, dropped = (path[row] for row, _ in done)
    assert pd.read_csv(saved, keep_default_na=False).set_index("path")["tags"].to_dict() == {
        kept: "keep:leak",
        truth[no_source]: "drop",
        dropped: "drop",
    }

    # the next run: one leak left, the kept one no longer flagged, the honest numbers follow
    second = run(layout, world["source"], world["model"], saved)
    found, honest = second["findings"], second["honest"]["test"]
    untouched = [p for p in truth if p not in {kept, no_source, dropped}]
    assert found.index[found["leak"]].tolist() == untouched
    assert "leak" not in found.loc[kept, "issues"] and not found.loc[no_source, "leak"]
    assert dropped not in found.index and truth[no_source] not in found.index
    assert honest["images"] == first["images"] - 1 and honest["leaks"] == 1
    assert honest["scored"] == first["scored"] - 1 and "knn_accuracy_without_leaks" in honest
    assert len(pd.read_csv(layout.leaks)) == 1


def test_a_near_duplicate_is_shown_with_its_whole_group_and_t_drops_the_others() -> None:
    points = pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png", "d.png"],
            "label": ["x", "x", "y", "y"],
            "issues": ["near_duplicate", "near_duplicate", "near_duplicate", "blurry"],
            "reason": ["", "", "", ""],
            "review_priority": [1.9, 1.8, 1.7, 1.5],
            "near_duplicate_group": [0, 0, 0, -1],
        }
    )
    queue = ReviewQueue(points)
    assert queue.others == {0: [1, 2], 1: [0, 2], 2: [0, 1], 3: []}
    assert queue.page_data()["others"] == [[1, 2], [0, 2], [0, 1], []]
    log = DecisionLog(labels=own_labels(points))
    assert queue.decide(log, 0, "", "drop_other")
    assert log.table["path"].tolist() == ["b.png", "c.png"] and set(log.table["tags"]) == {"drop"}
    with pytest.raises(ValueError, match="nothing shown beside this image to drop"):
        queue.decide(log, 3, "", "drop_other")


def test_a_leak_in_a_near_duplicate_group_shows_all_three_within_the_page_and_t_follows_the_filter(
    browser, world, tmp_path: Path
) -> None:
    """A test copy of a train image that has a near duplicate of its own in test: unfiltered
    the queue shows all three and the card goes below them (at 1,200 px it ran past the
    map's width); reviewing leaks, t drops only the train copy; near duplicates, only the
    group's other member; the page and decisions.ReviewQueue agree on each."""
    points, truth = world["points"].copy(), world["truth"]
    path = points["path"].tolist()
    copy = next(iter(truth))
    me, source = path.index(copy), path.index(truth[copy])
    twin = next(i for i, p in enumerate(path) if p.startswith("test/") and p not in truth)
    points["near_duplicate_group"] = -1
    points.loc[[me, twin], "near_duplicate_group"] = 0
    points.loc[me, "issues"] = points.loc[me, "issues"] + ";near_duplicate"
    points.loc[twin, "issues"] = "near_duplicate"
    points.loc[me, "review_priority"] = points["review_priority"].max() + 1
    queue = ReviewQueue(points)
    assert queue.beside(me) == [source, twin]
    assert queue.beside(me, "leak") == [source] and queue.beside(me, "near_duplicate") == [twin]
    page_file = tmp_path / "explorer.html"
    write_explorer(points, world["source"], page_file, neighbors=neighbor_rows(points),
                   thumbnails=ThumbnailCache(world["layout"]))  # fmt: skip
    p = base.Page(browser, page_file)
    p.page.click("#review-open")
    shown = _review_box(p.page, "#review-picture .review-copy")
    assert [s["index"] for s in shown] == [me, source, twin]
    assert shown[0]["top"] == shown[1]["top"] == shown[2]["top"]  # one row: the card below
    fits = p.page.evaluate(
        """() => { const b = document.getElementById('review-body'), r = b.getBoundingClientRect(),
            shown = [...b.querySelectorAll('button')].filter((x) => x.offsetParent);
            return {over: b.scrollWidth - b.clientWidth,
                    right: shown.every((x) => x.getBoundingClientRect().right <= r.right)}; }"""
    )
    assert fits == {"over": 0, "right": True}
    assert p.page.locator("#review-drop_other").text_content() == "Drop the 2 others (t)"
    for issue, expected in (("leak", [source]), ("near_duplicate", [twin])):
        p.page.select_option("#review-issue", value=issue)
        assert [s["index"] for s in _review_box(p.page, "#review-picture .review-copy")] == [
            me,
            *expected,
        ]
        assert p.page.locator("#review-drop_other").text_content() == "Drop the other copy (t)"
    p.page.select_option("#review-issue", value="leak")
    p.page.keyboard.press("t")
    with p.page.expect_download() as info:
        p.page.click("#download-decisions")
    saved = Path(info.value.path()).read_text(encoding="utf-8")
    log = DecisionLog(labels=own_labels(points))
    assert queue.decide(log, me, "leak", "drop_other")
    assert saved == decisions_csv(log.table) == f"path,label,tags\n{path[source]},,drop\n"
    p.assert_safe()
    p.close()
