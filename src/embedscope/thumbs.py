"""Thumbnail cells: each image's small picture, made once in ingest's decoding pass and kept by
content hash, so the page, the live panel and the Dash app never decode the originals again.

A cell is the whole image scaled to fit ``size`` x ``size`` and centred on white. Ingest makes
it from the copy it already decoded for the image statistics and hands it to a
:class:`CellWriter`, which appends it to the dataset's cache ``data/<name>/thumbs/``: chunk
files of up to :data:`CHUNK_CELLS` WebP cells, each written atomically (fault point
``thumbs:write``) and never rewritten. A chunk is a header line, an index (raw sha256, offset,
length and CRC-32 per cell) and the cells' bytes; the header carries a digest of the index,
checked on every load, and each cell's CRC is checked when it is read. A damaged chunk is set
aside (one line) and its cells made again from the originals when next needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from embedscope.images import load_rgb, to_rgb
from embedscope.layout import Damaged, Layout, load_checked, set_aside, write_atomic

#: Side of a cell in pixels: the page's thumbnail size.
CELL_SIZE = 64
#: WebP quality and method of a cached cell. Measured on 64-px cells (2 shared cores): the
#: sample's emoji q60 578 B, q80 759 B; crops of scikit-learn's sample photos q60 555 B, q80
#: 752 B (wide crops), ~930 B at q80 as 4:3 photos; 0.3-0.5 ms each at method 4 (method 6: 5%
#: smaller, twice the time). q80, not less: the page re-encodes cells into its sheets, so the
#: cache keeps a margin.
CELL_QUALITY, CELL_METHOD = 80, 4
#: Cells per chunk file (about 3 MB).
CHUNK_CELLS = 4096
#: From this many files cells are decoded in worker processes (threads below: no start-up).
#: On the 2-CPU build box, 2,000 photo JPEGs took 1.41 s serial, 0.96 s on 2 threads and 0.77 s
#: on 2 processes: the per-image Python work holds the GIL while Pillow decodes.
PROCESS_POOL_MIN = 256
#: Files handed to the worker processes at a time.
_WINDOW = 8192

_MAGIC = b"embedscope-cells 1\n"
_INDEX = np.dtype([("sha", "S32"), ("offset", "<u8"), ("length", "<u4"), ("crc", "<u4")])
#: Longest header line read (a damaged chunk may have no line end at all).
_MAX_HEADER = 4096


def fit_cell(im: Image.Image, size: int) -> Image.Image:
    """An RGB ``im`` scaled to fit ``size`` x ``size`` (small icons scaled up to fill it instead
    of showing as a dot) and centred on white. ``im`` may be changed: pass a copy you own."""
    im.thumbnail((size, size), Image.Resampling.BICUBIC)
    if im.width < size and im.height < size:
        im = ImageOps.contain(im, (size, size), Image.Resampling.BICUBIC)
    cell = Image.new("RGB", (size, size), (255, 255, 255))
    cell.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return cell


def thumbnail_cell(path: str | Path, size: int) -> Image.Image | None:
    """The cell of the file at ``path``; None when it is unreadable. JPEGs decode at reduced
    scale (``draft``), ~8x faster on photos."""
    try:
        return fit_cell(load_rgb(path, draft=(size, size)), size)
    except ValueError:
        return None


def decoded_cell(im: Image.Image, reduced: Image.Image, size: int = CELL_SIZE) -> Image.Image:
    """The cell of an image ingest has decoded: ``im`` as decoded (its EXIF orientation
    applies) and ``reduced``, an RGB copy of it at most a few hundred pixels a side, which the
    cell is made from (and may change). A turned photo (rare) is turned at ``im``'s size."""
    if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        reduced = to_rgb(ImageOps.exif_transpose(im))
    return fit_cell(reduced, size)


def encode_cell(cell: Image.Image) -> bytes:
    buf = io.BytesIO()
    cell.save(buf, format="WEBP", quality=CELL_QUALITY, method=CELL_METHOD)
    return buf.getvalue()


