"""Thumbnails: one cell per image, packed into sprite atlases for the page and served as JPEG
to the live panel, the Dash routes and the analyst tables."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image, ImageOps

from embedscope.images import load_rgb

#: Atlas cell codes for points without a picture.
UNREADABLE, NO_THUMBNAIL = -2, -1
#: Cells per atlas side: 64 x 64 cells of 64 px is 4096 px, within every browser's image limit.
ATLAS_COLS = 64
#: WebP, not JPEG: on 10,000 photo thumbnails JPEG q80 made a 20.1 MB page, WebP q70 (method 6,
#: same look at this size) 14.8 MB including the 4.8 MB plotly.js, and 15.8 MB on noisier
#: generated images (make bench), so q60 keeps a margin. Every current browser decodes WebP.
ATLAS_FORMAT, ATLAS_QUALITY = "WEBP", 60
#: From this many images thumbnails are made in worker processes (threads below: no start-up).
PROCESS_POOL_MIN = 256


def build_atlases(
    paths: list[Path], size: int = 64, cols: int = ATLAS_COLS
) -> tuple[list[str], list[int]]:
    """Sprite atlases (data URIs, ``cols`` x ``cols`` cells each) and each path's cell number,
    ``UNREADABLE`` where the file does not decode. Full sheets are encoded on a thread while
    the next one fills."""
    per_atlas = cols * cols
    index: list[int] = []
    sheets: list[Future[str]] = []
    sheet = Image.new("RGB", (1, 1))
    filled = 0
    with ThreadPoolExecutor(2) as encoder:
        for raw in _cells(paths, size):
            if raw is None:
                index.append(UNREADABLE)
                continue
            k = filled % per_atlas
            if k == 0:
                sheet = Image.new("RGB", (cols * size, cols * size), (255, 255, 255))
            sheet.paste(
                Image.frombytes("RGB", (size, size), raw), ((k % cols) * size, (k // cols) * size)
            )
            index.append(filled)
            filled += 1
            if k == per_atlas - 1:
                sheets.append(encoder.submit(_encode, sheet))
        if filled % per_atlas:  # the last, partly filled sheet keeps only the rows it uses
            rows = -(-(filled % per_atlas) // cols)
            sheets.append(encoder.submit(_encode, sheet.crop((0, 0, cols * size, rows * size))))
        return [f.result() for f in sheets], index


def _cells(paths: list[Path], size: int) -> Iterator[bytes | None]:
    """Thumbnail cells in order, decoded on every core.

    Processes for big folders: on the 2-CPU build box, 2,000 photo JPEGs took 1.41 s serial,
    0.96 s on 2 threads and 0.77 s on 2 processes (1,440 WebP icons: 1.66 / 1.02 / 0.90 s), as
    the per-image Python work holds the GIL even though Pillow releases it to decode and resize.
    Small lists stay on threads, where no worker has to start.
    """
    workers = os.cpu_count() or 1
    work = partial(_cell_bytes, size=size)
    if len(paths) < PROCESS_POOL_MIN or workers == 1:
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(work, paths)
    else:
        chunk = max(8, min(64, len(paths) // (workers * 8)))
        with ProcessPoolExecutor(workers) as pool:
            yield from pool.map(work, paths, chunksize=chunk)


def _cell_bytes(path: Path, size: int) -> bytes | None:
    """A cell as raw RGB bytes: 12 KB that cross a process boundary faster than a PIL image."""
    cell = thumbnail_cell(path, size)
    return None if cell is None else cell.tobytes()


def thumbnail_cell(path: Path, size: int) -> Image.Image | None:
    """A ``size`` x ``size`` cell: the whole image scaled to fit, centred on white; None when
    the file is unreadable. JPEGs decode at reduced scale (``draft``), ~8x faster on photos."""
    try:
        im = load_rgb(path, draft=(size, size))
    except ValueError:
        return None
    im.thumbnail((size, size), Image.Resampling.BICUBIC)
    if im.width < size and im.height < size:  # small icons fill the cell instead of a dot
        im = ImageOps.contain(im, (size, size), Image.Resampling.BICUBIC)
    cell = Image.new("RGB", (size, size), (255, 255, 255))
    cell.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return cell


def thumbnail_jpeg(path: Path, size: int, quality: int = 85) -> bytes | None:
    """:func:`thumbnail_cell` as JPEG bytes, for the live panel, the Dash routes and tables."""
    cell = thumbnail_cell(path, size)
    if cell is None:
        return None
    buf = io.BytesIO()
    cell.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def preview_jpeg(path: Path, max_side: int = 640, quality: int = 88) -> bytes | None:
    """The image itself, scaled down to fit ``max_side`` (never up) with its aspect kept: the
    larger view of a clicked point, read from the original file; None when unreadable."""
    try:
        im = load_rgb(path, draft=(max_side, max_side))
    except ValueError:
        return None
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _encode(sheet: Image.Image) -> str:
    buf = io.BytesIO()
    options = {"method": 6} if ATLAS_FORMAT == "WEBP" else {"optimize": True}
    sheet.save(buf, format=ATLAS_FORMAT, quality=ATLAS_QUALITY, **options)
    mime = f"image/{ATLAS_FORMAT.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
