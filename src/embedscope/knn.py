"""k nearest neighbours under cosine similarity, and the label vote on them.

Shared by the embedding stage (does a reduced precision keep the neighbours?) and the analysis
stage (how well does the model separate the classes?), the held-out splits and the leak search.
One function, :func:`top_k`, answers them all: exact (chunked matrix products) while the query x
base products stay small, else one approximate index (faiss IVF with 8-bit scalar quantisation,
chosen by measurement, see docs) whose candidates are re-ranked exactly from the vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.vocabulary import UNLABELLED

#: Up to this many query x base pairs (EXACT_LIMIT**2) neighbours are exact, above it an index
#: answers: 20k x 20k exact products take seconds on 2 cores, 1M x 1M would take hours.
EXACT_LIMIT = 20_000
#: Bytes of similarities held at once by the exact path (a block of queries x all base rows).
BLOCK_BYTES = 256 << 20


def normalize(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Rows:
    """The rows ``at`` (ascending) of ``x``, read when asked: a split of memory-mapped vectors
    handed to :func:`top_k` without copying it whole (``x[train]`` of 1,000,000 x 1,280 was a
    4.1 GB copy); its blocks are read in file order, and ``np.asarray`` gives all of them."""

    def __init__(self, x: np.ndarray, at: np.ndarray) -> None:
        self.x, self.at = x, np.asarray(at, np.int64)
        self.shape = (len(self.at), *x.shape[1:])

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, item: slice | np.ndarray) -> np.ndarray:
        return np.asarray(self.x[self.at[item]])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.x[self.at], dtype=dtype)


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """The rows a fit above ``limit`` points takes: all ``n`` up to it, else a seeded sample of
    ``limit`` of them in file order (memory maps read forward), the same on every run."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def neighbors(
    vectors: np.ndarray, k: int = 10, *, chunk_size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) and cosine similarities of each point's k nearest others (self excluded)."""
    return top_k(vectors, vectors, k, exclude_self=True, chunk_size=chunk_size)


def top_k(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``base`` (int64, (n, k)) and cosine similarities (float32, best first) of
    each query's k most similar base vectors.

    ``exclude_self``: query i is base i (the same rows), and a row is not its own neighbour.
    Vectors may be memory-mapped, or :class:`Rows` of them: the index path reads them a block
    at a time (the exact path, small by definition, normalises its base whole).
    Exact while ``len(queries) * len(base) <= EXACT_LIMIT**2``; above, one faiss index
    (:func:`build_index`) proposes candidates and their similarities are recomputed exactly, so
    a returned similarity is always the true cosine and only a missed neighbour is approximate.
    """
    if exclude_self and len(queries) != len(base):
        raise ValueError("exclude_self needs the queries to be the base rows")
    n, m = len(queries), len(base)
    k = max(0, min(k, m - (1 if exclude_self else 0)))
    if k < 1 or n == 0:
        return np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    if n * m <= EXACT_LIMIT**2:
        return _exact(queries, base, k, exclude_self, chunk_size)
    return _indexed(queries, base, k, exclude_self)


def _blocks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _best(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and values of each row's k largest entries, largest first."""
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else None
    if part is None:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    part_sim = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sim, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_sim, order, axis=1)


