"""The three editors agree exactly: ``explorer.html`` (real Chromium), the JupyterLab panel
(the page's own script; its Python side writes what the script hands it) and the Dash app (real
Chromium) make the same decisions through their review queues on
paths with a comma, a quote, an emoji and a full-width name, write byte-identical
``decisions.csv`` files, and ``embedscope run-all --decisions`` applies them. The page's
JavaScript and :class:`~embedscope.decisions.DecisionLog` also run one sequence of edits side by
side, refusals included, file compared after every step."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import test_explore as base
from helpers import make_classes
from PIL import Image

from embedscope.cli import main
from embedscope.decisions import (
    MESSAGES,
    DecisionLog,
    decisions_csv,
    read_decisions,
    suggestions,
)
from embedscope.embed import embed
from embedscope.explore import write_explorer
from embedscope.explore.dash import create_app
from embedscope.explore.live import LiveExplorer, widget_module
from embedscope.ingest import ingest, load_manifest
from embedscope.layout import Layout
from embedscope.points import load_points, neighbor_rows, point_table, write_points

browser = base.browser  # one Chromium for the module
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COMMA, QUOTE, EMOJI = "red/a, b.png", 'green/say "hi".png', "blue/😀 smile.png"
WIDE = "blue/ｆｕｌｌ.png"  # U+FF46: after every emoji in UTF-16 order, before them by code point
TWO = "red/red_2.png"
#: Findings, in findings.csv's columns: issues, reason, review priority (the suggestions are
#: analyse's, as in 03_reduce; the fixture checks the ones the steps rely on).
FLAGGED = {
    COMMA: ("label", "9 of 10 neighbours and the probe (0.93) say green", 1.95),
    QUOTE: ("label", "8 of 10 neighbours say blue", 1.9),
    EMOJI: ("dark", "mean brightness 0.04", 1.7),
    WIDE: ("near_duplicate", "near copy of blue/blue_0.png", 1.6),
    TWO: ("label;blurry", "the probe says green (0.41); edges soft", 1.5),
}
SUGGESTED = {COMMA: "green", QUOTE: "blue", WIDE: "blue", TWO: "red"}
#: The review, step by step: (action, typed text or issue filter, path shown after it,
#: message after it). Every editor takes exactly these steps through its own controls.
STEPS = [
    ("key", "a", QUOTE, ""),  # accept green for COMMA, on to the next
    ("key", "ArrowLeft", COMMA, ""),
    ("label", "red", COMMA, ""),  # its own label again: the relabel is taken back
    ("key", "k", QUOTE, ""),  # keep:label
    ("label", "(unlabelled)", QUOTE, MESSAGES["placeholder_label"]),
    ("tag", "x;y", QUOTE, MESSAGES["bad_tag"]),
    ("tag", "needs crop", QUOTE, ""),
    ("key", "a", EMOJI, ""),  # blue
    ("key", "d", WIDE, ""),
    ("label", "teal", WIDE, ""),
    ("key", "a", WIDE, MESSAGES["no_suggestion"]),  # its suggestion is its own label
    ("filter", "near_duplicate", WIDE, MESSAGES["no_suggestion"]),  # the image stays, so does
    # the message
    ("key", "k", WIDE, ""),  # keep:near_duplicate; the last of that filter
    ("filter", "", WIDE, ""),
    ("key", "ArrowRight", TWO, ""),
    ("key", "k", TWO, ""),  # unfiltered: keep every issue it has
]
EXPECTED = (
    "path,label,tags\n"
    "blue/ｆｕｌｌ.png,teal,keep:near_duplicate\n"
    "blue/😀 smile.png,,drop\n"
    '"green/say ""hi"".png",blue,needs crop\n'
    '"red/a, b.png",,keep:label\n'
    "red/red_2.png,,keep:label;keep:blurry\n"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, builtin_cache: Path) -> dict[str, Any]:
    """Three colour classes plus the four awkward names, embedded by the built-in model, with
    a findings.csv for the report and the point table file every editor reads."""
    tmp = tmp_path_factory.mktemp("agree")
    source = make_classes(tmp / "agree", per_class=4)
    rng = np.random.default_rng(3)
    for path, rgb in [(COMMA, (30, 200, 60)), (QUOTE, (40, 60, 230)), (EMOJI, (6, 6, 12))]:
        noise = rng.normal(0, 8, (48, 48, 3))
        Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype("uint8")).save(source / path)
    near = np.asarray(Image.open(source / "blue" / "blue_0.png")).astype(int)
    Image.fromarray(np.clip(near + 3, 0, 255).astype("uint8")).save(source / WIDE)
    layout = Layout("agree", tmp / "data", tmp / "reports")
    ingest(str(source), layout)
    embed(layout, "mobilenet_v2", progress=False)
    points = point_table(layout, "mobilenet_v2", "pca", 2, 0)  # analyse's suggestions
    table = points[["path", "label", "suggested_label", "suggested_share"]].assign(
        label_issue=False, issues="", reason="", review_priority=0.0, exact_duplicate_of=""
    )
    for path, (issues, reason, priority) in FLAGGED.items():
        at = table.index[table["path"] == path][0]
        table.loc[at, ["issues", "reason", "review_priority"]] = [issues, reason, priority]
        table.loc[at, "label_issue"] = "label" in issues
    layout.reports_dir.mkdir(parents=True, exist_ok=True)
    table.sort_values("review_priority", ascending=False, kind="stable").to_csv(
        layout.findings, index=False
    )
    write_points(layout, point_table(layout, "mobilenet_v2", "pca", 2, 0))  # as 04_explore
    points = load_points(layout, "mobilenet_v2", "pca", 2, 0)  # what every editor reads
    by_path = points.set_index("path")["suggested_label"]
    assert {p: by_path[p] for p in SUGGESTED} == SUGGESTED, "the colours decide the suggestions"
    _, root = load_manifest(layout)
    return {"layout": layout, "source": source, "root": root, "points": points,
            "neighbors": neighbor_rows(points), "tmp": tmp}  # fmt: skip


@pytest.fixture(scope="module")
def dash_server(world) -> Iterator[str]:
    from werkzeug.serving import make_server

    app = create_app(world["layout"], method="pca", dims=2)
    srv = make_server("127.0.0.1", 0, app.server, threaded=True)  # a free port
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def _page_review(browser, world, out: Path) -> tuple[str, list[tuple]]:
    """explorer.html: the queue opened with its button, keys pressed, text typed."""
    pts = world["points"]
    html = write_explorer(pts, world["root"], out / "explorer.html", neighbors=world["neighbors"])
    p = base.Page(browser, html)
    p.page.evaluate("() => localStorage.clear()")
    p.page.click("#review-open")
    assert p.page.locator("#review-progress").text_content() == "0 of 5 reviewed"
    assert p.page.locator("#review-issue option").all_text_contents() == [
        "all issues (5)",
        "label (3)",
        "dark (1)",
        "near_duplicate (1)",
        "blurry (1)",
    ]  # fmt: skip  (most flagged first; ties in queue order)
    assert p.page.locator("#review .reason").text_content() == FLAGGED[COMMA][1]
    assert p.page.locator("#review-neighbors .thumb").count() >= 6
    assert p.page.locator("#review-picture .thumb").evaluate("t => t.style.width") == "320px"
    # a flagged image shows its 192-px cell, its sheet loaded (not the 64-px one enlarged)
    assert p.page.locator("#review-picture .thumb").get_attribute("data-large") == "192"
    p.page.wait_for_function(
        "() => getComputedStyle(document.querySelector('#review-picture .thumb'))"
        ".backgroundImage.startsWith('url(')"
    )
    seen = []
    for action, value, shown, message in STEPS:
        if action == "key":
            p.page.keyboard.press(value)
        elif action == "filter":
            p.page.select_option("#review-issue", value=value)
        else:
            p.page.fill(f"#review-{action}", value)
            p.page.click("#review-relabel" if action == "label" else "#review-add-tag")
        at = int(p.page.locator("#review").get_attribute("data-index"))
        got = (pts["path"][at], p.page.locator("#review-message").text_content())
        assert got == (shown, message), (action, value)
        seen.append((*got, p.page.locator("#review-progress").text_content()))
    assert seen[-1][2] == "5 of 5 reviewed"
    # the page remembers where the review stood
    p.page.select_option("#review-issue", value="label")
    p.page.keyboard.press("ArrowLeft")
    p.page.reload()
    p.page.wait_for_selector("body[data-ready='1']")
    p.page.click("#review-open")
    assert p.page.locator("#review-issue").input_value() == "label"
    assert pts["path"][int(p.page.locator("#review").get_attribute("data-index"))] == QUOTE
    assert p.page.locator("#review-position").text_content() == "image 2 of 3"
    with p.page.expect_download() as info:
        p.page.click("#download-decisions")
    text = Path(info.value.path()).read_bytes().decode("utf-8")
    p.assert_safe()
    p.close()
    return text, seen


def _live_review(world, out: Path, page_text: str) -> str:
    """The JupyterLab panel: its editor is the page's own explorer.js (not a copy), which hands
    Python the same ``decisionsCsv()`` text after each change; Python writes it into the
    decisions file (merged, atomically). ``test_jupyterlab`` drives the panel's keys."""
    here = files("embedscope.explore")
    module = widget_module()
    for script in ("explorer.js", "scatter.js"):
        assert here.joinpath(script).read_text(encoding="utf-8") in module
    live = LiveExplorer(
        world["points"], world["root"], neighbors=world["neighbors"],
        decisions_file=out / "decisions.csv",
    )  # fmt: skip
    live.decisions_csv = page_text  # what the panel sets after the page's last step
    assert live.saved.startswith("Written to"), live.saved
    return (out / "decisions.csv").read_bytes().decode("utf-8")


