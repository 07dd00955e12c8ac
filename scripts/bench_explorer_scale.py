"""`make bench` section `explorer_scale`: the shared page at 100,000 and 1,000,000 points, each
point with its own picture, measured in a real headless Chromium with a real mouse (issue 20).

Every point's thumbnail cell is a crop of a real photo (scikit-learn's sample images) or one of
the sample's emoji with the point's own number written across it (:class:`NumberedCells`), so
a probe can tell from the pixels of the hover card whether it shows *that* point's picture. The
cells are made on demand and handed to ``write_explorer(thumbnails=...)``: a million image files
are never written. The page is opened from disk (``file://``) with the network off, never with
``--allow-file-access-from-files``, and measured through the renderer-neutral test interface
(``window.embedscope``: ``screenPositions``, ``pointAt``, ``timing``; ``#hover[data-shown]``).

The live panel and the Dash app are measured at 100,000 points on real files (the same cells,
written once into a work folder kept between runs) that the kit ingests, making their thumbnail
cache: how long a thumbnail takes to serve or show by point number (checked by its pixels too),
how long the app takes to start and the figure to build.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from browser import CHROMIUM_ARGS, ensure_chromium
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from embedscope.thumbs import thumbnail_cell

ROOT = Path(__file__).resolve().parents[1]
#: Issue 20's targets at 1,000,000 points.
TARGETS = {
    "seconds_all_on_screen": 10.0,
    "hover_p95_ms": 300.0,
    "select_ms": 300.0,
    "bytes_per_image": 1500.0,
}
VIEWPORT = {"width": 1400, "height": 900}
#: The hover card's picture (a CSS sprite box).
PICTURE = "#hover .thumb"


class NumberedCells(Sequence[Image.Image]):
    """Point ``i``'s thumbnail cell, made on demand: a real picture with ``i`` written across it.

    ``kind`` "photo": one of ``bases`` crops (random place and scale) of scikit-learn's two
    sample photos; "emoji": one of the sample's 360 emoji as the kit makes its cells. Point i
    gets base ``i * 2654435761 % bases`` (neighbouring points look different; i and
    i + bases share a base and differ only by their number)."""

    def __init__(self, n: int, kind: str = "photo", size: int = 64, bases: int = 2048) -> None:
        if kind not in ("photo", "emoji"):
            raise ValueError(f"kind must be 'photo' or 'emoji', got {kind!r}")
        self.n, self.size = n, size
        self.bases = _photo_bases(size, bases) if kind == "photo" else _emoji_bases(size)
        font = ImageFont.load_default(size=max(8, size * 15 // 64))
        stroke = max(1, size // 32)
        # each digit drawn once (its white outline and its black fill as masks), then pasted:
        # 10x faster than drawing text per cell, which matters at a million cells
        self.glyphs = [_glyph(str(d), font, stroke) for d in range(10)]
        self.advance = round(font.getlength("0"))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # Sequence's iteration stops at the IndexError
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"cells are indexed by point number, got {type(i).__name__}")
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.draw(self.base_of(int(i)), int(i))

    def draw(self, base: int, number: int) -> Image.Image:
        """Base picture ``base`` with ``number`` written across it."""
        cell = self.bases[base].copy()
        digits = [self.glyphs[int(d)] for d in str(number)]
        outline, _ = digits[0]
        x = (self.size - self.advance * (len(digits) - 1) - outline.width) // 2
        y = round(self.size * 0.78) - outline.height // 2
        for paint, layer in (((255, 255, 255), 0), ((0, 0, 0), 1)):
            for k, glyph in enumerate(digits):
                cell.paste(paint, (x + k * self.advance, y), glyph[layer])
        return cell

    def base_of(self, i: int) -> int:
        return i * 2654435761 % len(self.bases)


class FileCells:
    """A written report's points as cells, for :func:`probe_page`: point ``i`` is the image
    file of the points table's row ``i`` (the page's order). Every file differs (the bench's
    generated images are noise), so a "twin" of ``i`` is simply another file."""

    def __init__(self, report: Path, root: Path, size: int = 32) -> None:
        table = next(report.glob("points-*.parquet"))
        self.paths = pd.read_parquet(table, columns=["path"])["path"].astype(str).tolist()
        self.root, self.size = root, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if not 0 <= i < len(self.paths):
            raise IndexError(i)
        return Image.open(self.root / self.paths[int(i)]).convert("RGB")

    def draw(self, base: int, number: int) -> Image.Image:
        return self[number % len(self.paths)]

    def base_of(self, i: int) -> int:
        return i


def probe_report(report: Path, root: Path, hovers: int = 20) -> dict:
    """:func:`probe_page` on the page ``run-all`` wrote into ``report`` for the images under
    ``root``: all points on screen, hovers to the right file's picture, selection, a decision."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
        try:
            return probe_page(
                browser, report / "explorer.html", FileCells(report, root), hovers=hovers, shot=None
            )
        finally:
            browser.close()


