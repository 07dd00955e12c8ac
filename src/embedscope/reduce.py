"""Stage 3 — reduce: project the embeddings to 3 (or 2) dimensions, cached per parameters.

``reduce`` works on a plain array; ``project`` reads a dataset's stored vectors, writes
``data/<name>/projections/<model_key>/<method>-<dims>d-<digest>.parquet`` (+ ``.json`` facts)
and reuses it while the vectors and parameters are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.faults import fault_point
from embedscope.knn import sample_rows
from embedscope.layout import (
    Damaged,
    Layout,
    load_checked,
    read_json,
    write_json,
    write_parquet,
)
from embedscope.store import load_embeddings
from embedscope.vocabulary import METHODS

#: Above this many points UMAP is fitted on a seeded sample of this size and every point is
#: placed by the fitted model's transform: a fit's neighbour graph and layout grow with n,
#: placing a point costs a search of the sample's index and a few epochs.
UMAP_SAMPLE = 200_000


def reduce(
    vectors: np.ndarray,
    method: str = "pca",
    dims: int = 3,
    *,
    random_state: int | None = 0,
    chunk_size: int = 10_000,
    n_neighbors: int = 15,
    perplexity: float = 30.0,
) -> tuple[np.ndarray, dict]:
    """Coordinates (n, dims) and facts about the fit (e.g. PCA's explained variance).

    ``random_state=None`` lets UMAP run in parallel (about 2.5x faster on 2 cores) at the price
    of coordinates that differ between runs; an integer makes UMAP single-threaded but exact.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, not {dims!r}")
    n = len(vectors)
    if n < dims + 2:
        raise ValueError(f"{method} needs at least {dims + 2} images, got {n}")
    if method == "pca":
        coords, ratio = streaming_pca(vectors, dims)
        return coords, {"explained_variance_ratio": ratio.tolist()}
    if method == "ipca":
        return _ipca(vectors, dims, chunk_size)
    x = _pca_50(vectors)
    if method == "umap":
        import umap

        model = umap.UMAP(
            n_components=dims,
            metric="cosine",
            n_neighbors=max(2, min(n_neighbors, n - 1)),
            random_state=random_state,
            n_jobs=1 if random_state is not None else -1,
            init="spectral" if n > 3 * (dims + 1) else "random",
        )
        fault_point("projection:fit")
        if n <= UMAP_SAMPLE:
            return model.fit_transform(x), {"n_neighbors": model.n_neighbors}
        model.fit(x[sample_rows(n, UMAP_SAMPLE)])
        coords = np.concatenate([model.transform(x[s : s + 100_000]) for s in range(0, n, 100_000)])
        return coords, {"n_neighbors": model.n_neighbors, "fitted_on": UMAP_SAMPLE}
    return _tsne(x, dims, perplexity=min(perplexity, (n - 1) / 3), random_state=random_state)


def _ipca(vectors: np.ndarray, dims: int, chunk_size: int) -> tuple[np.ndarray, dict]:
    """Incremental PCA that reads ``vectors`` (may be a memmap) one chunk at a time."""
    from sklearn.decomposition import IncrementalPCA

    n = len(vectors)
    chunk_size = max(chunk_size, dims)
    model = IncrementalPCA(dims)
    starts = range(0, n, chunk_size)
    for s in starts:
        chunk = np.asarray(vectors[s : s + chunk_size], dtype=np.float32)
        if len(chunk) < dims:  # a last chunk smaller than dims cannot be fitted alone
            break
        model.partial_fit(chunk)
    coords = np.concatenate(
        [model.transform(np.asarray(vectors[s : s + chunk_size])) for s in starts]
    )
    return coords, {"explained_variance_ratio": model.explained_variance_ratio_.tolist()}


def _pca_50(vectors: np.ndarray) -> np.ndarray:
    """Neighbour-based methods are faster and no worse on 50 PCA dimensions of wide vectors
    (of the normalised vectors: cosine geometry), taken without copying the vectors whole."""
    if vectors.shape[1] <= 50 or len(vectors) <= 50:
        return np.asarray(vectors, dtype=np.float32)
    return streaming_pca(vectors, 50, unit=True)[0]


#: Rows the streaming PCA reads at once (65,536 x 1,280 float32: 335 MB).
PCA_BLOCK = 65_536


def _rows(vectors: np.ndarray, s: int, e: int, unit: bool) -> np.ndarray:
    block = np.asarray(vectors[s:e], dtype=np.float32)
    if unit:
        block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return block


def streaming_pca(
    vectors: np.ndarray, dims: int, *, unit: bool = False, block: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA of ``vectors`` (``unit``: of their L2-normalised rows) read a block at a time:
    float32 coordinates (n, dims) and the explained variance ratios.

    Why: scikit-learn's PCA holds the vectors in memory two or three times over (a float32
    copy of a memory map, a centred copy, the solver's work), 15 GB and more at 1M x 1,280,
    which the machine may not have. Here the mean and then the d x d covariance are summed
    over blocks (float64 sums of float32 block products), its top eigenvectors are the
    components, and the rows are projected block by block: memory is the output plus one
    block, whatever n. Signs follow scikit-learn's (each component's largest loading is
    positive), so the coordinates equal ``PCA(dims, svd_solver="full")``'s."""
    n, d = vectors.shape
    dims = min(dims, d)
    block = block or PCA_BLOCK
    total = np.zeros(d, np.float64)
    for s in range(0, n, block):
        total += _rows(vectors, s, s + block, unit).sum(axis=0, dtype=np.float64)
    mean = (total / n).astype(np.float32)
    gram = np.zeros((d, d), np.float64)
    for s in range(0, n, block):
        centred = _rows(vectors, s, s + block, unit) - mean
        gram += centred.T @ centred
    values, vecs = np.linalg.eigh(gram / max(n - 1, 1))
    values = np.clip(values[::-1], 0.0, None)
    components = vecs[:, ::-1][:, :dims].T  # (dims, d), largest variance first
    top = np.argmax(np.abs(components), axis=1)
    components *= np.sign(components[np.arange(dims), top])[:, None]
    components = components.astype(np.float32)
    coords = np.empty((n, dims), np.float32)
    for s in range(0, n, block):
        coords[s : s + block] = (_rows(vectors, s, s + block, unit) - mean) @ components.T
    ratio = values[:dims] / values.sum() if values.sum() > 0 else np.zeros(dims)
    return coords, ratio


def _tsne(x: np.ndarray, dims: int, *, perplexity: float, random_state: int | None):
    """openTSNE (FFT-accelerated, fast at large N) in 2D; scikit-learn's Barnes-Hut in 3D."""
    if dims == 2:
        from openTSNE import TSNE

        emb = TSNE(
            n_components=2,
            perplexity=perplexity,
            metric="cosine",
            initialization="pca",
            random_state=random_state,
            n_jobs=-1,
        ).fit(x)
        return np.asarray(emb), {"perplexity": perplexity, "implementation": "openTSNE"}
    from sklearn.manifold import TSNE

    coords = TSNE(
        n_components=3, perplexity=perplexity, init="pca", metric="cosine",
        random_state=random_state,
    ).fit_transform(x)  # fmt: skip
    return coords, {"perplexity": perplexity, "implementation": "scikit-learn"}


def project(
    layout: Layout,
    method: str = "pca",
    dims: int = 3,
    *,
    model: str | None = None,
    random_state: int | None = 0,
    **params,
) -> tuple[pd.DataFrame, dict]:
    """Project a dataset's stored embeddings; returns rows with x, y[, z] and run facts (the
    projection's ``path`` relative to the dataset's data folder)."""
    emb = load_embeddings(layout, model)
    settings = {"method": method, "dims": dims, "random_state": random_state, **params}
    fingerprint = hashlib.sha256(
        json.dumps(settings, sort_keys=True).encode() + "\n".join(emb.rows["sha256"]).encode()
    ).hexdigest()[:12]
    path = layout.projection(emb.model_key, method, dims, fingerprint)
    facts_path = path.with_suffix(".json")
    shown = str(path.relative_to(layout.data_dir))  # relative: reports are shared
    cached = load_checked(path, lambda p: _read_projection(p, emb.rows, dims))
    facts = read_json(facts_path)
    if cached is not None and facts is not None:
        # the coordinates depend on the vectors only: the rows' labels (and anything else a
        # relabel changes) are today's, not those stored with the coordinates
        current = emb.rows.copy()
        for axis in "xyz"[:dims]:
            current[axis] = cached[axis].to_numpy(np.float32)
        return current, {**facts, "cached": True, "path": shown}
    t0 = time.perf_counter()
    coords, facts = reduce(emb.vectors, method, dims, random_state=random_state, **params)
    facts = {**settings, **facts, "seconds": round(time.perf_counter() - t0, 3)}
    df = emb.rows.copy()
    for axis, col in zip("xyz", coords.T, strict=False):
        df[axis] = col.astype(np.float32)
    write_parquet(path, df, point="projection:write")
    write_json(facts_path, facts, point="projection:write")
    return df, {**facts, "cached": False, "path": shown}


def _read_projection(path: Path, rows: pd.DataFrame, dims: int) -> pd.DataFrame:
    """A cached projection, refused unless it holds one finite point per embedded image, in
    the embeddings' order."""
    df = pd.read_parquet(path)
    axes = list("xyz"[:dims])
    if not set(axes) <= set(df.columns) or "sha256" not in df.columns:
        raise Damaged(f"columns {list(df.columns)} lack {axes}")
    if not df["sha256"].reset_index(drop=True).equals(rows["sha256"].reset_index(drop=True)):
        raise Damaged(f"{len(df)} points are not the {len(rows)} embedded images")
    if not np.isfinite(df[axes].to_numpy(dtype=np.float64)).all():
        raise Damaged("coordinates are not all finite")
    return df