def _dash_review(browser, base_url: str, seen_in_page: list[tuple]) -> tuple[str, list[tuple]]:
    """The Dash app: the queue's button, then keys on the page, text in its boxes."""
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page.goto(base_url)
    page.wait_for_selector("#review-open")
    page.evaluate("() => localStorage.clear()")
    page.reload()
    page.click("#review-open")
    page.wait_for_selector("#review-image")

    def state() -> tuple[str, str, str]:
        path = page.locator("#review-image").get_attribute("title")
        return path, *(page.locator(f"#review-{k}").inner_text() for k in ("message", "progress"))

    assert page.locator("#review-progress").inner_text() == "0 of 5 reviewed"
    seen = []
    # every step changes the image shown, the message or the count: waiting for the page's
    # state after it waits for the server's answer (its callbacks are asynchronous)
    for (action, value, _, _), expected in zip(STEPS, seen_in_page, strict=True):
        if action == "key":
            page.keyboard.press(value)
        elif action == "filter":
            page.locator("#review-issue label").filter(has_text=value or "all issues").click()
        else:
            page.fill(f"#review-{action}", value)
            page.click("#review-relabel" if action == "label" else "#review-add-tag")
        try:
            page.wait_for_function(
                """([path, message, progress]) => {
                    const text = (id) => document.getElementById(id)?.innerText;
                    return document.querySelector('#review-image')?.title === path
                        && text('review-message') === message
                        && text('review-progress') === progress; }""",
                arg=list(expected),
                timeout=15_000,
            )
        finally:
            seen.append(state())
    with page.expect_download() as info:
        page.click("#download-decisions")
    text = Path(info.value.path()).read_bytes().decode("utf-8")
    page.close()
    return text, seen