def _glyph(text: str, font: ImageFont.FreeTypeFont, stroke: int) -> tuple[Image.Image, Image.Image]:
    """``text``'s outline and fill as two masks of the same size."""
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    masks = []
    for width in (stroke, 0):
        mask = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(mask).text((-left, -top), text, 255, font, stroke_width=width)
        masks.append(mask)
    return masks[0], masks[1]


def _photo_bases(size: int, count: int, seed: int = 0) -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(48, min(photo.size)))
        x, y = (int(rng.integers(0, d - side + 1)) for d in photo.size)
        crop = photo.crop((x, y, x + side, y + side))
        out.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return out


def _emoji_bases(size: int) -> list[Image.Image]:
    paths = sorted((ROOT / "data" / "sample").rglob("*.webp"))
    cells = [thumbnail_cell(p, size) for p in paths]
    return [c for c in cells if c is not None]


def _pixels(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``im`` at ``size``, slightly blurred (what scaling and re-encoding add is fine grain)."""
    im = im.convert("RGB").resize(size, Image.Resampling.BOX)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(0.7)), np.int16)


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference (0..255) of two pictures at ``b``'s size."""
    return float(np.abs(_pixels(a, b.size) - _pixels(b, b.size)).mean())


def matches(shot: Image.Image, cells: NumberedCells, i: int, others: int = 8) -> dict:
    """Whether ``shot`` (a picture the page or a server showed) is point ``i``'s cell: against
    each of ``others`` random cells and of ``others`` twins (i's base picture with another
    number written on it), over the pixels where that cell and i's differ, the shot must be
    far nearer to i's (``ratio``, the largest distance ratio, below 0.6). Scaled and
    re-encoded on the way (a 64 px WebP sheet shown at 128 px, a 64 px JPEG served at 160),
    the right cell scored up to 0.31, another one 1.1 or more."""
    rng = np.random.default_rng(i)
    base = cells.base_of(i)
    near_by = [i + 1, abs(i - 1), i + 10, *rng.integers(0, 10 * max(i, 10), others).tolist()]
    numbers = [m for m in dict.fromkeys(int(m) for m in near_by) if m != i][:others]
    twins = [cells.draw(base, m) for m in numbers]
    strangers = [cells[int(j)] for j in rng.integers(0, len(cells), others) if j != i]
    size = (cells.size, cells.size)
    seen, own = _pixels(shot, size), _pixels(cells[i], size)
    ratio = 0.0
    for cell in twins + strangers:
        other = _pixels(cell, size)
        where = np.abs(own - other).sum(axis=2) > 60
        if where.any():
            near, far = np.abs(seen - own)[where].mean(), np.abs(seen - other)[where].mean()
            ratio = max(ratio, float(near / max(far, 1e-9)))
    return {"ratio": ratio, "ok": ratio < 0.6}


def scale_points(n: int, seed: int = 0, k: int = 12) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` points in 20 gaussian blobs in 3D: label (the blob), a numeric column (distance
    to the blob's centre), a path per point and k neighbours (a k-d tree: seconds, not minutes)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 3)) * 6
    spread = rng.uniform(0.5, 1.5, 20)
    blob = rng.integers(0, 20, n)
    xyz = centres[blob] + rng.normal(size=(n, 3)) * spread[blob, None]
    names = np.array([f"blob-{b:02d}" for b in range(20)])
    points = pd.DataFrame(xyz, columns=list("xyz"))
    points["label"] = names[blob]
    points["path"] = [f"{names[b]}/{i:07d}.jpg" for i, b in enumerate(blob.tolist())]
    points["distance"] = np.linalg.norm(xyz - centres[blob], axis=1).round(3)
    _, nbrs = cKDTree(xyz).query(xyz, k=k + 1, workers=-1)
    return points, nbrs[:, 1:].astype(np.int64)


def write_cell_files(cells: NumberedCells, paths: Sequence[str], root: Path) -> None:
    """Each cell as a JPEG file at its point's path (for the live panel and Dash); files
    already there are kept."""
    for i, rel in enumerate(paths):
        dest = root / rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        cells[i].save(dest, quality=90)


def write_page(points: pd.DataFrame, nbrs: np.ndarray, cells: NumberedCells, folder: Path) -> dict:
    """The report folder for ``points``: ``explorer.html`` and its thumbnail sheets, the cells
    handed over in memory; how long it took and how large it is."""
    from embedscope.explore import write_explorer

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "explorer.html"
    t0 = time.perf_counter()
    write_explorer(points, folder, out, title=folder.name, neighbors=nbrs, thumbnails=cells)
    seconds = time.perf_counter() - t0
    sheets = _sheet_bytes(out)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "page": out,
        "seconds_write": round(seconds, 1),
        "mb_page_html": round(out.stat().st_size / 1e6, 2),
        "mb_folder": round(total / 1e6, 2),
        "mb_sheets": round(sheets / 1e6, 2),
        "bytes_per_image": round(sheets / len(points), 1),
        "sheet_files": sum(1 for _ in _sheet_files(out)),
    }


def _sheet_files(page: Path) -> Iterator[Path]:
    files = page.with_name(f"{page.stem}-files") / "thumbs"
    return (p for p in files.glob("*") if p.is_file()) if files.is_dir() else iter(())


def _sheet_bytes(page: Path) -> int:
    """Bytes of the thumbnail sheets: files beside the page, else the data URIs inside it."""
    on_disk = sum(p.stat().st_size for p in _sheet_files(page))
    if on_disk:
        return on_disk
    text = page.read_text(encoding="utf-8")
    uris = re.findall(r"data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)", text)
    return sum(len(u) * 3 // 4 for u in uris)


# ---- the page in Chromium -------------------------------------------------------------------

#: Runs before the page's own scripts: notes when body[data-ready=1] first holds every point.
_READY_CLOCK = """
new MutationObserver((_, obs) => {
  const b = document.body;
  if (b && b.dataset.ready === "1" && b.dataset.drawn === String(window.__esN)) {
    window.__esAllAt = performance.now(); obs.disconnect();
  }
}).observe(document, {attributes: true, subtree: true,
  attributeFilter: ["data-ready", "data-drawn"]});
"""


def probe_page(browser, page_path: Path, cells: NumberedCells, *, hovers: int, shot: Path | None):
    """Open ``page_path`` offline and measure: all points on screen, hover to the right
    picture, box selection, pin and decision redraw. ``shot``: a screenshot with a hover card
    open."""
    n = len(cells)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_offline(True)
    context.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
    failed: list[str] = []
    page = context.new_page()
    page.on("requestfailed", lambda r: failed.append(r.url[:120]))
    page.add_init_script(f"window.__esN = {n};" + _READY_CLOCK)
    out: dict = {"points": n}
    try:
        t0 = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="commit", timeout=600_000)
        page.wait_for_function(
            "() => document.body && document.body.dataset.ready === '1'",
            timeout=600_000,
            polling=100,
        )
        # a renderer may draw in passes: wait for the frame with every point (if it never
        # comes, the points it did draw are reported)
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function("() => window.__esAllAt !== undefined", timeout=120_000)
        wall = time.perf_counter() - t0
        clock = page.evaluate(
            "() => ({all: window.__esAllAt, drawn: Number(document.body.dataset.drawn),"
            " first: window.embedscope.timing.firstFrameMs})"
        )
        out["seconds_all_on_screen"] = (
            round(clock["all"] / 1000, 2)
            if clock["all"] is not None
            else f"n/a (only {clock['drawn']} of {n} drawn)"
        )
        out["seconds_all_on_screen_wall"] = round(wall, 2)
        out["drawn"] = clock["drawn"]
        out["first_frame_ms"] = round(clock["first"], 1)
        out |= hover_probe(page, cells, hovers)
        last = out.pop("hover_last", None)
        if shot is not None and last is not None:  # a hover card open, nothing selected yet
            _hover(page, last)
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            out["screenshot"] = str(shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot)
        out |= select_probe(page)
        out |= decision_probe(page)
    finally:
        out["failed_requests"] = len(failed)
        if failed:
            out["failed_request_examples"] = failed[:3]
        context.close()
    return out


def _plot_box(page) -> dict:
    return page.locator("#plot").bounding_box()


def _away(page) -> None:
    """The mouse off the map (over the toolbar above it): the hover card closes."""
    box = _plot_box(page)
    page.mouse.move(box["x"] + 5, max(1, box["y"] - 8))


#: The hover card (in the page, or in the JupyterLab panel's shadow root: ``window.__esRoot``).
_CARD = "(window.__esRoot || document).getElementById('hover')"
#: The hover card shows its picture, for a hover after the ``h``-th.
_SHOWN = f"""(h) => {{ const e = {_CARD};
  return !e.hidden && e.dataset.shown !== undefined && e.dataset.shown === e.dataset.index
    && window.embedscope.timing.hovers > h; }}"""


def _hover(page, i: int) -> dict | None:
    """Move the real mouse onto point ``i``; what the page then shows (None: not on screen;
    ``shown`` None: no card within 10 s)."""
    xy = page.evaluate("(i) => Array.from(window.embedscope.screenPositions([i]))", i)
    box = _plot_box(page)
    if not all(v is not None and np.isfinite(v) for v in xy) or not (
        0 <= xy[0] < box["width"] and 0 <= xy[1] < box["height"]
    ):
        return None
    _away(page)
    page.wait_for_function(f"() => {_CARD}.hidden", timeout=5_000)
    before = page.evaluate("() => window.embedscope.timing.hovers")
    t0 = time.perf_counter()
    page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
    try:
        page.wait_for_function(_SHOWN, arg=before, timeout=10_000, polling="raf")
    except PlaywrightTimeout:  # no card: counted as a miss, the next point is tried
        return {"target": i, "shown": None}
    wall = (time.perf_counter() - t0) * 1000
    seen = page.evaluate(
        "([x, y]) => { const E = window.embedscope;"
        f" return {{shown: Number({_CARD}.dataset.shown),"
        " ms: E.timing.hoverMs, at: E.pointAt(x, y)}; }",
        xy,
    )
    return {"target": i, "wall_ms": wall, **seen}


def hover_probe(page, cells: NumberedCells, tries: int, seed: int = 7) -> dict:
    """``tries`` random points hovered with the real mouse: latency to the picture shown
    (``timing.hoverMs``; and as Playwright saw it), and whether it is the right one: the point
    ``pointAt`` finds under the pixel, showing its own picture (:func:`matches` on a
    screenshot of the card's picture). In 3D most random points lie behind others, so the
    card rightly shows the one in front (``hovers_on_target`` counts the others)."""
    rng = np.random.default_rng(seed)
    targets = rng.choice(len(cells), min(tries, len(cells)), replace=False).tolist()
    ms, wall, results, off_screen, no_card = [], [], [], 0, 0
    last = None
    for i in targets:
        got = _hover(page, i)
        if got is None:
            off_screen += 1
            continue
        if got["shown"] is None:
            no_card += 1
            continue
        wall.append(got["wall_ms"])
        ms.append(got["ms"])
        shot = Image.open(io.BytesIO(page.locator(PICTURE).first.screenshot()))
        seen = matches(shot, cells, got["shown"])
        ok = seen["ok"] and got["at"] == got["shown"]
        results.append({"ok": ok, "target": got["shown"] == i, **seen})
        last = i
    _away(page)
    return {
        "hovers_tried": len(targets),
        "hovers_off_screen": off_screen,
        "hovers_without_card": no_card,
        "hovers_correct": f"{sum(r['ok'] for r in results)}/{len(results)}",
        "hovers_on_target": sum(r["target"] for r in results),
        # matches()'s ratio (right below 0.6, a wrong picture ~1 or more): the worst case
        # says how clear the verdicts were
        "picture_ratio_max": round(max(r["ratio"] for r in results), 2) if results else None,
        "hover_p50_ms": _pct(ms, 50),
        "hover_p95_ms": _pct(ms, 95),
        "hover_wall_p50_ms": _pct(wall, 50),
        "hover_wall_p95_ms": _pct(wall, 95),
        "hover_last": last,
    }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def drag_box(page, cx: float, cy: float, half: float, *, steps: int, timeout: int) -> float:
    """A real-mouse drag of the box tool (already chosen) around (cx, cy): the page's own
    ``timing.selectMs``, mouse-up to the selection shown."""
    before = page.evaluate("() => window.embedscope.timing.selections")
    page.mouse.move(cx - half, cy - half)
    page.mouse.down()
    page.mouse.move(cx + half, cy + half, steps=steps)
    page.mouse.up()
    page.wait_for_function(
        "(n) => window.embedscope.timing.selections > n", arg=before, timeout=timeout
    )
    return page.evaluate("() => window.embedscope.timing.selectMs")


def select_probe(page, sizes: tuple[float, ...] = (0.1, 0.25, 0.5)) -> dict:
    """Box selections with the real mouse (key "b", drag): ``timing.selectMs`` of boxes of
    ``sizes`` times the map's width around its centre, and how many points the largest took."""
    page.keyboard.press("b")
    box = _plot_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    times, chosen = [], 0
    for s in sizes:
        half = s * min(box["width"], box["height"]) / 2
        times.append(drag_box(page, cx, cy, half, steps=5, timeout=120_000))
        chosen = page.evaluate("() => window.embedscope.selected().length")
    page.keyboard.press("Escape")
    return {
        "select_ms": round(float(np.median(times)), 1),
        "select_ms_max": round(max(times), 1),
        "selected_by_largest_box": chosen,
    }


_DECIDE = """async (i) => {
  const E = window.embedscope, t = E.timing, frame = () => new Promise((r) =>
    requestAnimationFrame(() => requestAnimationFrame(r)));
  let f = t.frames, t0 = performance.now();
  E.pin(i); await frame();
  const pin = {wall: performance.now() - t0, frame: t.frames > f ? t.frameMs : null};
  f = t.frames; t0 = performance.now();
  const refused = E.edit({op: "label", rows: [i], value: "bench-relabelled"}); await frame();
  const edit = {wall: performance.now() - t0, frame: t.frames > f ? t.frameMs : null};
  return {pin: pin, edit: edit, refused: refused || ""};
}"""


def decision_probe(page) -> dict:
    """Pin a point, then relabel it (``window.embedscope.edit``): the frame each one drew
    (``timing.frameMs``) and the in-page time to the second animation frame after it."""
    i = page.evaluate(
        "() => { const p = window.embedscope.screenPositions();"
        " for (let k = 0; k < p.length / 2; k++) if (p[2 * k] >= 0) return k;"
        " return 0; }"
    )
    got = page.evaluate(_DECIDE, i)
    frame = {k: got[k]["frame"] for k in ("pin", "edit")}
    return {
        "pin_frame_ms": round(frame["pin"], 1) if frame["pin"] is not None else "no frame",
        "pin_wall_ms": round(got["pin"]["wall"], 1),
        "decision_frame_ms": round(frame["edit"], 1) if frame["edit"] is not None else "no frame",
        "decision_wall_ms": round(got["edit"]["wall"], 1),
        "decision_refused": got["refused"],
    }


# ---- the live panel and the Dash app at 100,000 points ----------------------------------------


def served_speed(work: Path, n: int, probes: int = 200) -> dict:
    """The live panel and the Dash app on ``n`` points with real image files (the photo cells,
    written once under ``work``) ingested by the kit (which makes their thumbnail cache):
    per-point image time, figure time."""
    from embedscope.thumbs import ThumbnailCache

    points, nbrs = scale_points(n, seed=1)
    cells = NumberedCells(n, "photo")
    root = work / "images"
    t0 = time.perf_counter()
    write_cell_files(cells, points["path"].tolist(), root)
    out = {"points": n, "seconds_write_files": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    layout, manifest = dataset_layout(work, root)
    out["seconds_ingest"] = round(time.perf_counter() - t0, 1)  # cells made here, once
    points["sha256"] = points["path"].map(manifest.set_index("path")["sha256"])
    rng = np.random.default_rng(11)
    rows = rng.choice(n, min(probes, n), replace=False).tolist()
    print(f"[bench] explorer_scale: live panel at {n:,}", flush=True)
    out["live"] = live_speed(points, nbrs, cells, root, rows, ThumbnailCache(layout))
    print(f"[bench] explorer_scale: Dash app at {n:,}", flush=True)
    out["dash"] = dash_speed(layout, points, cells, rows)
    return out


def live_speed(
    points: pd.DataFrame,
    nbrs: np.ndarray,
    cells: NumberedCells,
    root: Path,
    rows: list[int],
    thumbnails,
) -> dict:
    """The JupyterLab panel's kernel side, built in-process on ``points`` with the dataset's
    thumbnail cache as 04_explore builds it: build, the data a view receives (bytes and
    messages of at most ``CHUNK_BYTES``), one thumbnail sheet served, a selection sent to the
    view. Drawing and hover happen in the browser (the page's explorer.js, measured above)."""
    from embedscope.explore.live import LiveExplorer

    t0 = time.perf_counter()
    live = LiveExplorer(points, root, neighbors=nbrs, thumbnails=thumbnails)
    built = time.perf_counter() - t0
    sent: list[int] = []
    live.send = lambda content, buffers=None: sent.append(sum(len(b) for b in buffers or []))
    t0 = time.perf_counter()
    chunks = live.send_data()
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    live._handle_custom_msg({"kind": "sheet", "k": 0}, [])
    sheet = (time.perf_counter() - t0) * 1000
    box = np.flatnonzero(points["x"].between(-1, 1) & points["y"].between(-1, 1)).tolist()
    t0 = time.perf_counter()
    live.select(box)
    select = (time.perf_counter() - t0) * 1000
    return {
        "seconds_build": round(built, 2),
        "data_mb": round(sum(chunks) / 1e6, 1),
        "data_messages": len(chunks) + 1,
        "largest_message_mb": round(max(chunks, default=0) / 1e6, 2),
        "seconds_send_data": round(data_s, 2),
        "sheet_ms": round(sheet, 1),
        "sheets": len(live._sheets),
        "select_ms": round(select, 1),
        "selected": len(box),
    }


def dash_speed(layout, points: pd.DataFrame, cells: NumberedCells, rows: list[int]) -> dict:
    """The Dash app over the dataset of :func:`dataset_layout`: ``create_app`` (it projects and
    analyses, unless an earlier bench left that cached in the work folder, as run-all leaves
    it for ``make serve``), then ``/thumb/<row>`` over HTTP (each picture checked against the
    cell of the point its file holds) and the figure of every point."""
    from werkzeug.serving import make_server

    from embedscope.explore.dash import create_app, figure
    from embedscope.store import load_embeddings

    cached = (layout.data_dir / "analysis").is_dir()  # as after run-all; else analysed here
    t0 = time.perf_counter()
    app = create_app(layout, method="pca", dims=3)
    started = time.perf_counter() - t0
    number = [int(Path(p).stem) for p in load_embeddings(layout).rows["path"]]  # row -> point
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    thumb, right = [], 0
    try:
        for row in rows:
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/thumb/{row}", timeout=30) as r:
                body = r.read()
            thumb.append((time.perf_counter() - t0) * 1000)
            right += matches(Image.open(io.BytesIO(body)), cells, number[row])["ok"]
    finally:
        server.shutdown()
    t0 = time.perf_counter()
    body = figure(points).to_json()
    drawn = time.perf_counter() - t0
    return {
        "seconds_create_app": round(started, 1),
        "analysis_cached": cached,
        "thumb_p50_ms": _pct(thumb, 50),
        "thumb_p95_ms": _pct(thumb, 95),
        "thumb_correct": f"{right}/{len(rows)}",
        "figure_ms": round(drawn * 1000, 1),
        "figure_mb": round(len(body) / 1e6, 2),
    }


def dataset_layout(work: Path, root: Path):
    """A dataset whose manifest (and thumbnail cache) is the kit's own ingest of ``root`` and
    whose embeddings are clustered 32-d vectors written through the embedding store (no model
    is run), each image's vector near its blob's centre; and its manifest."""
    from embedscope.ingest import ingest
    from embedscope.layout import Layout, write_json
    from embedscope.store import model_key, write_outputs, write_shard

    layout = Layout("scale", work / "data", work / "reports")
    manifest = ingest(str(root), layout)
    ok = manifest[manifest["status"] == "ok"]
    key = model_key("synthetic-32d", "explorer_scale", "none")
    out_dir = layout.embeddings_dir(key)
    if not (out_dir / "vectors.npy").is_file():
        rng = np.random.default_rng(2)
        centres = rng.normal(size=(20, 32)).astype(np.float32) * 3
        blob = ok["label"].str.slice(5).astype(int).to_numpy()
        vecs = centres[blob] + rng.normal(size=(len(ok), 32)).astype(np.float32)
        done = dict(zip(ok["sha256"], vecs, strict=True))
        write_shard(out_dir / "shards", list(done), list(done.values()), {}, "synthetic")
        write_outputs(ok, done, out_dir, force=True)
        index = {"latest": key, "by_model": {"synthetic-32d": key}}
        write_json(layout.data_dir / "embeddings" / "index.json", index)
    return layout, manifest


# ---- the section ----------------------------------------------------------------------------


def explorer_scale(
    out: Path,
    sizes: list[int],
    *,
    hovers: int = 200,
    served: int = 100_000,
    lab: list[int] | None = None,
):
    """Every measurement of the section. The pages' report folders are written into
    ``out/explorer-scale-work/photo-<n>/`` (replaced on each run, kept afterwards to be opened:
    about 1.1 GB at a million points); the Dash/live dataset there is kept between runs.
    ``lab``: point counts of the live panel in a real JupyterLab (``bench_explorer_lab``)."""
    from playwright.sync_api import sync_playwright

    work = out / "explorer-scale-work"
    # the machine's load says how much of it others took (times move with it)
    results: dict = {"targets_at_1m": TARGETS, "cpus": os.cpu_count()}
    results["load_average_start"] = round(os.getloadavg()[0], 2)
    sizes = sorted(sizes)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
        try:
            for n in sizes:
                results[f"{n}_points"] = one_size(browser, work, out, n, hovers, n == sizes[-1])
            if lab:
                from bench_explorer_lab import lab_rows

                results["jupyterlab"] = lab_rows(browser, work, lab, hovers)
        finally:
            browser.close()
    emoji_n = min(sizes)
    print(f"[bench] explorer_scale: emoji cells at {emoji_n:,}", flush=True)
    points, nbrs = scale_points(emoji_n)
    folder = work / f"emoji-{emoji_n}"
    shutil.rmtree(folder, ignore_errors=True)
    emoji = write_page(points, nbrs, NumberedCells(emoji_n, "emoji"), folder)
    emoji.pop("page")
    results[f"{emoji_n}_points_emoji"] = emoji
    shutil.rmtree(folder, ignore_errors=True)
    if served:
        results["served"] = served_speed(work / f"served-{served}", served)
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    return results


def one_size(browser, work: Path, out: Path, n: int, hovers: int, screenshot: bool) -> dict:
    print(f"[bench] explorer_scale: {n:,} points (photo cells)", flush=True)
    t0 = time.perf_counter()
    points, nbrs = scale_points(n)
    prepared = time.perf_counter() - t0
    cells = NumberedCells(n, "photo")
    folder = work / f"photo-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    written = write_page(points, nbrs, cells, folder)
    written["seconds_points_and_neighbours"] = round(prepared, 1)
    page = written.pop("page")
    print(f"[bench] explorer_scale: probing {n:,} points in Chromium", flush=True)
    shot = out / f"explorer-{_short(n)}.png" if screenshot else None
    probed = probe_page(browser, page, cells, hovers=hovers, shot=shot)
    said = ("seconds_all_on_screen", "hovers_correct", "hover_p95_ms", "select_ms")
    print(f"[bench] explorer_scale: {n:,} points:", {k: probed.get(k) for k in said}, flush=True)
    return written | probed


def _short(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def explorer_scale_table(results: dict) -> str:
    """The section's markdown: per size, each measure beside its target."""
    sizes = [k for k in results if k.endswith(("points", "emoji"))]
    lines = [
        f"explorer_scale on {results.get('cpus')} CPUs, load average "
        f"{results.get('load_average_start')} at the start, {results.get('load_average_end')} "
        "at the end (times move with the load; targets are issue 20's, for 1,000,000 points)",
        "",
        "| explorer_scale | " + " | ".join(sizes) + " | target at 1M |",
        "|---" * (len(sizes) + 2) + "|",
    ]
    for key in dict.fromkeys(k for s in sizes for k in results[s]):
        if key in ("points", "failed_request_examples"):
            continue
        row = [str(results[s].get(key, "")) for s in sizes]
        target = results["targets_at_1m"].get(key, "")
        lines.append(f"| {key} | " + " | ".join(row) + f" | {target} |")
    if "served" in results:
        served = results["served"]
        lines += ["", f"| served at {served['points']:,} points | value |", "|---|---|"]
        for key, value in served.items():
            if isinstance(value, dict):
                lines += [f"| {key}: {k} | {v} |" for k, v in value.items()]
            elif key != "points":
                lines.append(f"| {key} | {value} |")
    if results.get("jupyterlab"):
        rows = results["jupyterlab"]
        lines += ["", "| live panel in JupyterLab | " + " | ".join(rows) + " |"]
        lines.append("|---" * (len(rows) + 1) + "|")
        for key in dict.fromkeys(k for r in rows.values() for k in r):
            if key not in ("points", "console_error_examples"):
                lines.append(
                    f"| {key} | " + " | ".join(str(r.get(key, "")) for r in rows.values()) + " |"
                )
    return "\n".join(lines) + "\n"
