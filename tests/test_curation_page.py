"""Curation in explorer.html, in a real headless Chromium opened from disk: box and lasso drawn
with the real mouse select what the camera shows (the expected sets are computed here, from the
camera and axes the page reports through ``window.embedscope.view()``, not from the page's own
projection), rules select by class, score, search and neighbours; the gallery, decisions with
undo and storage, and the two downloads."""

from __future__ import annotations

import csv
import io
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import test_explore as base
from helpers import make_classes, png_bytes
from matplotlib.path import Path as Polygon

from embedscope.decisions import MESSAGES
from embedscope.explore import thumbnail_cell, write_explorer
from embedscope.ingest import SAMPLE_DIR

browser = base.browser  # one Chromium for this module too
EVIL = base.EVIL
NEW_LABEL = 'odd, "quoted" name'  # a typed label that needs CSV quoting
TWO_LINES = "red/two\nlines.png"  # a path with a line break (no file: "image unreadable")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Three classes of eight images and one hostile file name."""
    root = make_classes(tmp_path_factory.mktemp("curate") / "imgs", per_class=8)
    (root / "<b>bold").mkdir()
    (root / EVIL).write_bytes(png_bytes("RGB", (20, 20), (200, 0, 200)))
    return root, sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _points(rels: list[str], coords: np.ndarray, suggest: bool = True) -> pd.DataFrame:
    df = pd.DataFrame(coords, columns=list("xyz")[: coords.shape[1]])
    df["path"] = rels
    df["label"] = [r.split("/")[0] for r in rels]
    df["mislabel_score"] = np.round(np.linspace(0, 1, len(rels)), 3)
    df["cluster"] = np.arange(len(rels)) % 4
    if suggest:
        df["suggested_label"] = ["blue" if i % 2 else "green" for i in range(len(rels))]
        df["suggested_share"] = np.round(np.linspace(0.5, 1, len(rels)), 3)
    return df


