"""explorer.html in a real headless Chromium, opened straight from disk: hover, click,
search, no network, file names as text; plus the static plot and the CSV."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_classes, png_bytes

from embedscope.explore import (
    NO_THUMBNAIL,
    UNREADABLE,
    static_plot,
    write_embedding_csv,
    write_explorer,
)

CHROMIUM = "/usr/bin/chromium"
EVIL = "<img src=x onerror=alert(1)>.png"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (Debian's package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page with every request, dialog and console error recorded."""

    def __init__(self, browser, path: Path) -> None:
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 800})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)

    def hover_card(self) -> dict:
        return self.page.evaluate("""() => { const c = document.getElementById('hover');
            const t = c.querySelector('.thumb');
            return {index: c.dataset.index === undefined ? null : Number(c.dataset.index),
                    label: c.querySelector('.label')?.textContent,
                    path: c.querySelector('.path')?.textContent,
                    cell: t?.dataset.cell === undefined ? null : Number(t.dataset.cell),
                    thumbText: t?.textContent}; }""")

    def plotted(self) -> int:
        return self.page.evaluate(
            "() => document.getElementById('plot').data.filter(t => t.name !== 'selected')"
            ".reduce((n, t) => n + t.x.length, 0)"
        )


def _points(root: Path, rels: list[str], coords: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(coords, columns=list("xyz")[: coords.shape[1]])
    df["path"] = rels
    df["label"] = [Path(r).parent.name or "(unlabelled)" for r in rels]
    df["mislabel_score"] = np.linspace(0, 1, len(rels))
    return df


@pytest.fixture()
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    root = make_classes(tmp_path / "imgs", per_class=4)
    evil_dir = root / "<b>bold"
    evil_dir.mkdir()
    (evil_dir / EVIL).write_bytes(png_bytes("RGBA", (40, 20), (0, 0, 255, 128)))
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return root, rels


def test_hover_in_3d_shows_the_point_under_the_mouse_as_text(browser, images, tmp_path) -> None:
    root, rels = images
    # the malicious file sits at the centre of a star of other points, so it is drawn at the
    # centre of the 3D viewport under the default camera: a real mouse move hovers it
    others = [r for r in rels if "corrupt" not in r and EVIL not in r][:8]
    axes = np.vstack([np.eye(3), -np.eye(3), [[1, -1, 0], [-1, 1, 0]]])  # none on the eye line
    evil = next(r for r in rels if EVIL in r)
    pts = _points(root, [evil, *others], np.vstack([[0, 0, 0], axes]))
    out = write_explorer(pts, root, tmp_path / "explorer.html", title="<i>cube</i>")
    p = Page(browser, out)
    box = p.page.locator("#plot").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for dx, dy in [(0, 0), (2, 0), (0, 2), (-2, 0), (0, -2), (3, 3)]:
        p.page.mouse.move(cx + dx, cy + dy)
        p.page.wait_for_timeout(150)
        if p.hover_card()["index"] == 0:
            break
    card = p.hover_card()
    assert card["index"] == 0, "hovering the centre must show the centre point"
    assert card["label"] == "<b>bold" and card["path"] == f"<b>bold/{EVIL}"
    assert p.page.locator("img[src='x']").count() == 0 and p.page.locator("b").count() == 0
    assert p.dialogs == [] and p.errors == []
    assert p.page.title() == "<i>cube</i>"
    assert all(u.startswith(("file:", "data:")) for u in p.requests), p.requests


def test_hover_in_2d_matches_data_and_thumbnail_cell(browser, images, tmp_path) -> None:
    root, rels = images
    rng = np.random.default_rng(0)
    pts = _points(root, rels, rng.uniform(-5, 5, (len(rels), 2)))
    out = write_explorer(pts, root, tmp_path / "explorer.html")
    p = Page(browser, out)
    data = p.page.evaluate("() => window.embedscope.data")
    assert data["thumb"][rels.index("red/corrupt.jpg")] == UNREADABLE
    assert p.plotted() == len(rels), "every point is plotted, the corrupt one too"
    checked = 0
    for i in range(0, len(rels), 3):
        x, y = p.page.evaluate(
            """(i) => { const gd = document.getElementById('plot'), L = gd._fullLayout,
                r = gd.getBoundingClientRect(), d = window.embedscope.data;
                return [r.left + L.xaxis._offset + L.xaxis.l2p(d.x[i]),
                        r.top + L.yaxis._offset + L.yaxis.l2p(d.y[i])]; }""",
            i,
        )
        p.page.mouse.move(x, y)
        p.page.wait_for_timeout(120)
        card = p.hover_card()
        if card["index"] != i:  # another point may overlap this one; it must still be consistent
            continue
        checked += 1
        assert card["path"] == rels[i] and card["label"] == data["label"][i]
        if data["thumb"][i] >= 0:
            assert card["cell"] == data["thumb"][i]
        else:
            assert card["thumbText"] == "image unreadable"
    assert checked >= len(range(0, len(rels), 3)) - 1


def test_search_click_and_neighbours(browser, images, tmp_path) -> None:
    root, rels = images
    rng = np.random.default_rng(1)
    nbrs = np.array([[(i + k) % len(rels) for k in range(1, 6)] for i in range(len(rels))])
    out = write_explorer(
        _points(root, rels, rng.normal(size=(len(rels), 3))),
        root,
        tmp_path / "e.html",
        neighbors=nbrs,
    )
    p = Page(browser, out)
    assert p.plotted() == len(rels)
    p.page.fill("#search", "green/")
    p.page.wait_for_timeout(200)
    assert p.plotted() == sum(r.startswith("green/") for r in rels)
    assert p.page.locator("#count").text_content().startswith("4 of ")
    p.page.fill("#search", "")
    p.page.select_option("#colour", "mislabel_score")
    p.page.wait_for_timeout(200)
    assert p.page.evaluate("() => document.getElementById('plot').data[0].marker.showscale")
    p.page.evaluate("() => window.embedscope.select(2)")
    shown = p.page.locator("#neighbors .thumb")
    assert shown.count() == 5
    shown.nth(0).click()
    assert p.page.evaluate("() => Number(document.getElementById('detail').dataset.index)") == 3
    assert all(u.startswith(("file:", "data:")) for u in p.requests)


def test_thumbnails_are_atlases_and_capped(images, tmp_path) -> None:
    root, rels = images
    pts = _points(root, rels, np.zeros((len(rels), 3)))
    out = write_explorer(pts, root, tmp_path / "a.html", max_thumbnails=5)
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/webp;base64,") == 1, "one atlas, not one image per point"
    from plotly.offline import get_plotlyjs

    ours = page.replace(get_plotlyjs(), "")  # everything but the inlined plotly.js bundle
    assert len(ours) < len(page) - 4_000_000, "plotly.js is inlined"
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", ours)
    assert "connect-src 'none'" in page, "CSP forbids any fetch from the page"
    assert EVIL not in page, "file names travel escaped inside JSON"
    blob = re.search(r'<script type="application/json" id="es-data">(.*?)</script>', page, re.S)
    data = json.loads(blob.group(1))
    assert data["thumb"][5:] == [NO_THUMBNAIL] * (len(rels) - 5)
    assert len(data["x"]) == len(rels)


def test_static_plot_and_csv(images, tmp_path) -> None:
    root, rels = images
    pts = _points(root, rels, np.random.default_rng(2).normal(size=(len(rels), 3)))
    img = static_plot(pts, title="t", out=tmp_path / "p.png")
    assert img.data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size > 5000
    csv = pd.read_csv(write_embedding_csv(pts, root, tmp_path / "e.csv"))
    assert list(csv.columns) == ["x", "y", "z", "image_path", "label"]
    assert Path(csv["image_path"][0]).exists()
    shutil.rmtree(root)
