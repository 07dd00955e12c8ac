"""Thumbnail cells: made in ingest's decoding pass, kept by content, read back by the page (its
sheets, inline or as files beside it), the live panel and the Dash routes without decoding an
original again."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from helpers import make_classes
from PIL import Image

from embedscope.explore import UNREADABLE, build_sheets, write_explorer
from embedscope.explore.atlas import ATLAS_COLS, point_jpeg, thumbnail_sheets
from embedscope.explore.live import LiveExplorer
from embedscope.ingest import ingest
from embedscope.layout import Layout, os_path
from embedscope.thumbs import (
    ThumbnailCache,
    decode_cell,
    fit_cell,
    read_thumbnails,
    thumbnail_cell,
    thumbnail_facts,
)

#: Largest mean absolute difference (0..255) between a cell read back and the cell made from
#: the file: two lossy encodings (the cache's, then the sheet's) and another resampling path.
CLOSE = 12.0


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Layout, pd.DataFrame]:
    """Colour classes, a photo-like JPEG turned by its EXIF orientation, a wide image, a
    16-bit PNG and a corrupt file; ingested."""
    images = make_classes(tmp_path / "images", per_class=3, size=40)
    grad = np.linspace(0, 255, 120 * 80 * 3).reshape(80, 120, 3).astype("uint8")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(grad).save(images / "red" / "turned.jpg", quality=92, exif=exif.tobytes())
    Image.new("RGB", (300, 30), (30, 200, 60)).save(images / "green" / "wide.jpg")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(images / "blue" / "deep.png")
    (images / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    layout = Layout("cells", tmp_path / "data", tmp_path / "reports")
    return images, layout, ingest(str(images), layout)


def _points(manifest: pd.DataFrame, *, ok_only: bool = True) -> pd.DataFrame:
    rows = manifest[manifest["status"] == "ok"] if ok_only else manifest
    rows = rows.reset_index(drop=True)
    return pd.DataFrame(
        {
            "x": np.arange(len(rows), dtype=float),
            "y": np.zeros(len(rows)),
            "z": np.zeros(len(rows)),
            "path": rows["path"],
            "label": rows["label"],
            "sha256": rows["sha256"],
        }
    )


def _difference(a: Image.Image | np.ndarray, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


def _sheet_cells(page: Path, index: list[int], size: int = 64) -> list[np.ndarray | None]:
    """Each point's cell cut out of the sheet files the page refers to."""
    urls = _page_data(page)["sheets"]
    sheets: dict[int, np.ndarray] = {}
    out: list[np.ndarray | None] = []
    for cell in index:
        if cell < 0:
            out.append(None)
            continue
        k, at = divmod(cell, ATLAS_COLS * ATLAS_COLS)
        if k not in sheets:
            sheets[k] = np.asarray(Image.open(page.parent / unquote(urls[k])).convert("RGB"))
        r, c = divmod(at, ATLAS_COLS)
        out.append(sheets[k][r * size : (r + 1) * size, c * size : (c + 1) * size])
    return out


def _page_data(page: Path) -> dict:
    """The page's data, with ``thumb`` (a list, or a typed array in base64) as a list and
    ``sheets`` (in the data, or in the page's CSS as one class per sheet) as a list."""
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="es-data">(.*?)</script>', text, re.S).group(1))
    thumb = data["thumb"]
    if isinstance(thumb, dict):
        thumb = np.frombuffer(base64.b64decode(thumb["b64"]), "<" + thumb["dtype"]).tolist()
    sheets = data.get("sheets")
    if sheets is None:
        sheets = re.findall(r"\.es-a\d+\{background-image:url\(([^)]*)\)\}", text)
    return {**data, "thumb": thumb, "sheets": sheets}


