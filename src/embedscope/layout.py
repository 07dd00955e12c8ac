"""Where every stage reads and writes: one place that knows the on-disk layout.

``data/<name>/`` holds what a stage computes (manifest, embeddings, projections) and can be
reused by the next run; ``reports/<name>/`` holds what a person reads (executed notebooks,
explorer.html, embedding_image_df.csv, metrics.json). All writes go through a temp file in the
same folder followed by ``os.replace`` so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def slug(text: str) -> str:
    """A file-system friendly name: lower case letters, digits, ``-``, ``_`` and ``.``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.").lower()
    return text or "dataset"


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset ``name`` under a data root and a reports root."""

    name: str
    data_root: Path = Path("data")
    reports_root: Path = Path("reports")

    def __post_init__(self) -> None:
        if slug(self.name) != self.name:
            raise ValueError(f"dataset name {self.name!r} must be a slug like {slug(self.name)!r}")
        object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "reports_root", Path(self.reports_root))

    @property
    def data_dir(self) -> Path:
        return self.data_root / self.name

    @property
    def reports_dir(self) -> Path:
        return self.reports_root / self.name

    #: What the stages write into ``data_dir`` (never part of a dataset's images).
    generated_names = (
        "manifest.parquet",
        "source.json",
        "source",
        "embeddings",
        "projections",
        "analysis",
    )

    @property
    def source_file(self) -> Path:
        """JSON naming the folder the manifest's relative paths are relative to."""
        return self.data_dir / "source.json"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.parquet"

    def embeddings_dir(self, model_key: str) -> Path:
        return self.data_dir / "embeddings" / model_key

    def projection(self, model_key: str, method: str, dims: int, digest: str) -> Path:
        """Coordinates; ``digest`` covers the parameters and the vectors they came from."""
        return self.data_dir / "projections" / model_key / f"{method}-{dims}d-{digest}.parquet"

    def neighbors(self, model_key: str) -> Path:
        return self.data_dir / "analysis" / model_key / "neighbors.npz"

    @property
    def metrics(self) -> Path:
        return self.reports_dir / "metrics.json"

    @property
    def explorer(self) -> Path:
        return self.reports_dir / "explorer.html"

    @property
    def embedding_csv(self) -> Path:
        return self.reports_dir / "embedding_image_df.csv"


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet(path: str | Path, df: Any) -> Path:
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_npy(path: str | Path, array: Any) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object stops numpy appending ".npy" to the temp name
            np.save(fh, array)

    return write_atomic(path, save)


def write_npz(path: str | Path, **arrays: Any) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return write_atomic(path, save)


def read_json(path: str | Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def update_metrics(path: str | Path, section: str, values: Any) -> dict[str, Any]:
    """Merge one stage's numbers into ``metrics.json`` under ``section`` (other stages kept)."""
    metrics = read_json(path, default={})
    metrics[section] = values
    write_json(path, metrics)
    return metrics


def _json_default(obj: Any) -> Any:
    """Let numpy scalars and paths go into JSON without every caller converting them."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@dataclass
class Embeddings:
    """Vectors of the manifest's ok images and which rows they belong to."""

    vectors: np.ndarray
    rows: pd.DataFrame
    model_key: str


def load_embeddings(layout: Layout, model: str | None = None) -> Embeddings:
    """Vectors and rows written by :func:`embed` for ``model`` (the latest run when None)."""
    index = read_json(layout.data_dir / "embeddings" / "index.json")
    key = None
    if index is not None:
        key = index["latest"] if model is None else index["by_model"].get(model)
    if key is None:
        which = f"model {model!r}" if model else "any model"
        raise FileNotFoundError(f"no embeddings of {layout.name!r} for {which}: run 02_embed first")
    out_dir = layout.embeddings_dir(key)
    return Embeddings(
        vectors=np.load(out_dir / "vectors.npy", mmap_mode="r"),
        rows=pd.read_parquet(out_dir / "rows.parquet"),
        model_key=key,
    )
