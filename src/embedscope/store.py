"""The embedding store: what stage 2 writes and every later stage reads, without torch.

Vectors are cached in shards under a folder named after the model identity
(``data/<name>/embeddings/<model_key>/shards/*.npz``), keyed by the image's sha256, each with
its model key and a digest of its contents. The outputs anyone can open are assembled from
them:

* ``vectors.npy`` — float32 array (n_images, dim), ``numpy.load(path)``;
* ``rows.parquet`` — the manifest rows those vectors belong to, in the same order
  (``row`` = manifest row number, ``path``, ``label``, ``sha256``), ``pandas.read_parquet(path)``.

:func:`load_embeddings` rebuilds a missing or damaged output from the shards (no model
needed), so the later stages depend on this module, never on the embedding stage itself.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.ingest import load_manifest
from embedscope.layout import (
    Damaged,
    EmbeddingFiles,
    Layout,
    load_checked,
    read_json,
    set_aside,
    slug,
    update_json,
    write_atomic,
    write_npy,
    write_npz,
    write_parquet,
)

_SHA256 = re.compile("[0-9a-f]{64}")
#: The arrays of a shard. Format 2 adds ``decoder``: the identity of the decoder whose
#: failures it records (:func:`embedscope.images.decoder_identity`); a format-1 shard's
#: vectors are used as they are, its failures are tried again once.
_SHARD_KEYS_1 = {"sha256", "vectors", "failed_sha256", "failed_reason", "model_key", "digest"}
_SHARD_KEYS = _SHARD_KEYS_1 | {"decoder"}


def model_key(spec: str, identity: str, pooling: str, precision: str = "float32") -> str:
    """Folder name for one model's vectors: readable prefix plus a hash of what defines them
    (weights, pooling and precision: bf16 vectors are close to float32 ones, not equal)."""
    digest = hashlib.sha256(f"{identity}\n{pooling}\n{precision}".encode()).hexdigest()[:12]
    return f"{slug(Path(spec.rstrip('/')).name)}-{digest}"


def read_shards(
    shard_dir: Path, decoder: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Vectors by sha256 from every shard that passes its checks, and failures by sha256 from
    those written by ``decoder`` (a failure another decoder met is tried again); a damaged or
    foreign shard is set aside (one line), so its images are embedded again."""
    key = shard_dir.parent.name
    shards = sorted(shard_dir.glob("*.npz"))
    loaded = {p: load_checked(p, lambda p: _load_shard(p, key)) for p in shards}
    loaded = {p: a for p, a in loaded.items() if a is not None}
    dims = Counter(a["vectors"].shape[1] for a in loaded.values() if len(a["vectors"]))
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for path, arrays in loaded.items():
        dim = arrays["vectors"].shape[1]
        if len(arrays["vectors"]) and dim != dims.most_common(1)[0][0]:
            set_aside(path, f"vectors of dimension {dim}, the other shards' differ")
            continue
        vectors.update(zip(arrays["sha256"].tolist(), arrays["vectors"], strict=True))
        if decoder is None or str(arrays.get("decoder")) != decoder:
            continue
        failed.update(
            zip(arrays["failed_sha256"].tolist(), arrays["failed_reason"].tolist(), strict=True)
        )
    return vectors, failed


def _load_shard(path: Path, key: str) -> dict[str, np.ndarray]:
    """A shard's arrays, refused (:class:`Damaged`) unless they are what the shard claims:
    this model's, one 64-hex content hash per vector, a 2-D float32 block, the same digest."""
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) not in (_SHARD_KEYS, _SHARD_KEYS_1):
            raise Damaged(f"arrays {sorted(z.files)} are not a shard's")
        arrays = {k: z[k] for k in z.files}
    vecs, shas = arrays["vectors"], arrays["sha256"]
    if str(arrays["model_key"]) != key:
        raise Damaged(f"written for model {arrays['model_key']}, not {key}")
    if vecs.ndim != 2 or vecs.dtype != np.float32 or len(vecs) != len(shas):
        raise Damaged(f"{len(shas)} hashes for vectors of shape {vecs.shape}")
    hashes = np.concatenate([shas, arrays["failed_sha256"]]).astype(str)
    if not all(_SHA256.fullmatch(h) for h in hashes.tolist()):
        raise Damaged("a content hash is not a sha256")
    if str(arrays["digest"]) != shard_digest(arrays):
        raise Damaged("contents differ from the digest written with them")
    return arrays


