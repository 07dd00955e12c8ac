"""Pair checks kept across runs: the verdicts of the leak and near-duplicate searches on pairs
of images, so that a rerun (the curation loop's next round, 03_reduce alone) matches only the
pairs it has not met (at 100,000 images the pair checks are most of the leak search).

A verdict is kept by the content of the two thumbnails as they were matched (the first one as
the copy) and by whether the cheap first test ran: the same two pictures the same way round get
the same answer, whatever the files are called now. The file
(``data/<name>/analysis/pair-checks.parquet``) carries the digest of the code that matched them
(:mod:`embedscope.findings.leaks` passes its own source's, with Pillow's and NumPy's versions):
under another digest every pair is matched again. A damaged file is set aside in one line and
the pairs matched again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedscope.layout import Damaged, load_checked, write_atomic

#: A verdict: (score, kind) of a full match, or None where the first test stopped the pair.
Verdict = tuple[float, str] | None
#: A verdict not kept (as opposed to a kept None).
MISSING = object()
COLUMNS = ("copy", "source", "screen", "score", "kind")


def picture_key(pixels: np.ndarray, size: tuple[int, int]) -> int:
    """A thumbnail's key: 8 bytes of a hash of its pixels, shape and native size."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(pixels).tobytes())
    h.update(repr((pixels.shape, tuple(size))).encode())
    return int.from_bytes(h.digest(), "little", signed=True)


class PairStore:
    """The verdicts of one dataset's pair checks: read from ``path`` (None: kept in memory for
    this run only), asked for by (copy key, source key, screen), saved back with the pairs of
    the pictures this run still has (:meth:`save`)."""

    def __init__(self, path: str | Path | None, digest: str) -> None:
        self.path = None if path is None else Path(path)
        self.digest = digest
        self.verdicts: dict[tuple[int, int, bool], Verdict] = {}
        self.keys: dict[str, int] = {}  # image path -> picture key, this run's
        self.found = 0  # verdicts this run took from the store
        self.added = 0  # verdicts this run matched
        if self.path is not None:
            self.verdicts = load_checked(self.path, self._read) or {}

    def _read(self, path: Path) -> dict[tuple[int, int, bool], Verdict]:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if meta.get(b"embedscope.pair-checks") != self.digest.encode():
            return {}  # matched by other code: every pair is matched again
        if tuple(table.column_names) != COLUMNS:
            raise Damaged(f"columns {table.column_names} are not {list(COLUMNS)}")
        cols = table.to_pydict()
        return {
            (a, b, s): (None if kind == "" else (score, kind))
            for a, b, s, score, kind in zip(*(cols[c] for c in COLUMNS), strict=True)
        }

    def key(self, path: str, thumb: tuple[np.ndarray, tuple[int, int]]) -> int:
        """The picture key of the image at ``path`` (its thumbnail ``thumb``), once per run."""
        if path not in self.keys:
            self.keys[path] = picture_key(*thumb)
        return self.keys[path]

    def get(self, copy: int, source: int, screen: bool) -> Verdict | object:
        """The kept verdict of a pair, or :data:`MISSING`."""
        found = self.verdicts.get((copy, source, screen), MISSING)
        self.found += found is not MISSING
        return found

    def put(self, copy: int, source: int, screen: bool, verdict: Verdict) -> None:
        self.verdicts[copy, source, screen] = verdict
        self.added += 1

    def save(self) -> None:
        """Write the verdicts whose two pictures are among this run's images (pairs of images
        since gone are dropped; those of other models' candidates stay), atomically."""
        if self.path is None:
            return
        live = set(self.keys.values())
        rows = [
            (*key, np.nan, "") if verdict is None else (*key, *verdict)
            for key, verdict in self.verdicts.items()
            if key[0] in live and key[1] in live
        ]
        types = (pa.int64(), pa.int64(), pa.bool_(), pa.float64(), pa.string())
        columns = zip(*rows, strict=True) if rows else [()] * len(COLUMNS)
        table = pa.table(
            {c: pa.array(list(v), t) for c, v, t in zip(COLUMNS, columns, types, strict=True)}
        ).replace_schema_metadata({"embedscope.pair-checks": self.digest})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda tmp: pq.write_table(table, tmp))
