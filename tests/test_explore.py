"""explorer.html in a real headless Chromium opened straight from disk (real mouse hover and
clicks, search, legend, no network, hostile file names as text), the atlas it carries, the
inline notebook frame, the static plot and the CSV. The page is driven only through its
renderer-neutral interface (``window.embedscope``, ``body[data-drawn]``, DOM legend)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import launch_chromium, make_classes, png_bytes
from matplotlib.figure import Figure
from PIL import Image

from embedscope import thumbs
from embedscope.explore import (
    ATLAS_COLS,
    NO_THUMBNAIL,
    UNREADABLE,
    build_sheets,
    show_inline,
    static_plot,
    thumbnail_cell,
    write_embedding_csv,
    write_explorer,
)
from embedscope.explore.page import MAX_NEIGHBORS, NEIGHBOR_CHUNK
from embedscope.explore.palette import PALETTE
from embedscope.thumbs import as_images, cells_from_files

HOVER_PX = 128  # size of the hover card's thumbnail on screen
EVIL_LABEL = "<b>bold</b>"  # a label from a labels file; "/" cannot be in a folder name
EVIL = "<b>bold/<img src=x onerror=alert(1)>.png"
SCRIPT_BREAKER = "x</script><!--.png"  # folder "x<", file "script><!--.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


class Page:
    """A page with every request, dialog and script error recorded."""

    def __init__(self, browser: Any, path: Path | None = None, html: str | None = None) -> None:
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 800})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        if path is not None:
            self.page.goto(path.as_uri())
            self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        else:
            self.page.set_content(html or "")

    def card(self, which: str = "hover") -> dict[str, Any]:
        return self.page.evaluate(
            """(id) => { const c = document.getElementById(id), t = c.querySelector('.thumb');
            return {index: c.dataset.index === undefined ? null : Number(c.dataset.index),
                    hidden: c.hidden, label: c.querySelector('.label')?.textContent,
                    path: c.querySelector('.path')?.textContent,
                    cell: t ? Number(t.dataset.cell) : null, thumbText: t?.textContent,
                    atlas: t ? [...t.classList].find(k => k.startsWith('es-a')) : null,
                    position: t ? getComputedStyle(t).backgroundPosition : null,
                    image: t ? getComputedStyle(t).backgroundImage.slice(0, 30) : null}; }""",
            which,
        )

    def plotted(self) -> int:
        """Points drawn in a frame drawn now (hidden classes and search misses are not)."""
        return self.page.evaluate(
            "() => window.embedscope.setView({}).then(() => Number(document.body.dataset.drawn))"
        )

    def at(self, i: int) -> tuple[float, float]:
        """Page coordinates where point ``i`` is drawn."""
        return self.page.evaluate(
            """(i) => { const r = document.getElementById('plot').getBoundingClientRect(),
                p = window.embedscope.screenPositions([i]);
                return [r.left + p[0], r.top + p[1]]; }""",
            i,
        )

    def search(self, text: str, expect: int) -> None:
        """Type into the search box and wait for the page to count ``expect`` matches."""
        self.page.fill("#search", text)
        self.page.wait_for_function(
            "(n) => document.getElementById('count').textContent.startsWith(n + ' of')",
            arg=f"{expect:,}",
        )

    def assert_safe(self, allowed: tuple[str, ...] = ("file:", "data:")) -> None:
        assert self.dialogs == [], f"a script ran: {self.dialogs}"
        assert self.errors == [], self.errors
        assert self.page.locator("img[src='x']").count() == 0
        assert self.page.locator("#side b, #hover b").count() == 0
        assert all(u.startswith(allowed) for u in self.requests), self.requests

    def close(self) -> None:
        self.page.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Three colour classes plus every awkward case: RGBA, a 10:1 panorama, a corrupt JPEG,
    a script-tag file name and a path that tries to close the JSON <script> element."""
    root = make_classes(tmp_path_factory.mktemp("explore") / "imgs", per_class=4)
    rgba = Image.new("RGBA", (40, 40), (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (10, 10, 30, 30))
    rgba.save(root / "blue" / "rgba.png")
    Image.new("RGB", (400, 40), (30, 200, 60)).save(root / "green" / "wide.jpg", quality=90)
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (root / "<b>bold").mkdir()
    (root / EVIL).write_bytes(png_bytes("RGBA", (40, 20), (200, 0, 200, 255)))
    (root / "x<").mkdir()
    (root / SCRIPT_BREAKER).write_bytes(png_bytes("RGB", (20, 20), (250, 250, 0)))
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return root, rels


def _points(rels: list[str], coords: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(coords, columns=list("xyz")[: coords.shape[1]])
    df["path"] = rels
    df["label"] = [EVIL_LABEL if r == EVIL else r.split("/")[0] for r in rels]
    df.loc[df["path"].str.startswith("x<"), "label"] = np.nan  # shown as "(unlabelled)"
    df["mislabel_score"] = np.linspace(0, 1, len(rels))
    df["cluster"] = np.arange(len(rels)) % 3
    df["row"] = np.arange(len(rels))  # bookkeeping: never offered as a colour
    return df


def _expected_position(cell: int, px: int) -> str:
    k = cell % (ATLAS_COLS * ATLAS_COLS)
    return f"{-(k % ATLAS_COLS) * px}px {-(k // ATLAS_COLS) * px}px"


def _data(page_text: str) -> dict[str, Any]:
    """The page's data, per-point typed arrays ({dtype, b64}) decoded to lists."""
    blob = re.search(
        r'<script type="application/json" id="es-data">(.*?)</script>', page_text, re.S
    )
    assert blob, "the data <script> element must end where it was meant to"
    data = json.loads(blob.group(1))
    for key in ("x", "y", "z", "label", "thumb"):
        data[key] = _typed(data[key])
    return data


def _typed(v: Any) -> Any:
    if isinstance(v, dict) and "b64" in v:
        return np.frombuffer(base64.b64decode(v["b64"]), dtype="<" + v["dtype"]).tolist()
    return v


def test_real_mouse_hover_in_3d_shows_that_point_as_text(browser, images, tmp_path) -> None:
    root, rels = images
    # the hostile file sits at the origin inside a star of other points, so the default camera
    # draws it at the centre of the viewport: a real mouse move there hovers it
    others = [r for r in rels if r != EVIL and "corrupt" not in r][:8]
    star = np.vstack([np.eye(3), -np.eye(3), [[1, -1, 0], [-1, 1, 0]]])
    pts = _points([EVIL, *others], np.vstack([[0, 0, 0], star]))
    nbrs = np.array([[(i + k) % 9 for k in range(0, 5)] for i in range(9)])  # self included
    out = write_explorer(pts, root, tmp_path / "explorer.html", title="<i>cube</i>", neighbors=nbrs)
    p = Page(browser, out)
    box = p.page.locator("#plot").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for dx, dy in [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (2, 2), (-2, -2)]:
        p.page.mouse.move(cx + dx, cy + dy)
        p.page.wait_for_timeout(120)
        if p.card()["index"] == 0:
            break
    card = p.card()
    data = p.page.evaluate("() => window.embedscope.data")
    assert card["index"] == 0 and not card["hidden"], "the centre point must be hovered"
    assert card["label"] == EVIL_LABEL and card["path"] == EVIL
    assert card["cell"] == data["thumb"][0] >= 0
    assert card["atlas"] == "es-a0" and card["image"].startswith('url("data:image/')
    assert card["position"] == _expected_position(card["cell"], HOVER_PX)
    legend = p.page.locator(".legendtext").all_text_contents()
    assert EVIL_LABEL in legend, f"legend shows the label as text: {legend}"
    assert p.page.title() == "<i>cube</i>"

    # a real click on the point pins it with its neighbours (self left out), a neighbour click
    # moves the pin; plotly's 3D click fires on a redraw while the button is down, so hold it
    p.page.mouse.down()
    p.page.wait_for_timeout(150)
    p.page.mouse.up()
    p.page.wait_for_selector("#detail:not([hidden])", timeout=5_000)
    assert p.card("detail")["path"] == EVIL
    shown = p.page.locator("#neighbors .thumb")
    assert [int(x) for x in shown.evaluate_all("ts => ts.map(t => t.dataset.index)")] == [
        1,
        2,
        3,
        4,
    ]
    shown.nth(2).click()
    assert p.card("detail")["index"] == 3 and p.card("detail")["path"] == others[2]
    p.assert_safe()
    p.close()


def test_real_mouse_hover_in_2d_matches_every_point(browser, images, tmp_path) -> None:
    root, rels = images
    grid = np.array([(i % 6, i // 6) for i in range(len(rels))], dtype=float)  # no overlaps
    pts = _points(rels, grid).assign(z=np.nan)  # all-NaN z: a 2D map
    # -1: in no cluster, no group of near twins; the card says "none" (it said "-1"); many
    # groups make look_alike_group a number column, a few make cluster a category
    pts["cluster"] = np.arange(len(rels)) % 3 - 1
    pts["look_alike_group"] = np.where(np.arange(len(rels)) % 2, -1, np.arange(len(rels)) + 100)
    out = write_explorer(pts, root, tmp_path / "e2d.html", thumb_size=48)
    p = Page(browser, out)
    data = p.page.evaluate("() => window.embedscope.data")
    assert data["is3d"] is False and data["z"] is None
    assert p.plotted() == len(rels), "every point is plotted, the corrupt one too"
    kinds = set()
    for i in range(len(rels)):
        p.page.mouse.move(*p.at(i))
        p.page.wait_for_function(
            "(i) => document.getElementById('hover').dataset.index == i", arg=i, timeout=3_000
        )
        card = p.card()
        want = "(unlabelled)" if rels[i].startswith("x<") else pts["label"][i]
        assert (card["path"], card["label"]) == (rels[i], want)
        facts = p.page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('#hover dl.kv dt')]
                .map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))"""
        )
        for group in ("cluster", "look_alike_group"):
            value = int(pts[group][i])
            assert facts[group] == ("none" if value < 0 else str(value)), (group, facts)
        assert card["cell"] == data["thumb"][i]
        if card["cell"] >= 0:
            kinds.add("thumb")
            assert card["position"] == _expected_position(card["cell"], HOVER_PX)
        else:
            kinds.add("unreadable")
            assert card["cell"] == UNREADABLE and rels[i] == "red/corrupt.jpg"
            assert card["thumbText"] == "image unreadable"
    assert kinds == {"thumb", "unreadable"}, "every point keeps its thumbnail"
    p.assert_safe()
    p.close()


def test_search_legend_and_colour_by(browser, images, tmp_path) -> None:
    root, rels = images
    pts = _points(rels, np.random.default_rng(1).normal(size=(len(rels), 3)))
    p = Page(browser, write_explorer(pts, root, tmp_path / "s.html"))
    n_green = sum(r.startswith("green/") for r in rels)
    assert p.plotted() == len(rels)
    p.search("GREEN/", n_green)  # case-insensitive, path substring
    assert p.plotted() == n_green
    p.search("bold</b", 1)  # label substring, typed as plain text
    p.search("", len(rels))

    # a legend click hides a class, and it stays hidden while searching
    box = p.page.locator(".legendtext", has_text="red").bounding_box()
    p.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    n_red = sum(r.startswith("red/") for r in rels)
    p.page.wait_for_selector("#legend [data-name='red'].off")
    assert p.plotted() == len(rels) - n_red
    labels = pts["label"].fillna("(unlabelled)")
    shown = [i for i, r in enumerate(rels) if "e" in r.lower() or "e" in labels[i].lower()]
    p.search("E", len(shown))
    assert p.plotted() == sum(not rels[i].startswith("red/") for i in shown) < len(rels)
    p.search("", len(rels))

    options = p.page.locator("#colour option").all_text_contents()
    assert options == ["label", "mislabel_score", "cluster"], "row is bookkeeping, not a colour"
    p.page.select_option("#colour", label="mislabel_score")
    shown = p.page.evaluate(
        "() => { const c = window.embedscope.colouring(); return [c.name, c.scale, "
        "document.querySelector('#colorbar:not([hidden])').dataset.name, "
        "document.querySelectorAll('#legend .legendtext').length]; }"
    )
    assert shown == ["mislabel_score", True, "mislabel_score", 0], "a colour bar, no legend"
    assert p.plotted() == len(rels)
    p.page.select_option("#colour", label="cluster")
    assert p.page.locator(".legendtext").all_text_contents() == ["0", "1", "2"]
    assert p.plotted() == len(rels)
    p.assert_safe()
    p.close()


def test_page_carries_atlases_and_safe_json(images, tmp_path) -> None:
    root, rels = images
    pts = _points(rels, np.random.default_rng(2).normal(size=(len(rels), 3)))
    out = write_explorer(pts, root, tmp_path / "a.html")
    page = ours = out.read_text(encoding="utf-8")
    assert "Plotly" not in page and "EmbedScatter" in page, "the page's own renderer is inlined"
    assert ours.count("base64,") == 1, "one atlas image, not one image per point"
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", ours)
    assert "connect-src 'none'" in page
    assert EVIL not in page and "</script><!--" not in ours, "names travel escaped in JSON"
    data = _data(page)
    assert len(data["x"]) == len(rels) and data["path"] == rels
    assert data["classes"][-1] == "(unlabelled)" and EVIL_LABEL in data["classes"]
    assert NO_THUMBNAIL not in data["thumb"], "every point keeps its thumbnail"
    assert data["thumb"][rels.index("red/corrupt.jpg")] == UNREADABLE

    # every point's atlas cell holds that point's picture (lossy: compare mean colours)
    uri = re.fullmatch(r"data:image/\w+;base64,([A-Za-z0-9+/=]+)", data["sheets"][0]).group(1)
    atlas = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"), float)
    size = data["cell"]
    for i, cell in enumerate(data["thumb"]):
        if cell < 0:
            continue
        r, c = divmod(cell, ATLAS_COLS)
        got = atlas[r * size : (r + 1) * size, c * size : (c + 1) * size].mean((0, 1))
        want = np.asarray(thumbnail_cell(root / rels[i], size), float).mean((0, 1))
        assert np.abs(got - want).max() < 12, (rels[i], got, want)


def test_thumbnail_cells_keep_aspect_on_white(images) -> None:
    root, _ = images
    wide = np.asarray(thumbnail_cell(root / "green" / "wide.jpg", 64))
    assert wide.shape == (64, 64, 3)
    assert (wide[:26] > 245).all() and (wide[-26:] > 245).all(), "letterboxed on white"
    assert abs(int(wide[32, 32, 1]) - 200) < 12, "the image itself fills the middle band"
    rgba = np.asarray(thumbnail_cell(root / "blue" / "rgba.png", 64))
    assert (rgba[2, 2] > 245).all() and rgba[32, 32, 2] > 200, "transparency shows as white"
    assert thumbnail_cell(root / "red" / "corrupt.jpg", 64) is None


def test_atlases_split_and_agree_between_pools(images, monkeypatch) -> None:
    root, rels = images
    paths = [root / r for r in rels] * 20  # enough to take the process pool
    assert len(paths) >= thumbs.PROCESS_POOL_MIN
    in_processes = build_sheets(as_images(cells_from_files(paths, 16), 16), size=16, cols=4)
    monkeypatch.setattr(thumbs, "PROCESS_POOL_MIN", 10**9)
    in_threads = build_sheets(as_images(cells_from_files(paths, 16), 16), size=16, cols=4)
    assert in_processes[0] == in_threads[0], "same cells, same order, same bytes"
    assert in_processes[1].tolist() == in_threads[1].tolist()
    atlases, index = in_processes[0], in_processes[1].tolist()
    good = [i for i in index if i >= 0]
    assert good == list(range(len(good))) and index.count(UNREADABLE) == 20
    assert len(atlases) == -(-len(good) // 16)
    last = Image.open(io.BytesIO(base64.b64decode(atlases[-1].split(",", 1)[1])))
    assert last.size == (64, 16 * -(-(len(good) % 16 or 16) // 4)), "last sheet is cropped"


def test_write_is_atomic_and_checks_neighbours(images, tmp_path) -> None:
    root, rels = images
    pts = _points(rels, np.zeros((len(rels), 2)))
    out = write_explorer(pts, root, tmp_path / "e.html")
    before = out.read_bytes()
    with pytest.raises(ValueError, match="neighbors must have shape"):
        write_explorer(pts, root, out, neighbors=np.zeros((3, 2), dtype=int))
    assert out.read_bytes() == before, "a failed run leaves the old page alone"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["e.html"], "no temp files left"


def test_neighbours_inline_or_in_chunks_beside_the_page(images, tmp_path) -> None:
    """Every point keeps its first 12 valid neighbours (self and out-of-range rows dropped,
    order kept) at any size: inline in a one-file page, or above ``inline_limit`` in
    ``<stem>-files/nbr/<chunk>.js`` script files that hold the same rows."""
    root, rels = images
    n = len(rels)
    pts = _points(rels, np.zeros((n, 2)))
    nbrs = np.array([[(i + k) % n for k in range(n)] + [-1, n] for i in range(n)])  # self first
    most = min(MAX_NEIGHBORS, n - 1)
    want = [[(i + k) % n for k in range(1, most + 1)] for i in range(n)]

    one = _data(write_explorer(pts, root, tmp_path / "n.html", neighbors=nbrs).read_text())
    rows = np.array(_typed(one["neighbors"]["inline"])).reshape(n, -1)
    assert one["neighbors"]["k"] == most and rows.tolist() == want
    assert one["folder"] is None and not (tmp_path / "n-files").exists()

    out = write_explorer(pts, root, tmp_path / "big.html", neighbors=nbrs, inline_limit=n - 1)
    near = _data(out.read_text())["neighbors"]
    stem = near.pop("prefix").removeprefix("big-files/nbr/")
    assert near == {"k": most, "chunk": NEIGHBOR_CHUNK} and re.fullmatch("[0-9a-f]{8}-", stem)
    chunk = (tmp_path / "big-files" / "nbr" / f"{stem}0.js").read_text()
    b64 = re.fullmatch(r'embedscopeChunk\("nbr",0,"([A-Za-z0-9+/=]+)"\);\n', chunk).group(1)
    assert _typed({"dtype": "i4", "b64": b64}) == sum(want, [])
    assert sorted(x.name for x in (tmp_path / "big-files" / "nbr").iterdir()) == [f"{stem}0.js"]


def test_show_inline_runs_the_page_in_a_frame(browser, images, tmp_path) -> None:
    root, rels = images
    pts = _points(rels, np.random.default_rng(3).normal(size=(len(rels), 3)))
    out = write_explorer(pts, root, tmp_path / "i.html")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would print into every executed notebook
        shown = show_inline(out, height=640)
    assert "height:640px" in shown.data and "<script" not in shown.data.split("srcdoc=")[1][:200]
    p = Page(browser, html=shown.data)
    frame = p.page.frame_locator("iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=30_000)
    assert frame.locator(".legendtext").count() == 5
    count = frame.locator("#count").text_content()
    assert count == f"{len(rels)} of {len(rels)} points shown"
    p.assert_safe(allowed=("data:", "about:"))
    p.close()

    # a page with a folder beside it cannot run inside the notebook: a line says what and where
    big = write_explorer(pts, root, tmp_path / "big <page>.html", inline_limit=3)
    line = show_inline(big).data
    assert "<iframe" not in line and f"explorer of {len(rels)} points" in line
    assert 'href="big%20%3Cpage%3E.html"' in line and "big &lt;page&gt;-files/" in line


def test_static_plot_and_csv(images, tmp_path) -> None:
    root, rels = images
    pts = _points(rels, np.random.default_rng(4).normal(size=(len(rels), 3)))
    fig = static_plot(pts, title="t", out=tmp_path / "p.png")
    assert isinstance(fig, Figure) and fig.axes[0].name == "3d"
    assert (
        fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size > 5000
    )
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == "(unlabelled)" and EVIL_LABEL in legend
    flat = static_plot(pts.drop(columns="z"))
    assert flat.axes[0].name == "rectilinear"
    csv = pd.read_csv(write_embedding_csv(pts, tmp_path / "e.csv"))
    assert list(csv.columns) == ["x", "y", "z", "image_path", "label"]
    assert not Path(csv["image_path"][0]).is_absolute() and (root / csv["image_path"][0]).exists()


def test_inputs_outside_the_happy_path(tmp_path) -> None:
    root = make_classes(tmp_path / "imgs", per_class=2)
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))
    pts = pd.DataFrame({"x": np.arange(len(rels), dtype=float), "y": 1.0, "path": rels})
    pts.loc[0, "x"] = np.nan  # a point without coordinates does not break the JSON
    page = write_explorer(pts, root, tmp_path / "e.html").read_text()
    data = _data(page)
    assert np.isnan(data["x"][0]) and set(data["classes"]) == {"(unlabelled)"}
    assert data["thumb"] == list(range(len(rels))), "every point keeps its thumbnail"
    assert page.count("base64,") == 1, "on one sheet"
    with pytest.raises(ValueError, match="lacks column"):
        write_explorer(pts.drop(columns="y"), root, tmp_path / "f.html")
    shutil.rmtree(root)


def _lab(hex_colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_first_twelve_class_colours_are_clearly_distinct() -> None:
    lab = [_lab(c) for c in PALETTE[:12]]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(lab, 2))
    assert closest >= 25, f"two of the first 12 colours are only {closest:.1f} CIELAB units apart"