def _grid3d(n: int) -> np.ndarray:
    """Points on a 3D lattice: far enough apart on screen for unambiguous box edges."""
    side = math.ceil(n ** (1 / 3))
    return np.array([(i % side, (i // side) % side, i // side**2) for i in range(n)], float)


def project3d(page: Any) -> np.ndarray:
    """Screen pixels (relative to #plot) of every point, from the camera the page reports
    (yaw about z, pitch above the xy plane, distance from the target, vertical field of view)
    and the plot's size: a perspective camera at target + distance x (cos p cos y, cos p sin y,
    sin p) looking at the target, z up."""
    s = page.evaluate("() => ({v: window.embedscope.view(), d: window.embedscope.data})")
    v, d = s["v"], s["d"]
    assert v["kind"] == "3d"
    yaw, pitch, target = v["yaw"], v["pitch"], np.array(v["target"], float)
    eye = target + v["distance"] * np.array(
        [math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)]
    )
    f = (target - eye) / np.linalg.norm(target - eye)
    side = np.cross(f, [0, 0, 1]) / np.linalg.norm(np.cross(f, [0, 0, 1]))
    u = np.cross(side, f)
    rel = np.array([d["x"], d["y"], d["z"]], float).T - eye
    depth = rel @ f
    focal = 1 / math.tan(v["fov"] / 2) * v["height"] / 2
    sx = v["width"] / 2 + focal * (rel @ side) / depth
    sy = v["height"] / 2 - focal * (rel @ u) / depth
    return np.c_[sx, sy]


def project2d(page: Any, data: np.ndarray | None = None) -> np.ndarray:
    """Screen pixels (relative to #plot) of ``data`` (default: every point) from the axes'
    ranges the page reports and the plot's size."""
    s = page.evaluate("() => ({v: window.embedscope.view(), d: window.embedscope.data})")
    v = s["v"]
    data = np.array([s["d"]["x"], s["d"]["y"]], float).T if data is None else data
    sx = (data[:, 0] - v["x"][0]) / np.diff(v["x"]) * v["width"]
    sy = (v["y"][1] - data[:, 1]) / np.diff(v["y"]) * v["height"]
    return np.c_[sx, sy]


def set_view(page: Any, view: dict) -> None:
    """Move the camera (or the axes) and wait for the frame drawn with it."""
    page.evaluate("(v) => window.embedscope.setView(v)", view)


def orbit(eye: tuple[float, float, float], target: list[float]) -> dict:
    """The page's camera looking from ``target + eye`` (data units) at ``target``."""
    x, y, z = eye
    return {"yaw": math.atan2(y, x), "pitch": math.atan2(z, math.hypot(x, y)),
            "distance": math.hypot(x, y, z), "target": target}  # fmt: skip


def clear_box(xy: np.ndarray, centre: np.ndarray, half: float, margin: float = 4.0) -> list:
    """A box around ``centre`` whose edges pass no nearer than ``margin`` px to any point (so
    the expected set is unambiguous), grown from ``half`` px."""
    for grow in np.arange(0, 80, 1.0):
        x0, y0 = centre - half - grow
        x1, y1 = centre + half + grow
        near = lambda v, e: np.abs(v - e) < margin  # noqa: E731
        if not any(
            (near(xy[:, 0], e) & (xy[:, 1] > y0 - margin) & (xy[:, 1] < y1 + margin)).any()
            for e in (x0, x1)
        ) and not any(
            (near(xy[:, 1], e) & (xy[:, 0] > x0 - margin) & (xy[:, 0] < x1 + margin)).any()
            for e in (y0, y1)
        ):
            return [x0, y0, x1, y1]
    raise AssertionError("no clear box: choose other geometry")


def in_box(xy: np.ndarray, box: list) -> set[int]:
    x0, y0, x1, y1 = box
    inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
    return set(np.flatnonzero(inside).tolist())


def drag(p: base.Page, corners: list[tuple[float, float]], keys: tuple[str, ...] = ()) -> set:
    """A real mouse drag through ``corners`` (plot pixels), holding ``keys``; the selection."""
    r = p.page.locator("#plot").bounding_box()
    before = p.page.evaluate("() => window.embedscope.timing.selections")
    for k in keys:
        p.page.keyboard.down(k)
    p.page.mouse.move(r["x"] + corners[0][0], r["y"] + corners[0][1])
    p.page.mouse.down()
    for x, y in corners[1:]:
        p.page.mouse.move(r["x"] + x, r["y"] + y, steps=12)
    p.page.mouse.up()
    for k in keys:
        p.page.keyboard.up(k)
    p.page.wait_for_function(
        "(n) => window.embedscope.timing.selections > n", arg=before, timeout=10_000
    )
    settle(p)
    return set(p.page.evaluate("() => window.embedscope.selected()"))


def settle(p: base.Page) -> None:
    """Wait until the map has its final size (the gallery opens below it on a selection)."""
    p.page.wait_for_function(
        """() => { const v = window.embedscope.view();
            const r = document.getElementById('plot').getBoundingClientRect();
            return Math.abs(v.width - r.width) < 1 && Math.abs(v.height - r.height) < 1; }"""
    )
    p.page.wait_for_timeout(100)


def whole_pixel_box(xy: np.ndarray, plot: dict, centre: np.ndarray, half: int) -> list:
    """A box near ``centre`` (plot pixels) with its corners on whole page pixels, as a mouse
    reports them, and no point within 0.002 px of its edges: unambiguous among dense points."""
    for shift in sorted(itertools.product(range(-15, 16), repeat=2), key=np.hypot.reduce):
        x0, y0 = np.round(centre + [plot["x"], plot["y"]] - half) + shift - [plot["x"], plot["y"]]
        x1, y1 = x0 + 2 * half, y0 + 2 * half
        near = lambda v, e: np.abs(v - e) < 0.002  # noqa: E731
        across = (
            (xy[:, 1] > y0 - 1) & (xy[:, 1] < y1 + 1),
            (xy[:, 0] > x0 - 1) & (xy[:, 0] < x1 + 1),
        )
        if (
            not ((near(xy[:, 0], x0) | near(xy[:, 0], x1)) & across[0]).any()
            and not ((near(xy[:, 1], y0) | near(xy[:, 1], y1)) & across[1]).any()
        ):
            return [x0, y0, x1, y1]
    raise AssertionError("no unambiguous box: choose other geometry")


def _gap(xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance in px from the points to the segment a-b."""
    t = np.clip((xy - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    return float(np.linalg.norm(xy - (a + t[:, None] * (b - a)), axis=1).min())


def box_corners(box: list) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y1)]


def test_box_drag_in_3d_selects_what_the_camera_shows(browser, library, tmp_path) -> None:
    root, rels = library
    pts = _points(rels, _grid3d(len(rels)))
    p = base.Page(browser, write_explorer(pts, root, tmp_path / "b3.html"))
    # an oblique camera, near enough for the perspective to be clearly at work
    set_view(p.page, orbit((5.1, -3.3, 2.4), [1, 1, 1]))
    xy = project3d(p.page)
    ours = np.array(p.page.evaluate("() => Array.from(window.embedscope.screenPositions())"))
    assert np.abs(ours.reshape(-1, 2) - xy).max() < 0.5, "page and test project alike"

    p.page.click("#tool [data-tool='box']")
    centre = xy.mean(axis=0)
    first = clear_box(xy, centre - [40, 0], 45)
    want = in_box(xy, first)
    assert 2 <= len(want) < len(rels), "the box takes some points, not all"
    assert drag(p, box_corners(first)) == want
    assert p.page.locator("body").get_attribute("data-selected") == str(len(want))

    # the gallery opened below the map, which shrank: the points moved on screen
    xy = project3d(p.page)
    second = clear_box(xy, xy.mean(axis=0) + [60, 30], 35)  # Shift adds
    added = in_box(xy, second) - want
    assert added and drag(p, box_corners(second), ("Shift",)) == want | added
    third = clear_box(xy, xy.mean(axis=0) - [40, 0], 45)  # Alt removes
    assert want & in_box(xy, third)
    assert drag(p, box_corners(third), ("Alt",)) == (want | added) - in_box(xy, third)

    # the camera moves: the same screen box now holds other points, projected anew
    set_view(p.page, orbit((-4.5, 4.2, 3), [1, 1, 1]))
    xy = project3d(p.page)
    last = clear_box(xy, xy.mean(axis=0), 50)
    assert drag(p, box_corners(last)) == in_box(xy, last)
    p.assert_safe()
    p.close()


def test_lasso_in_2d_and_every_rule(browser, library, tmp_path) -> None:
    root, rels = library
    n = len(rels)
    grid = np.array([(i % 5, i // 5) for i in range(n)], float)
    pts = _points(rels, grid)
    nbrs = np.array([[(i + k) % n for k in range(4)] for i in range(n)])
    p = base.Page(browser, write_explorer(pts, root, tmp_path / "l2.html", neighbors=nbrs))
    xy = project2d(p.page)
    ours = np.array(p.page.evaluate("() => Array.from(window.embedscope.screenPositions())"))
    assert np.abs(ours.reshape(-1, 2) - xy).max() < 0.5

    # a triangle lasso (drawn in data units) whose edges pass 0.15 grid steps from any point
    tri = project2d(p.page, np.array([[-0.6, -0.15], [4.6, 2.7], [3.35, 4.15]]))
    size = p.page.locator("#plot").bounding_box()
    assert (tri > 0).all() and (tri < [size["width"], size["height"]]).all(), "on the map"
    assert min(_gap(xy, a, b) for a, b in zip(tri, np.roll(tri, -1, axis=0), strict=True)) > 4
    want = set(np.flatnonzero(Polygon(tri).contains_points(xy)).tolist())
    assert 3 <= len(want) < n
    p.page.click("#tool [data-tool='lasso']")
    assert drag(p, [tuple(v) for v in [*tri, tri[0]]]) == want
    # a class hidden in the legend is not drawn, so a lasso does not take it
    p.page.evaluate("() => window.embedscope.setClassShown('blue', false)")
    xy = project2d(p.page)
    tri = project2d(p.page, np.array([[-0.6, -0.15], [4.6, 2.7], [3.35, 4.15]]))
    blue = {i for i, r in enumerate(rels) if r.startswith("blue/")}
    want = set(np.flatnonzero(Polygon(tri).contains_points(xy)).tolist())
    assert want & blue and drag(p, [tuple(v) for v in [*tri, tri[0]]]) == want - blue
    p.page.evaluate("() => window.embedscope.setClassShown('blue', true)")

    def rule(field: str, value: str, op: str | None = None, modifiers: list[str] | None = None):
        p.page.select_option("#where-field", label=field)
        if op is None:
            p.page.select_option("#where-cat", label=value)
        else:
            p.page.select_option("#where-op", value=op)
            p.page.fill("#where-num", value)
        before = p.page.evaluate("() => window.embedscope.timing.selections")
        p.page.click("#where-go", modifiers=modifiers or [])
        p.page.wait_for_function("(n) => window.embedscope.timing.selections > n", arg=before)
        return set(p.page.evaluate("() => window.embedscope.selected()"))

    red = {i for i, r in enumerate(rels) if r.startswith("red/")}
    high = set(np.flatnonzero(pts["mislabel_score"] >= 0.6).tolist())
    assert rule("label", "red") == red
    assert rule("mislabel_score", "0.6", ">=") == high
    assert rule("label", "red", modifiers=["Shift"]) == high | red
    assert rule("label", "red", modifiers=["Alt"]) == high - red
    assert rule("cluster", "2") == set(range(2, n, 4))
    assert rule("suggested share", "0.75", "<=") == set(
        np.flatnonzero(pts["suggested_share"] <= 0.75).tolist()
    )
    options = p.page.locator("#where-field option").all_text_contents()
    assert "suggested_label" not in options and "suggested label" in options
    # images of one class that look like another (the confused pairs of 03_reduce), most first
    look = pts[pts["label"] != pts["suggested_label"]].groupby(["label", "suggested_label"]).size()
    (a, b), count = look.sort_values(ascending=False, kind="stable").index[0], look.max()
    want = set(np.flatnonzero((pts["label"] == a) & (pts["suggested_label"] == b)).tolist())
    assert rule("class that looks like another", f"{a} that look like {b} ({count})") == want

    p.search("GREEN/", 8)
    p.page.click("#select-search")
    p.page.wait_for_function("() => document.body.dataset.selected === '8'")
    assert set(p.page.evaluate("() => window.embedscope.selected()")) == {
        i for i, r in enumerate(rels) if r.startswith("green/")
    }
    p.search("", n)

    p.page.evaluate("() => window.embedscope.pin(5)")
    p.page.click("#detail button:has-text('Select neighbours')")
    p.page.wait_for_function("() => document.body.dataset.selected === '4'")
    assert set(p.page.evaluate("() => window.embedscope.selected()")) == {5, 6, 7, 8}
    p.page.click("#detail button:has-text('Select its cluster')")
    p.page.wait_for_function(
        "(n) => document.body.dataset.selected === String(n)", arg=len(range(1, n, 4))
    )
    assert set(p.page.evaluate("() => window.embedscope.selected()")) == set(range(1, n, 4))

    # the selection is highlighted over the dimmed map: a selected point's pixel is its
    # class colour, a point outside it is washed towards white
    pixels, classes = p.page.evaluate(
        """() => { const v = document.querySelector('#plot canvas'), c = v.getContext('2d'),
            p = window.embedscope.screenPositions([1, 2]), d = window.embedscope.data;
            const at = (k) => c.getImageData(Math.round(p[2*k] * devicePixelRatio),
                Math.round(p[2*k+1] * devicePixelRatio), 1, 1);
            return [[0, 1].map(k => Array.from(at(k).data)),
                    [1, 2].map(i => d.colours[d.label[i]])]; }"""
    )
    rgb = [[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in classes]
    assert pixels[0] == [*rgb[0], 255], "selected: its class colour"
    washed = pixels[1][:3]
    assert pixels[1][3] == 255 and washed not in (rgb[1], [255] * 3), "not selected: washed"
    assert all(c <= w for c, w in zip(rgb[1], washed, strict=True)), "towards white"
    p.assert_safe()
    p.close()


def _decided(p: base.Page) -> dict[str, int]:
    return p.page.evaluate(
        "() => Object.fromEntries(['relabelled', 'dropped', 'tagged'].map(k => "
        "[k, Number(document.getElementById('decided').dataset[k])]))"
    )


def _download(p: base.Page, button: str, folder: Path | None = None) -> list[list[str]]:
    """Click ``button``: the downloaded file's name and CSV rows (the file kept in ``folder``)."""
    with p.page.expect_download() as info:
        p.page.click(button)
    if folder is not None:
        info.value.save_as(folder / info.value.suggested_filename)
    text = Path(info.value.path()).read_text(encoding="utf-8")
    return [info.value.suggested_filename, *csv.reader(io.StringIO(text, newline=""))]


def test_gallery_decisions_storage_and_downloads(browser, library, tmp_path) -> None:
    root, rels = library
    pts = _points(rels, np.random.default_rng(7).normal(size=(len(rels), 3)))
    pts.loc[len(rels) - 1, "path"] = TWO_LINES
    paths = pts["path"].tolist()
    out = write_explorer(pts, root, tmp_path / "g.html", title="curate <me>")
    p = base.Page(browser, out)
    p.page.evaluate("() => localStorage.clear()")
    p.page.evaluate(
        "(n) => window.embedscope.choose([...Array(n).keys()], 'replace', 0)", len(rels)
    )
    p.page.wait_for_selector("#grid .tile")
    tiles = p.page.locator("#grid .tile")
    assert tiles.count() == len(rels) and p.page.locator("#gallery-count").text_content() == (
        f"{len(rels)} images"
    )

    # every tile shows its label, suggestion and path as text; the hostile name stays text
    evil = p.page.locator(f"#grid .tile[data-index='{rels.index(EVIL)}']")
    assert evil.locator(".path").text_content() == EVIL
    assert evil.locator(".label").text_content() == "<b>bold"
    assert p.page.locator("#gallery b, #gallery img").count() == 0
    assert tiles.nth(0).locator(".suggested").text_content() == "suggested: green · 50%"

    # sort by a score, descending
    p.page.select_option("#sort", label="mislabel_score")
    p.page.click("#sort-dir")
    shown = [int(i) for i in tiles.evaluate_all("ts => ts.map(t => t.dataset.index)")]
    assert shown == list(np.argsort(-pts["mislabel_score"].to_numpy(), kind="stable"))

    # decide: a new label typed for the selection, then one point relabelled, two dropped,
    # one tagged, each through its tile (a click focuses its point) and the pinned panel
    order = [int(i) for i in tiles.evaluate_all("ts => ts.map(t => t.dataset.index)")]
    a, b, c, d = order[:4]
    p.page.fill("#gallery-decide .new-label", NEW_LABEL)
    p.page.click("#gallery-decide button:has-text('Set label')")
    assert _decided(p)["relabelled"] == len(rels)
    p.page.click("#undo")
    assert _decided(p) == {"relabelled": 0, "dropped": 0, "tagged": 0}

    def on_tile(i: int, action: str, text: str | None = None) -> None:
        p.page.locator(f"#grid .tile[data-index='{i}']").click()
        p.page.wait_for_function(
            "(i) => document.getElementById('detail').dataset.index == i", arg=i
        )
        if text is not None:
            p.page.fill("#detail .new-" + ("label" if action == "Set label" else "tag"), text)
        p.page.click(f"#detail button:has-text('{action}')")

    on_tile(a, "Set label", NEW_LABEL)
    on_tile(b, "Accept suggestion")
    on_tile(c, "Drop")
    on_tile(d, "Drop")
    on_tile(d, "Add tag", "blurry; check later")  # one tag at a time: refused, said why
    assert p.page.locator("#message").text_content() == MESSAGES["bad_tag"]
    assert p.page.locator("#detail .new-tag").input_value() == "blurry; check later"
    on_tile(d, "Add tag", "blurry")
    on_tile(d, "Add tag", " check later ")
    assert p.page.locator("#message").text_content() == ""
    assert _decided(p) == {"relabelled": 2, "dropped": 2, "tagged": 1}
    assert p.page.locator(f"#grid .tile[data-index='{a}'] .label").text_content() == NEW_LABEL
    assert p.page.locator(f"#grid .tile[data-index='{c}'].dropped").count() == 1
    legend = p.page.locator(".legendtext").all_text_contents()
    assert NEW_LABEL in legend, "the new label has a legend entry"
    assert {"relabelled · 2", "dropped · 2", "tagged · 1"} <= set(legend)

    # the larger view: the atlas cell scaled up, and the page says that is what it is
    p.page.click("#detail button:has-text('Enlarge')")
    big = p.page.locator("#lightbox:not([hidden])")
    assert big.locator(".thumb").evaluate("t => t.style.width") == "384px"
    assert "thumbnail stored in this page" in big.text_content()
    assert big.locator(".path").text_content() == paths[d]
    big.click()
    assert p.page.locator("#lightbox").is_hidden()

    suggested = pts["suggested_label"][b]
    want = sorted(
        [
            [paths[a], NEW_LABEL, ""],
            [paths[b], suggested if suggested != pts["label"][b] else "", ""],
            [paths[c], "", "drop"],
            [paths[d], "", "drop;blurry;check later"],
        ]
    )
    want = [r for r in want if r[1] or r[2]]
    name, head, *rows = _download(p, "#download-decisions")
    assert name == "decisions.csv" and head == ["path", "label", "tags"] and rows == want
    assert a == len(rels) - 1 and [TWO_LINES, NEW_LABEL, ""] in rows, "quoted, line break kept"
    frame = pd.read_csv(io.StringIO(p.page.evaluate("() => window.embedscope.decisionsCsv()")))
    assert list(frame.columns) == ["path", "label", "tags"] and len(frame) == len(want)

    name, head, *rows = _download(p, "#download-selection")
    assert name == "selection.csv" and len(rows) == len(rels)
    assert head == ["path", "label", "x", "y", "z", "mislabel_score", "cluster"] + [
        "suggested_label", "suggested_share", "new_label", "tags",
    ]  # fmt: skip
    assert rows[rels.index(EVIL)][0] == EVIL

    # the same report in the same browser remembers; "clear" forgets (and undo restores)
    reload(p)
    assert _decided(p) == {"relabelled": 2, "dropped": 2, "tagged": 1}
    assert "Saved in this browser" in p.page.locator("#storage").text_content()
    p.page.click("#clear-decisions")
    assert _decided(p) == {"relabelled": 0, "dropped": 0, "tagged": 0}
    assert p.page.locator("#download-decisions").is_disabled()
    p.page.click("#undo")
    assert _decided(p)["dropped"] == 2
    p.page.click("#clear-decisions")
    reload(p)
    assert _decided(p) == {"relabelled": 0, "dropped": 0, "tagged": 0}

    # another report (other labels) never sees these decisions
    other = write_explorer(
        pts.assign(label="blue"), root, tmp_path / "g2.html", title="curate <me>"
    )
    keys = [_key(out), _key(other)]
    assert keys[0] != keys[1] and keys[0].startswith("curate <me> · ")
    p.assert_safe()
    p.close()


def reload(p: base.Page) -> None:
    p.page.reload()
    p.page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def _key(page: Path) -> str:
    return base._data(page.read_text(encoding="utf-8"))["key"]


def test_page_without_suggestions_has_no_suggestion_controls(browser, library, tmp_path) -> None:
    root, rels = library
    pts = _points(rels, np.zeros((len(rels), 2)) + np.arange(len(rels))[:, None], suggest=False)
    out = write_explorer(pts, root, tmp_path / "n.html")
    assert base._data(out.read_text(encoding="utf-8"))["suggested"] is None
    p = base.Page(browser, out)
    p.page.evaluate("() => window.embedscope.choose([0, 1], 'replace', 0)")
    p.page.wait_for_selector("#grid .tile")
    assert p.page.locator("button:has-text('Accept suggestion'), .suggested").count() == 0
    p.page.click("#review-open")  # no findings on these points: the queue says so
    assert p.page.locator("#review-empty").text_content() == MESSAGES["no_findings"]
    p.page.keyboard.press("d")
    assert p.page.locator("#review-message").text_content() == MESSAGES["no_findings"]
    p.assert_safe()
    p.close()

    # suggestions that all agree with the labels: none to accept (an empty list on the page)
    agree = pts.assign(suggested_label=pts["label"], suggested_share=1.0)
    p = base.Page(browser, write_explorer(agree, root, tmp_path / "agree.html"))
    assert (
        p.page.evaluate("() => window.embedscope.edit({op: 'accept', rows: [0, 1]})")
        == (MESSAGES["no_suggestion"])
    )
    p.assert_safe()
    p.close()


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory: pytest.TempPathFactory, builtin_cache: Path) -> Any:
    """The built-in sample through the real stages (ingest, MobileNetV2, PCA 3D, analyse) to
    its explorer.html, as 04_explore writes it; the layout comes along."""
    from embedscope.embed import embed
    from embedscope.ingest import ingest, load_manifest
    from embedscope.layout import Layout
    from embedscope.points import neighbor_rows, point_table

    work = tmp_path_factory.mktemp("sample")
    layout = Layout("sample", work / "data", work / "reports")
    ingest("sample", layout)
    embed(layout, "mobilenet_v2", progress=False)
    points = point_table(layout, "mobilenet_v2", "pca", 3, 0)
    _, root = load_manifest(layout)
    write_explorer(points, root, layout.explorer, title="sample", neighbors=neighbor_rows(points))
    return layout


def test_sample_flags_in_3d_relabel_three_drop_two(browser, sample_report, tmp_path) -> None:
    """The browser half of the round trip: box-select part of the flags cluster in 3D, relabel
    three, drop two, download decisions.csv (01_download's ``decisions`` input) and apply it
    to the sample's manifest as the next run does."""
    from embedscope.decisions import apply_decisions, read_decisions
    from embedscope.ingest import load_manifest

    p = base.Page(browser, sample_report.explorer)
    data = p.page.evaluate("() => window.embedscope.data")
    labels = np.array(data["classes"])[data["label"]]
    view = p.page.evaluate("() => window.embedscope.view()")
    set_view(p.page, {"distance": 0.7 * view["distance"]})  # zoomed in a little, as a user would
    settle(p)
    xy = project3d(p.page)
    flags = labels == "flags"
    assert flags.sum() > 20
    centre = np.median(xy[flags], axis=0)
    for half in range(10, 80, 4):  # a box in the flags cluster: mostly flags, at least five
        box = clear_box(xy, centre, half)
        inside = sorted(in_box(xy, box))
        if sum(flags[inside]) >= 5:
            break
    assert flags[inside].mean() > 0.5, "the box sits in the flags cluster"
    p.page.click("#tool [data-tool='box']")
    assert drag(p, box_corners(box)) == set(inside)

    chosen = [i for i in inside if flags[i]][:5]
    tiles = p.page.locator("#grid .tile")
    assert tiles.count() == len(inside)
    for k, i in enumerate(chosen):
        p.page.locator(f"#grid .tile[data-index='{i}']").click()
        p.page.wait_for_function(
            "(i) => document.getElementById('detail').dataset.index == i", arg=i
        )
        if k < 3:
            p.page.fill("#detail .new-label", "symbols")
            p.page.click("#detail button:has-text('Set label')")
        else:
            p.page.click("#detail button:has-text('Drop')")
    assert _decided(p) == {"relabelled": 3, "dropped": 2, "tagged": 0}

    name, head, *rows = _download(p, "#download-decisions", tmp_path)
    paths = [data["path"][i] for i in chosen]
    assert name == "decisions.csv" and head == ["path", "label", "tags"]
    assert rows == sorted(
        [[q, "symbols", ""] for q in paths[:3]] + [[q, "", "drop"] for q in paths[3:]]
    )
    assert all((SAMPLE_DIR / q).is_file() for q in paths), "paths relative to the dataset root"
    p.assert_safe()
    p.close()

    manifest, _ = load_manifest(sample_report)
    applied, report = apply_decisions(manifest, read_decisions(tmp_path / "decisions.csv"))
    assert (report["relabelled"], report["dropped"], report["unknown"]) == (3, 2, 0)
    changed = applied.set_index("path").loc[paths]
    assert changed["label"].tolist()[:3] == ["symbols"] * 3
    assert changed["reason"].tolist()[3:] == ["dropped by decision"] * 2


def test_a_hundred_thousand_points_draw_select_hover_and_pin(browser, library, tmp_path) -> None:
    """At 100,000 points (folder mode: neighbours in script chunks beside the page) every point
    is drawn, a real-mouse box selects exactly what the camera shows, a real hover names the
    point under the mouse and shows its picture, and a click pins it with its neighbours."""
    root, rels = library
    n = 100_000
    rng = np.random.default_rng(11)
    coords = rng.normal(size=(n, 3))
    # rows 0-23: alone on a ring around the cloud, square to the camera set below
    ring = np.linspace(0, 2 * np.pi, 24, endpoint=False)[:, None]
    e1, e2 = np.array([-1, 1, 0]) / np.sqrt(2), np.array([-1, -1, 2]) / np.sqrt(6)
    coords[:24] = 6 * (np.cos(ring) * e1 + np.sin(ring) * e2)
    pts = pd.DataFrame(coords, columns=list("xyz"))
    pts["path"] = [f"c{i % 7}/{i:06d}.png" for i in range(n)]  # cells come from `thumbnails`
    pts["label"] = [f"c{i % 7}" for i in range(n)]
    nbrs = rng.integers(0, n, size=(n, 12))
    nbrs[:, 0] = np.arange(n)  # self first, as analyse writes them
    cells = [thumbnail_cell(root / r, 16) for r in rels]  # each point its own cell, 16 px
    out = write_explorer(
        pts, root, tmp_path / "big.html", neighbors=nbrs, thumb_size=16,
        thumbnails=(cells[i % len(cells)] for i in range(n)),
    )  # fmt: skip
    assert len(list((tmp_path / "big-files" / "nbr").glob("*.js"))) > 1, "neighbours in chunks"
    p = base.Page(browser, out)
    assert p.plotted() == n, "every point drawn"
    set_view(p.page, orbit((11, 11, 11), [0, 0, 0]))
    assert p.plotted() == n, "every point still drawn"

    xy = project3d(p.page)
    ours = np.array(p.page.evaluate("() => Array.from(window.embedscope.screenPositions())"))
    assert np.abs(ours.reshape(-1, 2) - xy).max() < 0.05, "page and test project alike"
    p.page.click("#tool [data-tool='box']")
    aside = np.median(xy[24:], 0) + np.std(xy[24:], 0)  # off the dense middle of the cloud
    box = whole_pixel_box(xy, p.page.locator("#plot").bounding_box(), aside, 20)
    want = in_box(xy, box)
    assert 50 < len(want) < n // 2
    assert drag(p, box_corners(box)) == want
    assert p.page.locator("body").get_attribute("data-selected") == str(len(want))
    p.page.click("#tool [data-tool='view']")

    xy = project3d(p.page)  # the gallery opened: the map is smaller now
    data = p.page.evaluate("() => ({thumb: window.embedscope.data.thumb.slice(0, 24)})")
    assert data["thumb"][0] >= 0, "row 0 carries a picture"
    plot = p.page.locator("#plot").bounding_box()
    for i in range(0, 24, 3):
        assert np.sort(np.hypot(*(xy - xy[i]).T))[1] > 8, "nothing else near the point"
        p.page.mouse.move(plot["x"] + xy[i, 0], plot["y"] + xy[i, 1])
        p.page.wait_for_selector(f"#hover[data-shown='{i}']", timeout=10_000)
        card = p.card()
        assert card["path"] == pts["path"][i] and card["cell"] == data["thumb"][i]
    p.page.mouse.move(plot["x"] + xy[0, 0], plot["y"] + xy[0, 1])
    p.page.wait_for_selector("#hover[data-shown='0']")
    assert p.card()["image"].startswith('url("file:'), "a sheet beside the page"
    p.page.mouse.down()
    p.page.mouse.up()
    p.page.wait_for_selector("#detail[data-index='0'] #neighbors .thumb")
    shown = p.page.locator("#neighbors .thumb").evaluate_all("ts => ts.map(t => +t.dataset.index)")
    assert shown == [j for j in nbrs[0] if j != 0][:12]
    far = n - 1  # a neighbour list from another chunk, loaded on demand
    p.page.evaluate("(i) => window.embedscope.pin(i)", far)
    p.page.wait_for_selector(f"#detail[data-index='{far}'] #neighbors .thumb")
    shown = p.page.locator("#neighbors .thumb").evaluate_all("ts => ts.map(t => +t.dataset.index)")
    assert shown == [j for j in nbrs[far] if j != far][:12]

    # 60,000 decisions: more than the ~5 MB every file:// page shares in localStorage allows
    # comfortably, so they go to IndexedDB, and come back after a reload
    said = p.page.evaluate(
        "(n) => window.embedscope.edit({op: 'drop', rows: [...Array(n).keys()]})", 60_000
    )
    assert said == "" and _decided(p)["dropped"] == 60_000
    p.page.wait_for_function(SAVED_IN_INDEXEDDB, timeout=30_000)
    assert len(p.page.evaluate("() => localStorage.getItem(localStorage.key(0))")) < 100
    reload(p)
    assert (
        _decided(p)["dropped"] == 60_000
        and "Saved in this browser" in p.page.locator("#storage").text_content()
    )
    p.assert_safe()
    p.close()


#: Whether the page's decisions are in IndexedDB (a promise of true once the write committed).
SAVED_IN_INDEXEDDB = """() => new Promise((resolve) => {
    const open = indexedDB.open('embedscope');
    open.onsuccess = () => { const db = open.result;
      if (!db.objectStoreNames.contains('decisions')) { db.close(); resolve(false); return; }
      const get = db.transaction('decisions').objectStore('decisions').getAllKeys();
      get.onsuccess = () => { db.close(); resolve(get.result.length === 1); }; };
    open.onerror = () => resolve(false); })"""