def decode_cell(data: bytes) -> Image.Image:
    """A cell's picture from its encoded bytes (any format Pillow reads), as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def cells_from_files(
    paths: Sequence[Path], size: int, *, encoded: bool = False
) -> Iterator[tuple[bytes | None, float]]:
    """``(cell, seconds)`` of each file in order, decoded on every core: the cell as raw RGB
    bytes (12 KB at 64 px, which cross a process boundary faster than a PIL image), or as
    :func:`encode_cell` bytes when ``encoded``; None for an unreadable file. Small lists stay on
    threads, where no worker has to start."""
    workers = os.cpu_count() or 1
    work = partial(_file_cell, size=size, encoded=encoded)
    if len(paths) < PROCESS_POOL_MIN or workers == 1:
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(work, paths)
        return
    chunk = max(8, min(64, len(paths) // (workers * 8)))
    with ProcessPoolExecutor(workers) as pool:
        for lo in range(0, len(paths), _WINDOW):  # a bounded number of cells waits in memory
            yield from pool.map(work, paths[lo : lo + _WINDOW], chunksize=chunk)


def _file_cell(path: Path, size: int, encoded: bool) -> tuple[bytes | None, float]:
    t0 = time.perf_counter()
    cell = thumbnail_cell(path, size)
    data = None if cell is None else encode_cell(cell) if encoded else cell.tobytes()
    return data, time.perf_counter() - t0


@dataclass(frozen=True)
class _Chunk:
    path: Path
    header: dict
    start: int  # where the cells' bytes begin
    index: np.ndarray


def _read_chunk(path: Path) -> _Chunk:
    """A chunk's header and index, refused (:class:`Damaged`) unless they are what the chunk
    claims: its magic line, its index's digest, cells that lie inside the file."""
    with open(path, "rb") as fh:
        if fh.read(len(_MAGIC)) != _MAGIC:
            raise Damaged("not a thumbnail chunk")
        header = json.loads(fh.readline(_MAX_HEADER))
        if not isinstance(header, dict) or not isinstance(header.get("cells"), int):
            raise Damaged("the header does not say how many cells the chunk holds")
        raw = fh.read(header["cells"] * _INDEX.itemsize)
        start = fh.tell()
        size = os.fstat(fh.fileno()).st_size
    if hashlib.sha256(raw).hexdigest() != header.get("index"):
        raise Damaged("index differs from the digest written with it")
    index = np.frombuffer(raw, dtype=_INDEX)
    end = index["offset"].astype(np.int64) + index["length"]
    if len(index) and (end.max() + start != size or index["offset"].min() < 0):
        raise Damaged(f"cells end at {int(end.max()) + start} in a file of {size} bytes")
    return _Chunk(path, header, start, index)