def _exact(queries, base, k: int, exclude_self: bool, chunk_size: int):
    n, m = len(queries), len(base)
    b = normalize(base)
    rows_at_once = max(1, min(chunk_size, BLOCK_BYTES // (4 * m)))
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for s, e in _blocks(n, rows_at_once):
        block = normalize(queries[s:e]) @ b.T  # the queries' own rows, even with exclude_self
        if exclude_self:  # leave-one-out: a point is not its own neighbour
            rows = np.arange(e - s)
            block[rows, rows + s] = -np.inf
        idx[s:e], sim[s:e] = _best(block, k)
    return idx, sim


def _nlist(n: int) -> int:
    """Inverted lists of the index: about 4 sqrt(n), faiss' guidance for n up to ~1M."""
    return int(max(1, min(n // 39, 4 * np.sqrt(n))))


#: The index works on this many PCA dimensions (the re-ranking uses all of them).
INDEX_DIMS = 256
#: Inverted lists each query scans, and candidates re-ranked exactly per wanted neighbour.
NPROBE = 16
CANDIDATES = 3


def build_index(base: np.ndarray, *, seed: int = 0):
    """One faiss index over the normalised ``base`` rows: a PCA to :data:`INDEX_DIMS`, then an
    inverted file (k-means lists, :func:`_nlist`) of 8-bit scalar-quantised vectors under inner
    product. At 1M x 1280 it holds 256 MB (a twentieth of the float32 vectors) and is filled a
    block at a time, so the vectors can stay memory-mapped; a candidate list of it, re-ranked
    exactly, found 0.95 of the true top-10 at 100k (docs/scale-and-performance.md)."""
    import faiss

    m, d = base.shape
    nlist = _nlist(m)
    dims = min(d, INDEX_DIMS)
    quantizer = faiss.IndexFlatIP(dims)
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, dims, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    ivf.cp.seed = seed
    ivf.cp.niter = 10
    index = faiss.IndexPreTransform(faiss.PCAMatrix(d, dims), ivf) if dims < d else ivf
    index.train(normalize(base[sample_rows(m, 40 * nlist, seed)]))
    for s, e in _blocks(m, 65_536):
        index.add(normalize(base[s:e]))
    faiss.extract_index_ivf(index).nprobe = min(NPROBE, nlist)
    return index


def _indexed(queries, base, k: int, exclude_self: bool):
    index = build_index(base)
    norms = np.concatenate(  # for the exact re-ranking
        [
            np.linalg.norm(np.asarray(base[s:e], np.float32), axis=1)
            for s, e in _blocks(len(base), 65_536)
        ]
    )
    norms = np.maximum(norms, 1e-12)
    extra = 1 if exclude_self else 0
    want = min(len(base), CANDIDATES * (k + extra))
    n = len(queries)
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for s, e in _blocks(n, 2048):
        q = normalize(queries[s:e])
        _, cand = index.search(q, want)
        found = cand >= 0
        flat = np.where(found, cand, 0).ravel()
        order = np.argsort(flat, kind="stable")  # read the base rows in file order (memory maps)
        rows = np.empty((flat.size, base.shape[1]), np.float32)
        rows[order] = base[flat[order]]
        exact = np.matmul(rows.reshape(*cand.shape, -1), q[:, :, None])[..., 0]
        exact /= norms[flat].reshape(cand.shape)
        exact[~found] = -np.inf
        if exclude_self:
            exact[cand == np.arange(s, e)[:, None]] = -np.inf
        pos, val = _best(exact, k)
        idx[s:e], sim[s:e] = np.take_along_axis(cand, pos, axis=1), val
    return idx, sim


def label_votes(
    labels: np.ndarray, idx: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each point and each neighbour slot, the summed weight of every neighbour that
    carries that slot's label: (n, k) totals, plus the neighbours' labels (n, k).

    Working per slot (k x k comparisons per point) keeps memory at O(n k^2) whatever the number
    of classes, where an (n, classes) table would not."""
    labels = np.asarray(labels, dtype=object)
    codes = pd.factorize(labels)[0][idx]  # integers compare far faster than label strings
    same = codes[:, :, None] == codes[:, None, :]
    return (same * weights[:, None, :]).sum(axis=2), labels[idx]


def knn_vote(labels: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Majority label among each point's neighbours; ties go to the larger summed similarity,
    then to the nearest neighbour's label."""
    if idx.shape[1] == 0:
        return np.full(len(idx), None, dtype=object)
    totals, near = label_votes(labels, idx, 1.0 + 1e-6 * np.asarray(sim, dtype=np.float64))
    return near[np.arange(len(idx)), totals.argmax(axis=1)]


def labels_unjudged(labels) -> str | None:
    """Why the labels cannot be judged (no labelled image, or one class only: no vote, probe
    or accuracy can tell a right label from a wrong one), in one line; None when they can."""
    labels = np.asarray(labels, dtype=object)
    classes = sorted({str(v) for v in labels[labels != UNLABELLED]})
    if not classes:
        return "label issues not judged: the images carry no labels (a flat folder)"
    if len(classes) == 1:
        return f"label issues not judged: only one class ({classes[0]})"
    return None


def knn_report(labels: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> dict:
    """Leave-one-out k-NN accuracy and per-class precision of the vote.

    Images without a label take part as neighbours but are not scored. Returns
    ``knn_accuracy=None`` with a ``reason`` (:func:`labels_unjudged`) when fewer than two
    classes are labelled.
    """
    labels = np.asarray(labels, dtype=object)
    scored = labels != UNLABELLED
    classes = sorted(set(labels[scored]))
    why = labels_unjudged(labels)
    if why is not None:
        return {"knn_accuracy": None, "reason": why, "k": int(idx.shape[1])}
    pred = knn_vote(labels, idx, sim)
    truth, guess = labels[scored], pred[scored]
    precision = {}
    for c in classes:
        said = guess == c
        precision[str(c)] = round(float((truth[said] == c).mean()), 4) if said.any() else None
    return {
        "knn_accuracy": round(float((truth == guess).mean()), 4),
        "k": int(idx.shape[1]),
        "scored_images": int(scored.sum()),
        "per_class_precision": precision,
    }
