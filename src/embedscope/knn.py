"""k nearest neighbours under cosine similarity, and the label vote on them.

Shared by the embedding stage (does a reduced precision keep the neighbours?) and the analysis
stage (how well does the model separate the classes?). Exact (chunked matrix products) for
small N, approximate (pynndescent) for large N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.vocabulary import UNLABELLED

#: Above this many points neighbours come from an approximate index.
EXACT_LIMIT = 20_000


def normalize(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbors(
    vectors: np.ndarray, k: int = 10, *, chunk_size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) and cosine similarities of each point's k nearest others (self excluded)."""
    n = len(vectors)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    x = normalize(vectors)
    if n > EXACT_LIMIT:
        return _approximate(x, k)
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for s in range(0, n, chunk_size):
        block = x[s : s + chunk_size] @ x.T
        rows = np.arange(len(block))
        block[rows, rows + s] = -np.inf  # leave-one-out: a point is not its own neighbour
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_sim = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_sim, axis=1, kind="stable")
        idx[s : s + len(block)] = np.take_along_axis(part, order, axis=1)
        sim[s : s + len(block)] = np.take_along_axis(part_sim, order, axis=1)
    return idx, sim


def _approximate(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    index = NNDescent(x, metric="cosine", n_neighbors=k + 1, random_state=None)
    idx, dist = index.neighbor_graph
    keep = idx != np.arange(len(x))[:, None]
    # drop self where found, else the last (farthest) column
    keep[keep.all(axis=1), -1] = False
    idx = idx[keep].reshape(len(x), k)
    sim = (1.0 - dist[keep]).reshape(len(x), k).astype(np.float32)
    return idx.astype(np.int64), sim


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