def shard_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over everything a shard holds but its digest."""
    h = hashlib.sha256()
    for name in sorted(set(arrays) - {"digest"}):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_shard(
    shard_dir: Path,
    shas: list[str],
    vecs: list[np.ndarray],
    failed: dict[str, str],
    decoder: str,
) -> None:
    """One shard of the model whose folder holds ``shard_dir``, with its digest: ``vecs`` by
    their ``shas``, and the reasons of the files ``decoder`` failed on (only failures that are
    facts about the image belong here: the caller leaves the others out)."""
    dim = vecs[0].shape[-1] if vecs else 0
    arrays = {
        "sha256": np.array(shas, dtype="U64"),
        "vectors": np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32),
        "failed_sha256": np.array(list(failed), dtype="U64"),
        "failed_reason": np.array(list(failed.values()), dtype=str),
        "model_key": np.array(shard_dir.parent.name),
        "decoder": np.array(decoder),
    }
    arrays["digest"] = np.array(shard_digest(arrays))
    write_npz(
        shard_dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz",
        point="shard:write",
        **arrays,
    )


@dataclass
class Embeddings:
    """Vectors of the manifest's ok images and which rows they belong to."""

    vectors: np.ndarray
    rows: pd.DataFrame
    model_key: str


def read_embedding_files(out_dir: Path) -> tuple[np.ndarray, pd.DataFrame] | None:
    """``vectors.npy`` (memory-mapped) and ``rows.parquet`` of one model folder, checked
    against each other; None when missing or damaged (damaged ones are set aside)."""
    files = EmbeddingFiles(out_dir)
    rows = load_checked(files.rows, _read_rows)
    vectors = load_checked(files.vectors, lambda p: np.load(p, mmap_mode="r"))
    if rows is None or vectors is None:
        return None
    if len(rows) and (vectors.ndim != 2 or vectors.shape[0] != len(rows)):
        set_aside(files.vectors, f"shape {vectors.shape} for {len(rows)} rows")
        return None
    return vectors, rows


def _read_rows(path: Path) -> pd.DataFrame:
    rows = pd.read_parquet(path)
    if list(rows.columns) != ["row", "path", "label", "sha256"] or rows["sha256"].isna().any():
        raise Damaged(f"columns {list(rows.columns)} are not the embedding rows'")
    return rows


#: Rows copied at once when ``vectors.npy`` is written from a larger array (65,536 x 1,280
#: float32: 335 MB).
COPY_BLOCK = 65_536


def write_rows_npy(path: Path, source: np.ndarray, at: np.ndarray) -> None:
    """``source[at]`` as a float32 ``.npy`` file, atomically, a block of rows at a time (each
    block read in file order: ``source`` may be a memory map): at 1M x 1,280 the 5 GB never sit
    in memory, where stacking them for ``np.save`` held them whole."""
    at = np.asarray(at, np.int64)
    dim = source.shape[1]

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            header = {"descr": "<f4", "fortran_order": False, "shape": (len(at), dim)}
            np.lib.format.write_array_header_1_0(fh, header)
            for s in range(0, len(at), COPY_BLOCK):
                part = at[s : s + COPY_BLOCK]
                order = np.argsort(part, kind="stable")
                block = np.empty((len(part), dim), "<f4")
                block[order] = source[part[order]]
                fh.write(memoryview(block))  # a short write (full disk) raises here

    write_atomic(path, save, len(at) * dim * 4 + 128)