def test_cells_are_made_in_ingest_and_the_page_needs_no_original(dataset, tmp_path) -> None:
    images, layout, manifest = dataset
    ok = manifest[manifest["status"] == "ok"]
    assert manifest.set_index("path").loc["blue/broken.jpg", "status"] == "skipped"
    facts = thumbnail_facts(layout)
    assert facts["cells"] == len(ok) and facts["from_originals"] == 0 and facts["bytes"] > 0
    chunks = sorted(layout.thumbs.iterdir())

    # a re-run decodes nothing and writes nothing
    ingest(str(images), layout)
    assert sorted(layout.thumbs.iterdir()) == chunks

    # each cached cell is its file's cell: the turned photo turned, the 16-bit PNG scaled
    wanted = {p: thumbnail_cell(os_path(images, p), 64) for p in ok["path"]}
    for path, cell in zip(ok["path"], read_thumbnails(layout, ok["sha256"].tolist()), strict=True):
        assert cell is not None and cell.size == (64, 64)
        assert _difference(cell, wanted[path]) < CLOSE, path
    with Image.open(images / "red" / "turned.jpg") as raw:  # as stored, not as shown
        unturned = fit_cell(raw.convert("RGB"), 64)
    assert _difference(wanted["red/turned.jpg"], unturned) > 3 * CLOSE

    # the originals gone, a folder-mode page still shows every point's own picture
    moved = images.rename(tmp_path / "elsewhere")
    points = _points(manifest)
    out = write_explorer(
        points, images, tmp_path / "report" / "explorer.html",
        thumbnails=ThumbnailCache(layout), inline_limit=4,
    )  # fmt: skip
    data = _page_data(out)
    sheets = out.parent / "explorer-files" / "thumbs"
    stem = data["sheets"][0].removeprefix("explorer-files/thumbs/").removesuffix("0.webp")
    names = [f"{stem}{k}.webp" for k in range(len(data["sheets"]))]
    assert data["sheets"] == [f"explorer-files/thumbs/{name}" for name in names]
    assert sorted(p.name for p in sheets.iterdir()) == sorted(names), "only this page's sheets"
    assert min(data["thumb"]) >= 0, "every point has its thumbnail"
    cut = _sheet_cells(out, data["thumb"])
    for path, got in zip(points["path"], cut, strict=True):
        assert _difference(got, wanted[path]) < CLOSE, path
        others = [_difference(got, w) for p, w in wanted.items() if p != path]
        assert _difference(got, wanted[path]) <= min(others), f"{path} shows another picture"
    assert thumbnail_facts(layout)["from_originals"] == 0
    assert sorted(layout.thumbs.iterdir()) == chunks, "nothing had to be added"
    moved.rename(images)


