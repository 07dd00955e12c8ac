"""Thumbnails for the four views: every point's cell packed into sprite sheets for the page,
and served as JPEG to the live panel, the Dash routes and the analyst tables.

Cells come from the dataset's thumbnail cache (:mod:`embedscope.thumbs`, made in ingest's
decoding pass) when there is one, so a page of a million points decodes no original image;
the originals are decoded only for what the cache lacks.
"""

from __future__ import annotations

import base64
import io
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from embedscope.images import load_rgb
from embedscope.layout import os_path, write_atomic
from embedscope.thumbs import (
    CELL_SIZE,
    ThumbnailCache,
    as_images,
    cells_from_files,
    decode_cell,
    thumbnail_cell,
)

#: Cell codes for points without a picture.
UNREADABLE, NO_THUMBNAIL = -2, -1
#: Cells per sheet side: 16 x 16 cells of 64 px is a 1024 px sheet, ~120 KB, which a browser
#: decodes in ~15 ms, so a hover never waits for a large decode.
ATLAS_COLS = 16
#: WebP quality and method of a sheet. A 1024 px sheet of 256 photo cells (2 shared cores):
#: method 0: 151 KiB in 22 ms, 2: 126 KiB in 33 ms, 4: 121 KiB in 75 ms, 6: 114 KiB in 154 ms
#: (the sample's emoji: 160, 121, 117, 111 KiB in 24, 34, 73, 173 ms). Method 2 is the knee:
#: 10% larger than method 6 at a fifth of the time, 2 minutes of CPU for a million points.
#: Quality 60: about 500 bytes a cell, photos and emoji alike.
SHEET_QUALITY, SHEET_METHOD = 60, 2
#: Sheets are encoded in worker processes when there is more than one (the encoder holds the
#: GIL); at most this many sheets per worker wait in memory.
_IN_FLIGHT = 2
_END = object()

#: A point's cell: a picture, an encoded image, or None (unreadable).
Cell = Image.Image | bytes | None
#: Where a page's cells come from (:func:`thumbnail_sheets`).
Thumbnails = ThumbnailCache | Iterable[Cell] | None


def build_sheets(
    cells: Iterable[Cell],
    *,
    size: int,
    cols: int,
    out_dir: str | Path | None = None,
    prefix: str = "",
    stem: str = "",
    workers: int | None = None,
    quality: int = SHEET_QUALITY,
) -> tuple[list[str], np.ndarray]:
    """Sprite sheets of ``cols`` x ``cols`` cells of ``size`` px, and each point's cell number.

    ``cells`` (in point order) are pictures (size x size, RGB), encoded images (bytes, e.g. a
    cached cell) or None for a point whose image is unreadable (its number is
    :data:`UNREADABLE`; readable cells are numbered on, row-major, sheet k holding cells
    k*cols*cols onwards). Without ``out_dir`` the sheets are WebP data URIs; with it they are
    files ``<stem><k>.webp`` written there atomically and the strings returned are
    ``prefix + "<stem><k>.webp"`` (a page names its sheets by ``stem``, so a new page's sheets
    never overwrite those the page still in place shows). The last sheet keeps only the rows
    it uses; ``quality`` is the WebP quality (the review queue's larger cells get more).
    """
    per_sheet = cols * cols
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    index: list[int] = []
    items: list[Image.Image | bytes] = []
    done: list[str] = []
    pending: deque[Future[str]] = deque()
    pool: ProcessPoolExecutor | None = None

    def job(k: int) -> tuple:
        dest = None if out is None else str(out / f"{stem}{k}.webp")
        return (list(items), size, cols, dest, f"{prefix}{stem}{k}.webp", quality)

    try:
        for cell in cells:
            if cell is None:
                index.append(UNREADABLE)
                continue
            index.append(len(done) * per_sheet + len(pending) * per_sheet + len(items))
            items.append(cell)
            if len(items) < per_sheet:
                continue
            if pool is None and workers > 1:  # a second sheet is coming: worth the workers
                pool = ProcessPoolExecutor(workers)
            if pool is None:
                done.append(_sheet(*job(len(done))))
            else:
                pending.append(pool.submit(_sheet, *job(len(done) + len(pending))))
                while len(pending) > _IN_FLIGHT * workers:
                    done.append(pending.popleft().result())
            items = []
        k = len(done) + len(pending)
        done += [f.result() for f in pending]
        if items:
            done.append(_sheet(*job(k)))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done, np.asarray(index, dtype=np.int32)