def write_outputs(
    ok: pd.DataFrame,
    done: dict[str, np.ndarray] | dict[str, int],
    out_dir: Path,
    *,
    force: bool,
    source: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``rows.parquet`` and ``vectors.npy`` of the ok images with vectors; written when
    ``force``d or when what is on disk is missing, damaged or other (else a no-op re-run
    rewrites nothing).

    With ``source``, ``done`` maps each sha256 to a row of that array (vectors from a file,
    perhaps memory-mapped) rather than to a vector: ``vectors.npy`` is then copied from it a
    block at a time (:func:`write_rows_npy`) and the vectors returned are the file's memory
    map, so no stage holds a million vectors twice."""
    kept = ok[ok["sha256"].isin(done.keys())]
    rows = pd.DataFrame(
        {
            "row": kept.index.to_numpy(),
            "path": kept["path"].to_numpy(),
            "label": kept["label"].to_numpy(),
            "sha256": kept["sha256"].to_numpy(),
        }
    )
    if source is not None:
        stored = None if force else read_embedding_files(out_dir)
        if stored is None or not stored[1].equals(rows):
            at = np.fromiter((done[s] for s in rows["sha256"]), np.int64, len(rows))
            write_rows_npy(EmbeddingFiles(out_dir).vectors, source, at)
            write_parquet(EmbeddingFiles(out_dir).rows, rows)
            stored = read_embedding_files(out_dir)
        if stored is None:
            raise OSError(f"the vectors written to {out_dir} cannot be read back")
        return rows, stored[0]
    vectors = np.stack([done[s] for s in rows["sha256"]]) if len(rows) else np.zeros((0, 0))
    stored = None if force else read_embedding_files(out_dir)
    if stored is None or not stored[1].equals(rows):
        write_npy(EmbeddingFiles(out_dir).vectors, vectors)
        write_parquet(EmbeddingFiles(out_dir).rows, rows)
    return rows, vectors


def mark_latest(layout: Layout, model: str, key: str) -> None:
    """Record ``key`` as ``model``'s embeddings and the latest of the dataset, in its
    ``index.json`` (merged under a lock: two models embedded at once both stay in it)."""

    def point_at(index: dict) -> None:
        index["latest"] = key
        index.setdefault("by_model", {})[model] = key

    update_json(layout.embeddings_index, point_at)


def _rebuild_outputs(layout: Layout, key: str) -> None:
    """Write ``vectors.npy``/``rows.parquet`` of model folder ``key`` again from its shards
    and the manifest (no model needed): how a damaged output file is rebuilt."""
    manifest, _ = load_manifest(layout)
    out_dir = layout.embeddings_dir(key)
    done, _ = read_shards(EmbeddingFiles(out_dir).shards)
    write_outputs(manifest[manifest["status"] == "ok"], done, out_dir, force=True)


def load_embeddings(layout: Layout, model: str | None = None) -> Embeddings:
    """Vectors and rows written by the embedding stage for ``model`` (the latest run when
    None); rebuilt from the embedding shards when either file is missing or damaged."""
    index = read_json(layout.embeddings_index)
    key = None
    if index is not None:
        key = index["latest"] if model is None else index["by_model"].get(model)
    if key is None:
        which = f"model {model!r}" if model else "any model"
        raise FileNotFoundError(f"no embeddings of {layout.name!r} for {which}: run 02_embed first")
    out_dir = layout.embeddings_dir(key)
    stored = read_embedding_files(out_dir)
    if stored is None:
        _rebuild_outputs(layout, key)
        stored = read_embedding_files(out_dir)
    if stored is None:
        raise FileNotFoundError(f"embeddings in {out_dir} could not be rebuilt: run 02_embed")
    return Embeddings(vectors=stored[0], rows=stored[1], model_key=key)
