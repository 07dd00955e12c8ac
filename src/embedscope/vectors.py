"""Your own vectors: a file of one vector per image stands in for the embedding stage.

A user whose vectors already exist (from their own training pipeline) brings them with
``make run-all SOURCE=<folder> VECTORS=<file>``. The file is either

* ``.parquet`` with a ``path`` column (each image's path relative to the folder, ``/``
  separated) and one vector column: ``vector`` or ``embedding``, else the only other column
  holding lists or arrays of numbers; or
* ``.npy``, a 2-D array (one row per image), with the paths of its rows, one per line in the
  same order, in a text file of the same name ending ``.paths.txt`` (``my.npy`` +
  ``my.paths.txt``).

:func:`read_vectors` checks a file in one sentence per fault (wrong dimension within the
file, NaN or infinite values, duplicate paths, and against the folder: paths the folder lacks
or images the file lacks), cheaply enough to run before any notebook. :func:`store_vectors`
writes them into the embedding store as the vectors of a pseudo-model, :data:`VECTORS_MODEL`,
so that every later stage, the findings and the page read them as usual; no torch here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from embedscope.ingest import discover, is_hidden, load_manifest
from embedscope.layout import Layout, os_path, write_json
from embedscope.shipped import SAMPLE_DIR
from embedscope.store import (
    mark_latest,
    model_key,
    read_embedding_files,
    read_shards,
    write_outputs,
    write_shard,
)
from embedscope.vocabulary import GENERATED_NAMES
from embedscope.words import counted

#: The model name the stages see for vectors from a file; also the report's stand-in for the
#: file's folder (:func:`embedscope.execute.report_roots`): a report never names where it lies.
VECTORS_MODEL = "[vectors]"
#: Names the vector column of a parquet file may have (else the only list-valued column).
VECTOR_COLUMNS = ("vector", "embedding")
#: The paths file beside an ``.npy`` file: ``my.npy`` -> ``my.paths.txt``.
PATHS_SUFFIX = ".paths.txt"
#: Rows checked and hashed at once by :func:`read_vectors`.
CHECK_ROWS = 65_536
#: Vectors per shard written from a file (16,384 x 1,280 float32: 84 MB, held about four
#: times over while its shard is stacked, hashed and written).
SHARD_ROWS = 16_384
#: How many offending paths a sentence names before "…".
SHOWN = 3


class VectorsError(ValueError):
    """A vectors file that cannot stand in for the embeddings; the message is one sentence."""


@dataclass
class Vectors:
    """The checked contents of a vectors file: ``paths[i]`` is the image of ``vectors[i]``."""

    paths: list[str]
    vectors: np.ndarray  # float32, (n, dim)
    digest: str  # of paths and vectors: a new file is a new pseudo-model folder

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def paths_file(npy: str | Path) -> Path:
    """Where the row paths of an ``.npy`` vectors file are read from."""
    npy = Path(npy)
    return npy.with_name(npy.name[: -len(".npy")] + PATHS_SUFFIX)


def _named(items: list[str]) -> str:
    shown = ", ".join(repr(p) for p in items[:SHOWN])
    return shown + (", …" if len(items) > SHOWN else "")


def read_vectors(
    path: str | Path, folder: str | Path | None = None, exclude: Sequence[str] = ()
) -> Vectors:
    """The vectors of ``path``, checked; with ``folder``, also against the images there (less
    those ``exclude``'s patterns leave out, as ingest would).

    Raises :class:`VectorsError` with one sentence. Reads the file once and lists the
    folder's names (no image is decoded), so it runs before any notebook."""
    path = Path(path).expanduser()
    where = f"vectors file {path.name!r}"
    if not path.is_file():
        raise VectorsError(f"{where} does not exist")
    suffix = path.name.lower()
    if suffix.endswith(".parquet"):
        paths, vectors = _read_parquet(path, where)
    elif suffix.endswith(".npy"):
        paths, vectors = _read_npy(path, where)
    else:
        raise VectorsError(
            f"{where} must be a .parquet (path + vector columns) or a .npy with a "
            f"{PATHS_SUFFIX} beside it"
        )
    if not len(paths):
        raise VectorsError(f"{where} holds no vectors")
    paths = [_clean(p) for p in paths]
    repeated = pd.Series(paths)[pd.Series(paths).duplicated()].unique().tolist()
    if repeated:
        raise VectorsError(
            f"{where} names {counted(len(repeated), 'path')} more than once: {_named(repeated)}"
        )
    # by blocks: at 1M x 1280 a whole-array check or tobytes() would copy the 5 GB once more
    blocks = [slice(s, s + CHECK_ROWS) for s in range(0, len(vectors), CHECK_ROWS)]
    bad = np.concatenate([~np.isfinite(vectors[b]).all(axis=1) for b in blocks])
    if bad.any():
        rows = [paths[i] for i in np.flatnonzero(bad)]
        raise VectorsError(
            f"{where} has NaN or infinite values in {counted(len(rows), 'vector')}: {_named(rows)}"
        )
    if folder is not None:
        check_folder(paths, Path(folder), where, exclude)
    digest = hashlib.sha256("\n".join(paths).encode())
    for b in blocks:
        digest.update(np.ascontiguousarray(vectors[b]))  # its buffer: no copy of a memory map
    return Vectors(paths=paths, vectors=vectors, digest=digest.hexdigest())


def _clean(text: str) -> str:
    """A path as the manifest spells it: relative, ``/`` separated, no ``./``."""
    return str(PurePosixPath(str(text).replace("\\", "/")))


def _read_parquet(path: Path, where: str) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise VectorsError(f"{where} is not a readable parquet file ({exc})") from None
    names = list(schema.names)
    if "path" not in names:
        raise VectorsError(f"{where} has no 'path' column (its columns: {', '.join(names)})")
    lists = [
        n
        for n in names
        if pa.types.is_list(schema.field(n).type)
        or pa.types.is_large_list(schema.field(n).type)
        or pa.types.is_fixed_size_list(schema.field(n).type)
    ]
    column = next((n for n in VECTOR_COLUMNS if n in names), None)
    if column is None and len(lists) == 1:
        column = lists[0]
    if column is None:
        raise VectorsError(
            f"{where} needs one vector column (named {' or '.join(VECTOR_COLUMNS)}, or the "
            f"only column of lists); its columns: {', '.join(names)}"
        )
    if column not in lists:
        raise VectorsError(f"{where}'s column {column!r} holds no lists of numbers")
    table = pq.read_table(path, columns=["path", column])
    paths = table.column("path").to_pylist()
    if any(p is None for p in paths):
        raise VectorsError(f"{where} has a row without a path")
    cells = table.column(column).combine_chunks()
    if cells.null_count:
        rows = [paths[i] for i in np.flatnonzero(cells.is_null().to_numpy(zero_copy_only=False))]
        raise VectorsError(f"{where} has no vector for {_named(rows)}")
    lengths = pc.list_value_length(cells).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        dims = pd.Series(lengths).value_counts()
        common = int(dims.index[0])
        odd = [paths[i] for i in np.flatnonzero(lengths != common)]
        raise VectorsError(
            f"{where} mixes dimensions: {counted(len(odd), 'vector')} of "
            f"{', '.join(str(int(d)) for d in dims.index[1:])} values beside {common} "
            f"({_named(odd)})"
        )
    if len(lengths) and lengths[0] == 0:
        raise VectorsError(f"{where}'s vectors are empty")
    try:
        flat = cells.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    except (TypeError, ValueError, pa.ArrowException):
        raise VectorsError(f"{where}'s column {column!r} holds no lists of numbers") from None
    return [str(p) for p in paths], flat.reshape(len(paths), -1)


def _read_npy(path: Path, where: str) -> tuple[list[str], np.ndarray]:
    listing = paths_file(path)
    if not listing.is_file():
        raise VectorsError(
            f"{where} needs its paths, one per line in row order, in {listing.name!r} beside it"
        )
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise VectorsError(f"{where} is not a readable .npy array ({exc})") from None
    if vectors.ndim != 2 or not vectors.shape[1]:
        raise VectorsError(
            f"{where} must hold one vector per row (a 2-D array), not shape {vectors.shape}"
        )
    if not np.issubdtype(vectors.dtype, np.number):
        raise VectorsError(f"{where} holds {vectors.dtype} values, not numbers")
    paths = [line for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(paths) != len(vectors):
        raise VectorsError(
            f"{where} has {counted(len(vectors), 'vector')} but {listing.name!r} "
            f"{counted(len(paths), 'path')}"
        )
    return paths, np.asarray(vectors, dtype=np.float32)


def check_folder(paths: list[str], folder: Path, where: str, exclude: Sequence[str] = ()) -> None:
    """The file's paths against ``folder``: each must be a file there, and each image there
    (a file whose suffix an image format has, not left out by ``exclude``) must have a vector."""
    from PIL import Image

    exclude = [*exclude, *(["LICENSE.md"] if folder.resolve() == SAMPLE_DIR.resolve() else [])]
    if (folder / "source.json").is_file():  # a dataset's output folder is also its images'
        exclude += [*GENERATED_NAMES, ".*.tmp"]
    found = [p for p in discover(folder, exclude) if not is_hidden(p)]
    present = set(found)
    absent = [p for p in paths if p not in present]
    if absent:
        raise VectorsError(
            f"{where} names {counted(len(absent), 'path')} that the folder lacks: {_named(absent)}"
        )
    images = set(Image.registered_extensions())
    named = set(paths)
    lacking = [p for p in found if PurePosixPath(p).suffix.lower() in images and p not in named]
    if lacking:
        raise VectorsError(
            f"{where} has no vector for {counted(len(lacking), 'image')} of the folder: "
            f"{_named(lacking)}"
        )


def store_vectors(layout: Layout, path: str | Path) -> dict:
    """Put the vectors of ``path`` where the embedding stage puts a model's: a shard and
    ``vectors.npy`` + ``rows.parquet`` of the manifest's ok images, ``embed.json``, and the
    index pointing at them as :data:`VECTORS_MODEL`. Returns the run facts for
    ``metrics.json`` (the file named only as ``[vectors]``).

    Every ok image of the manifest needs a vector (an image the file lacks is refused in one
    sentence); a vector of a file the manifest skipped (unreadable) is left out, as embedding
    would."""
    manifest, root = load_manifest(layout)
    given = read_vectors(path)  # against the manifest, which knows what ingest left out
    ok = manifest[manifest["status"] == "ok"]
    where = {p: i for i, p in enumerate(given.paths)}
    known = set(manifest["path"])
    absent = [p for p in given.paths if p not in known and not os_path(root, p).is_file()]
    if absent:
        raise VectorsError(
            f"vectors file {Path(path).name!r} names {counted(len(absent), 'path')} that the "
            f"folder lacks: {_named(absent)}"
        )
    lacking = [p for p in ok["path"] if p not in where]
    if lacking:
        raise VectorsError(
            f"vectors file {Path(path).name!r} has no vector for {counted(len(lacking), 'image')} "
            f"of the folder: {_named(lacking)}"
        )
    key = model_key("vectors", f"vectors-file\n{given.digest}", "file")
    files = layout.embedding_files(key)
    # one vector per content, as embedding gives (a copy of an image shares its vector): the
    # file's row of each content. Kept in shards like an embedding run's, a block at a time
    # (1M x 1,280 float32 is 5 GB: never stacked whole); a re-run of the same file finds the
    # outputs complete and reads no shard
    row_of = {s: where[p] for p, s in zip(ok["path"], ok["sha256"], strict=True)}
    done = read_embedding_files(files.dir)
    if done is None or set(done[1]["sha256"]) != set(row_of):
        # shards exist here only after an interrupted run or for another set of the folder's
        # images (the same file): then they are read, and only what they lack is added
        stored = read_shards(files.shards)[0] if any(files.shards.glob("*.npz")) else {}
        new = [s for s in row_of if s not in stored]
        del stored
        for s in range(0, len(new), SHARD_ROWS):
            part = new[s : s + SHARD_ROWS]
            at = np.array([row_of[h] for h in part])
            order = np.argsort(at)  # read in file order (a memory map), kept in ``part``'s
            block = np.empty((len(at), given.dim), np.float32)
            block[order] = given.vectors[at[order]]
            write_shard(files.shards, part, list(block), {}, decoder="vectors-file")
    rows, _ = write_outputs(ok, row_of, files.dir, force=False, source=given.vectors)
    facts = {
        "model": VECTORS_MODEL,
        "model_key": key,
        "identity": VECTORS_MODEL,
        "source": "vectors file",
        "vectors_file": VECTORS_MODEL,
        "pooling": "file",
        "text_tower": False,
        "device": None,
        "precision": "fp32",
        "precision_check": {"precision": "none: the vectors came from a file"},
        "dim": given.dim,
        "images": int(len(rows)),
        "embedded_now": 0,
        "from_cache": 0,
        "from_file": int(len(rows)),
        "unused_vectors": int(len(given.paths) - len(rows)),
        "skipped_files": [],  # ingest's skipped files are ingest's, listed there
        "seconds_embed": 0.0,
    }
    write_json(files.facts, facts)
    mark_latest(layout, VECTORS_MODEL, key)
    return facts