def _sheet(
    items: list, size: int, cols: int, dest: str | None, url: str, quality: int = SHEET_QUALITY
) -> str:
    """One sheet: paste, encode, and either write it to ``dest`` (returning ``url``) or
    return it as a data URI. Runs in a worker process."""
    rows = -(-len(items) // cols)
    sheet = Image.new("RGB", (cols * size, rows * size), (255, 255, 255))
    for k, item in enumerate(items):
        cell = item if isinstance(item, Image.Image) else decode_cell(item)
        if cell.size != (size, size):
            cell = cell.resize((size, size), Image.Resampling.BICUBIC)
        sheet.paste(cell, ((k % cols) * size, (k // cols) * size))
    buf = io.BytesIO()
    sheet.save(buf, format="WEBP", quality=quality, method=SHEET_METHOD)
    data = buf.getvalue()
    if dest is None:
        return f"data:image/webp;base64,{base64.b64encode(data).decode('ascii')}"
    write_atomic(dest, lambda tmp: tmp.write_bytes(data), len(data))
    return url


def thumbnail_sheets(
    points: pd.DataFrame,
    image_root: str | Path,
    thumbnails: Thumbnails = None,
    folder: str | Path | None = None,
    *,
    size: int = CELL_SIZE,
    stem: str = "",
) -> tuple[list[str], np.ndarray]:
    """Every point's thumbnail on sheets (:func:`build_sheets`): the sheet URLs and each
    point's cell number.

    ``thumbnails`` is the dataset's :class:`~embedscope.thumbs.ThumbnailCache` (cells by the
    points' ``sha256``; those it lacks are decoded from the files under ``image_root`` and
    added to it), any iterable of cells in point order (pictures, encoded bytes or None), or
    None: every cell decoded from its file. With ``folder`` (the page's ``-files`` folder) the
    sheets are files ``folder/thumbs/<stem><k>.webp``, addressed relative to the page; else
    data URIs.
    """
    n = len(points)
    files = [os_path(image_root, p) for p in points["path"].astype(str)]
    cells: Iterable[Cell]
    if isinstance(thumbnails, ThumbnailCache) and thumbnails.size == size:
        shas = points["sha256"].tolist() if "sha256" in points.columns else None
        cells = thumbnails.cells_for(shas, files)
    elif thumbnails is None or isinstance(thumbnails, ThumbnailCache):
        cells = as_images(cells_from_files(files, size), size)
    else:
        if isinstance(thumbnails, Sized) and len(thumbnails) != n:
            raise ValueError(f"thumbnails holds {len(thumbnails)} cells for {n} points")
        cells = _exactly(thumbnails, n)
    if folder is None:
        return build_sheets(cells, size=size, cols=ATLAS_COLS)
    folder = Path(folder)
    return build_sheets(
        cells,
        size=size,
        cols=ATLAS_COLS,
        out_dir=folder / "thumbs",
        prefix=f"{quote(folder.name)}/thumbs/",
        stem=stem,
    )


#: The review queue's larger cells (:func:`large_sheets`): 192 px shows the blur and small
#: details a 64-px cell hides; 8 x 8 of them make a 1536 px sheet, at a higher WebP quality so
#: the encoder's own smoothing is not taken for blur.
LARGE_CELL, LARGE_COLS, LARGE_QUALITY = 192, 8, 80


def large_sheets(
    paths: Iterable[str],
    image_root: str | Path,
    folder: str | Path | None = None,
    *,
    stem: str = "",
    size: int = LARGE_CELL,
) -> tuple[list[str], np.ndarray]:
    """Sheets of larger cells for a few images (the flagged ones: a minority), decoded from
    their originals (the thumbnail cache holds 64-px cells only), and each one's cell number
    (:data:`UNREADABLE` for an original that is gone or unreadable: the page then shows its
    small cell). With ``folder`` the sheets are files ``folder/thumbs/<stem><k>.webp``."""
    files = [os_path(image_root, p) for p in paths]
    cells = as_images(cells_from_files(files, size), size)  # decoded on every core
    where: dict = {}
    if folder is not None:
        folder = Path(folder)
        where = {"out_dir": folder / "thumbs", "prefix": f"{quote(folder.name)}/thumbs/"}
    return build_sheets(
        cells, size=size, cols=LARGE_COLS, stem=stem, quality=LARGE_QUALITY, **where
    )


def _exactly(cells: Iterable[Cell], n: int) -> Iterator[Cell]:
    """``cells``, checked to hold one cell per point."""
    it = iter(cells)
    for i in range(n):
        cell = next(it, _END)
        if cell is _END:
            raise ValueError(f"thumbnails gave {i} cells for {n} points")
        yield cell
    if next(it, _END) is not _END:
        raise ValueError(f"thumbnails gave more than {n} cells for {n} points")


def point_jpeg(
    path: Path, size: int, thumbnails: ThumbnailCache | None = None, sha256: str | None = None
) -> bytes | None:
    """A point's thumbnail as a ``size`` px JPEG: its cached cell (scaled to ``size``) when the
    cache has it, so serving it decodes no original; else made from the file."""
    cached = thumbnails.cells([sha256])[0] if thumbnails is not None and sha256 else None
    if cached is None:
        return thumbnail_jpeg(path, size)
    if cached.size != (size, size):
        cached = cached.resize((size, size), Image.Resampling.BICUBIC)
    return _jpeg(cached)


def thumbnail_jpeg(path: Path, size: int, quality: int = 85) -> bytes | None:
    """:func:`~embedscope.thumbs.thumbnail_cell` as JPEG bytes, for the live panel, the Dash
    routes and tables."""
    cell = thumbnail_cell(path, size)
    return None if cell is None else _jpeg(cell, quality)


def _jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def preview_jpeg(path: Path, max_side: int = 640, quality: int = 88) -> bytes | None:
    """The image itself, scaled down to fit ``max_side`` (never up) with its aspect kept: the
    larger view of a clicked point, read from the original file; None when unreadable."""
    try:
        im = load_rgb(path, draft=(max_side, max_side))
    except ValueError:
        return None
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _jpeg(im, quality)