def test_cells_missing_from_the_cache_come_from_the_originals_once(dataset, tmp_path) -> None:
    images, layout, manifest = dataset
    shutil.rmtree(layout.thumbs)  # a dataset ingested before the cache existed
    points = _points(manifest, ok_only=False)  # the broken file too
    cache = ThumbnailCache(layout)
    first = _page_data(write_explorer(points, images, tmp_path / "a.html", thumbnails=cache))
    broken = points.index[points["path"] == "blue/broken.jpg"][0]
    assert first["thumb"][broken] == UNREADABLE
    assert sum(t >= 0 for t in first["thumb"]) == len(points) - 1
    facts = thumbnail_facts(layout)
    assert facts["cells"] == facts["from_originals"] == len(points) - 1
    chunks = sorted(layout.thumbs.iterdir())
    second = _page_data(write_explorer(points, images, tmp_path / "b.html", thumbnails=cache))
    assert second["thumb"] == first["thumb"] and sorted(layout.thumbs.iterdir()) == chunks
    # inline, the same cells as data URIs
    uri = second["sheets"][0]
    assert uri.startswith("data:image/webp;base64,")
    sheet = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert sheet.size == (ATLAS_COLS * 64, -(-(len(points) - 1) // ATLAS_COLS) * 64)


def test_sheets_hold_every_cell_in_order_whoever_encodes_them(tmp_path) -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 255, (40, 2, 2, 3), dtype=np.uint8)  # four 8-px squares each
    pictures = [Image.fromarray(b).resize((16, 16), Image.Resampling.NEAREST) for b in blocks]
    cells: list = []
    source: list[int | None] = []  # which picture each cell is
    for k, im in enumerate(pictures):
        buf = io.BytesIO()
        im.save(buf, format="PNG")  # encoded cells (as the cache hands them) and pictures mix
        cells.append(buf.getvalue() if k % 3 else im)
        source.append(k)
        if k % 7 == 3:
            cells.append(None)
            source.append(None)
    one = build_sheets(cells, size=16, cols=4, workers=1)
    two = build_sheets(cells, size=16, cols=4, workers=2)
    assert one[0] == two[0] and (one[1] == two[1]).all(), "same sheets, same bytes"
    sheets, index = one
    assert index.dtype == np.int32 and (index == UNREADABLE).sum() == cells.count(None)
    assert index[index >= 0].tolist() == list(range(40))
    assert len(sheets) == 3  # 16 + 16 + 8 cells

    urls, _ = build_sheets(
        cells, size=16, cols=4, out_dir=tmp_path / "thumbs", prefix="f/thumbs/", stem="s-"
    )
    assert urls == ["f/thumbs/s-0.webp", "f/thumbs/s-1.webp", "f/thumbs/s-2.webp"]
    names = sorted(p.name for p in (tmp_path / "thumbs").iterdir())
    assert names == ["s-0.webp", "s-1.webp", "s-2.webp"]
    last = Image.open(tmp_path / "thumbs" / "s-2.webp")
    assert last.size == (64, 32), "the last sheet keeps only the rows it uses"
    for at, pos in enumerate(index.tolist()):
        if pos < 0:
            continue
        k, cell = divmod(pos, 16)
        sheet = np.asarray(Image.open(tmp_path / "thumbs" / f"s-{k}.webp").convert("RGB"), float)
        r, c = divmod(cell, 4)
        got = sheet[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
        own = cells[at] if isinstance(cells[at], Image.Image) else decode_cell(cells[at])
        assert _difference(got, own) < 2 * CLOSE  # lossy at 16 px, but each its own
        others = [_difference(got, p) for j, p in enumerate(pictures) if j != source[at]]
        assert _difference(got, own) < min(others)
    with pytest.raises(ValueError, match="3 cells for 4 points"):
        thumbnail_sheets(pd.DataFrame({"path": list("abcd")}), tmp_path, pictures[:3])


def test_live_panel_and_dash_thumbnails_come_from_the_cache(dataset, tmp_path) -> None:
    images, layout, manifest = dataset
    points = _points(manifest)
    row = int(points.index[points["path"] == "green/wide.jpg"][0])
    want = thumbnail_cell(os_path(images, "green/wide.jpg"), 64)
    images.rename(tmp_path / "elsewhere")
    cache = ThumbnailCache(layout)
    jpeg = point_jpeg(images / "green" / "wide.jpg", 160, cache, points["sha256"][row])
    served = Image.open(io.BytesIO(jpeg))
    assert served.format == "JPEG" and served.size == (160, 160)
    assert _difference(served.resize((64, 64)), want) < CLOSE
    assert point_jpeg(images / "green" / "wide.jpg", 160) is None, "no cache, no original: none"
    live = LiveExplorer(points, images, thumbnails=cache)  # the originals are elsewhere
    sent: list[tuple[dict, list]] = []
    live.send = lambda content, buffers=None: sent.append((content, buffers or []))
    thumb = live._data["thumb"]  # each point's cell, as the panel gets it
    cells = np.frombuffer(live._parts[thumb["buf"]], "<" + thumb["dtype"])
    cell, cols = int(cells[row]), ATLAS_COLS
    live._handle_custom_msg({"kind": "sheet", "k": cell // (cols * cols)}, [])
    ((_, (body,)),) = sent
    sheet = Image.open(io.BytesIO(bytes(body))).convert("RGB")
    at = cell % (cols * cols)
    box = (at % cols * 64, at // cols * 64, at % cols * 64 + 64, at // cols * 64 + 64)
    assert _difference(sheet.crop(box), want) < CLOSE  # the panel's cell, from the cache