def _raw(shas: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Hex digests as raw 32-byte keys, and which were digests at all (a skipped row has none)."""
    valid = np.array([isinstance(s, str) and len(s) == 64 for s in shas], dtype=bool)
    text = "".join(s if ok else "0" * 64 for s, ok in zip(shas, valid, strict=True))
    try:
        keys = np.frombuffer(bytes.fromhex(text), dtype="S32")
    except ValueError:  # a string that is not hex: look each up alone
        keys = np.array([_one(s) if ok else b"" for s, ok in zip(shas, valid, strict=True)], "S32")
        valid &= keys != b""
    return keys, valid


def _one(sha: str) -> bytes:
    try:
        return bytes.fromhex(sha)
    except ValueError:
        return b""


class ThumbnailCache:
    """The cells of one dataset by sha256 (``data/<name>/thumbs/``), read lazily; cells of
    another size or format in the folder are left alone, not taken for damage."""

    def __init__(self, folder: str | Path | Layout, size: int = CELL_SIZE) -> None:
        self.folder = folder.thumbs if isinstance(folder, Layout) else Path(folder)
        self.size = size
        self._loaded: tuple[list[_Chunk], np.ndarray, np.ndarray, np.ndarray] | None = None
        self._blobs: dict[Path, bytes] = {}  # the last chunks read whole

    def _index(self) -> tuple[list[_Chunk], np.ndarray, np.ndarray, np.ndarray]:
        """Every chunk, and sorted keys with each key's chunk and position in it."""
        if self._loaded is None:
            chunks = []
            for path in sorted(self.folder.glob("*.cells")):
                chunk = load_checked(path, _read_chunk)
                if chunk is not None and chunk.header.get("cell") == self.size:
                    chunks.append(chunk)
            keys = np.concatenate([c.index["sha"] for c in chunks] or [np.zeros(0, "S32")])
            which = np.repeat(np.arange(len(chunks)), [len(c.index) for c in chunks])
            row = np.concatenate([np.arange(len(c.index)) for c in chunks] or [np.zeros(0, int)])
            order = np.argsort(keys, kind="stable")
            self._loaded = (chunks, keys[order], which[order], row[order])
        return self._loaded

    def _find(self, shas: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Chunk number (-1: not cached) and position in it of each sha256."""
        _, keys, which, row = self._index()
        query, valid = _raw(shas)
        if not len(keys):
            return np.full(len(query), -1), np.zeros(len(query), int)
        at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        hit = valid & (keys[at] == query)
        return np.where(hit, which[at], -1), np.where(hit, row[at], 0)

    def has(self, shas: Sequence[str | None]) -> np.ndarray:
        """Whether each sha256 has a cell here."""
        return self._find(shas)[0] >= 0

    def encoded(self, shas: Sequence[str | None]) -> list[bytes | None]:
        """Each sha256's encoded cell, None where there is none (or its chunk is damaged)."""
        chunks = self._index()[0]
        which, rows = self._find(shas)
        out: list[bytes | None] = [None] * len(which)
        order = np.argsort(which, kind="stable")
        starts = np.searchsorted(which[order], np.arange(len(chunks) + 1))
        for c, chunk in enumerate(chunks):
            at = order[starts[c] : starts[c + 1]]
            if len(at):
                for i, data in zip(at.tolist(), self._read(chunk, rows[at]), strict=True):
                    out[i] = data
        return out

    def cells(self, shas: Sequence[str | None]) -> list[Image.Image | None]:
        """Each sha256's cell as an RGB picture, None where there is none."""
        return [None if d is None else decode_cell(d) for d in self.encoded(shas)]

    def _read(self, chunk: _Chunk, rows: np.ndarray) -> list[bytes | None]:
        """The cells at ``rows`` of ``chunk``, each checked against its CRC: many at once come
        from the whole chunk read once, a few from a seek each (a hover in the Dash app)."""
        entries = chunk.index[rows]
        try:
            if len(rows) >= 64 or chunk.path in self._blobs:
                blob = self._blob(chunk)
                got = [
                    blob[o : o + n]
                    for o, n in zip(entries["offset"], entries["length"], strict=True)
                ]
            else:
                with open(chunk.path, "rb") as fh:
                    got = []
                    for o, n in zip(
                        entries["offset"].tolist(), entries["length"].tolist(), strict=True
                    ):
                        fh.seek(chunk.start + o)
                        got.append(fh.read(n))
        except FileNotFoundError:  # set aside by a concurrent reader meanwhile
            return [None] * len(rows)
        if any(zlib.crc32(d) != c for d, c in zip(got, entries["crc"].tolist(), strict=True)):
            set_aside(chunk.path, "a cell differs from the checksum written with it")
            self._loaded, self._blobs = None, {}
            return [None] * len(rows)
        return got

    def _blob(self, chunk: _Chunk) -> bytes:
        if chunk.path not in self._blobs:
            if len(self._blobs) >= 4:
                self._blobs.pop(next(iter(self._blobs)))
            with open(chunk.path, "rb") as fh:
                fh.seek(chunk.start)
                self._blobs[chunk.path] = fh.read()
        return self._blobs[chunk.path]

    def writer(self, made_by: str) -> CellWriter:
        """A :class:`CellWriter` into this cache; ``made_by`` (``ingest``, ``originals``) is
        recorded with the cells, so the facts tell cells made in ingest's pass from those that
        cost a decode of the original."""
        return CellWriter(self, made_by)

    def cells_for(
        self, shas: Sequence[str | None] | None, files: Sequence[Path]
    ) -> Iterator[bytes | None]:
        """The encoded cell of each point in order (``shas`` and ``files`` per point): from
        the cache, or decoded from the file when the cache lacks it, and then cached."""
        n = len(files)
        shas = None if shas is None else list(shas)
        cached = self.has(shas) if shas is not None else np.zeros(n, bool)
        missing = np.flatnonzero(~cached)
        made = cells_from_files([files[i] for i in missing], self.size, encoded=True)
        block = 4 * CHUNK_CELLS
        with self.writer("originals") as writer:
            for lo in range(0, n, block):
                hi = min(n, lo + block)
                found = self.encoded(shas[lo:hi]) if shas is not None else [None] * (hi - lo)
                for i, data in enumerate(found, start=lo):
                    made_now = not cached[i] or data is None
                    if not cached[i]:
                        data, seconds = next(made)
                    elif data is None:  # its chunk was found damaged (and set aside) just now
                        data, seconds = _file_cell(files[i], self.size, encoded=True)
                    if made_now and shas is not None:
                        writer.add(shas[i], data, seconds)
                    yield data

    def facts(self) -> dict[str, float | int]:
        """What the cache holds and what its cells cost (for ``metrics.json``): cells, bytes on
        disk, seconds spent making them (summed over workers) and how many were made by
        decoding an original again instead of in ingest's pass."""
        chunks = self._index()[0]
        cells = sum(len(c.index) for c in chunks)
        size = sum(c.path.stat().st_size for c in chunks if c.path.exists())
        seconds = sum(float(c.header.get("seconds", 0.0)) for c in chunks)
        again = sum(len(c.index) for c in chunks if c.header.get("made_by") == "originals")
        return {
            "cells": cells,
            "bytes": size,
            "bytes_per_cell": round(size / cells) if cells else 0,
            "seconds": round(seconds, 3),
            "ms_per_cell": round(1e3 * seconds / cells, 3) if cells else 0.0,
            "from_originals": again,
        }


class CellWriter:
    """Collects encoded cells by sha256 and writes them to the cache in chunks, each atomically;
    cells the cache already had when the writer started are left out. Used as a context
    manager: what is left is written when the block ends without an error."""

    def __init__(self, cache: ThumbnailCache, made_by: str) -> None:
        self.cache, self.made_by = cache, made_by
        self._shas: list[str] = []
        self._data: list[bytes] = []
        self._seconds = 0.0

    def add(self, sha: str | None, data: bytes | None, seconds: float = 0.0) -> None:
        """One cell (``data`` None: the image had none) and the seconds it took to make."""
        self._seconds += seconds
        if data is None or sha is None:
            return
        self._shas.append(sha)
        self._data.append(data)
        if len(self._shas) >= CHUNK_CELLS:
            self.flush()

    def flush(self) -> None:
        if not self._shas:
            return
        new = ~self.cache.has(self._shas)
        _, first = np.unique(self._shas, return_index=True)
        keep = sorted(i for i in first.tolist() if new[i])
        if keep:
            shas, data = [self._shas[i] for i in keep], [self._data[i] for i in keep]
            _write_chunk(
                self.cache.folder, shas, data, self.cache.size, self._seconds, self.made_by
            )
        self._shas, self._data, self._seconds = [], [], 0.0

    def __enter__(self) -> CellWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.flush()
        self.cache._loaded, self.cache._blobs = None, {}


def _write_chunk(
    folder: Path, shas: list[str], data: list[bytes], size: int, seconds: float, made_by: str
) -> Path:
    index = np.zeros(len(shas), dtype=_INDEX)
    index["sha"] = _raw(shas)[0]
    index["length"] = [len(d) for d in data]
    index["offset"] = np.concatenate([[0], np.cumsum(index["length"][:-1], dtype=np.uint64)])
    index["crc"] = [zlib.crc32(d) for d in data]
    raw = index.tobytes()
    header = {
        "cell": size,
        "format": "WEBP",
        "cells": len(shas),
        "seconds": round(seconds, 6),
        "made_by": made_by,
        "index": hashlib.sha256(raw).hexdigest(),
    }
    head = _MAGIC + json.dumps(header).encode() + b"\n"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(head)
            fh.write(raw)
            fh.writelines(data)

    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.cells"
    need = len(head) + len(raw) + sum(len(d) for d in data)
    return write_atomic(folder / name, write, need, point="thumbs:write")


def read_thumbnails(
    where: Layout | str | Path, sha256s: Sequence[str | None]
) -> list[Image.Image | None]:
    """The cached cell of each sha256 (a dataset's layout or its ``thumbs`` folder), None where
    the cache has none."""
    return ThumbnailCache(where).cells(sha256s)


def thumbnail_facts(layout: Layout) -> dict[str, float | int]:
    """:meth:`ThumbnailCache.facts` of a dataset, for ``metrics.json``."""
    return ThumbnailCache(layout).facts()


def as_images(
    cells: Iterable[tuple[bytes | None, float]], size: int
) -> Iterator[Image.Image | None]:
    """The raw RGB cells of :func:`cells_from_files` as pictures."""
    for data, _ in cells:
        yield None if data is None else Image.frombytes("RGB", (size, size), data)