def test_three_editors_write_the_same_file_and_the_next_run_applies_it(
    browser, world, dash_server, tmp_path: Path
) -> None:
    texts = {}
    for name in ("page", "live"):
        (tmp_path / name).mkdir()
    texts["page"], page_seen = _page_review(browser, world, tmp_path / "page")
    texts["live"] = _live_review(world, tmp_path / "live", texts["page"])
    texts["dash"], dash_seen = _dash_review(browser, dash_server, page_seen)
    assert dash_seen == page_seen
    assert texts["page"] == EXPECTED, "code point order, RFC 4180 quoting, \\n line ends"
    assert texts["live"] == texts["page"] and texts["dash"] == texts["page"]

    file = tmp_path / "page" / "decisions.csv"
    file.write_text(texts["page"], encoding="utf-8")
    layout = world["layout"]
    args = ["--source", str(world["source"]), "--name", layout.name]
    args += ["--notebooks-dir", str(NOTEBOOKS), "--data-root", str(layout.data_root)]
    args += ["--reports-root", str(layout.reports_root), "--decisions", str(file)]
    assert main(["run-all", *args]) == 0
    metrics = json.loads(layout.metrics.read_text())["decisions"]
    assert (metrics["relabelled"], metrics["dropped"], metrics["tagged"]) == (2, 1, 4)
    assert metrics["unknown"] == 0
    manifest = pd.read_parquet(layout.manifest).set_index("path")
    assert manifest.loc[QUOTE, "label"] == "blue" and manifest.loc[WIDE, "label"] == "teal"
    assert manifest.loc[EMOJI, "reason"] == "dropped by decision"
    assert manifest.loc[COMMA, ["label", "tags"]].tolist() == ["red", "keep:label"]
    assert manifest.loc[TWO, "tags"] == "keep:label;keep:blurry"
    assert manifest.loc[WIDE, "tags"] == "keep:near_duplicate"


#: Edits through the page's functions and DecisionLog side by side: (op, paths, value).
SEQUENCE = [
    ("label", [COMMA, QUOTE], " purple "),
    ("accept", [COMMA, QUOTE, TWO], None),  # TWO's suggestion is its own label: skipped
    ("label", [COMMA], "red"),  # back to its own label: no decision left for it
    ("tag", [EMOJI, WIDE], "x;y"),
    ("tag", [EMOJI, WIDE], "\x1flater\u3000"),  # stripped as Python strips (JS trim keeps \x1f)
    ("label", [WIDE], "(unlabelled)"),
    ("label", [WIDE], " "),
    ("label", [], "red"),
    ("tag", [], "late"),
    ("drop", [], None),
    ("accept", [TWO, WIDE], None),
    ("drop", [EMOJI], None),
    ("keep", [TWO], ["label", "blurry", "label"]),
    ("undo", [], None),
    ("keep", [TWO], ["blurry"]),
    ("label", [EMOJI], "blue"),  # EMOJI is blue: its tags stay, no relabel
    ("label", [QUOTE], "green"),  # its own label: the accepted blue is taken back
    ("undo", [], None),
]


def test_page_and_decision_log_agree_edit_by_edit(browser, world, tmp_path: Path) -> None:
    pts = world["points"]
    row = {p: i for i, p in enumerate(pts["path"])}
    out = write_explorer(pts, world["root"], tmp_path / "e.html")
    p = base.Page(browser, out)
    p.page.evaluate("() => localStorage.clear()")
    log = DecisionLog(labels=dict(zip(pts["path"], pts["label"], strict=True)))
    for op, paths, value in SEQUENCE:
        said = p.page.evaluate(
            "(op) => window.embedscope.edit(op)",
            {"op": op, "rows": [row[q] for q in paths], "value": value},
        )
        try:
            {
                "label": lambda: log.relabel(paths, value),  # noqa: B023
                "tag": lambda: log.tag(paths, value),  # noqa: B023
                "drop": lambda: log.drop(paths),  # noqa: B023
                "accept": lambda: log.relabel_each(  # noqa: B023
                    suggestions(pts, [row[q] for q in paths])  # noqa: B023
                ),
                "keep": lambda: log.keep(paths[0], value),  # noqa: B023
                "undo": log.undo,
            }[op]()
            expected = ""
        except ValueError as exc:
            expected = str(exc)
        assert said == expected, (op, paths, value)
        page_csv = p.page.evaluate("() => window.embedscope.decisionsCsv()")
        assert page_csv == decisions_csv(log.table), (op, paths, value)
    assert log.table.values.tolist() == [
        [WIDE, "", "later"], [EMOJI, "", "later;drop"], [QUOTE, "blue", ""],
        [TWO, "", "keep:blurry"],
    ]  # fmt: skip
    file = tmp_path / "d.csv"
    file.write_text(p.page.evaluate("() => window.embedscope.decisionsCsv()"), encoding="utf-8")
    pd.testing.assert_frame_equal(read_decisions(file), log.table)
    p.assert_safe()
    p.close()
