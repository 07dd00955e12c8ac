"""Outlier findings: images far from every class in embedding space.

``outlier_score`` is ``1 - mean cosine similarity to the k nearest neighbours`` (from
:func:`embedscope.analyse.analyse`), the statistic cleanlab's ``OutOfDistribution`` computes on
features. The ``outlier`` flag takes the images past a fence of the dataset's own scores
(:data:`FENCE`: Q3 + 2 x IQR): cosine similarities mean different things under different
models, so the bar is the dataset's spread, not a fixed number. On a normal spread that fence
is 3.4 standard deviations out (4 images in 10,000).

Measured (``make bench``, section ``outliers``): with no foreign image it flags 0 of the
sample's 360 emoji and 5 of 2,000 Fashion-MNIST images; with foreign images slipped in, 91% of
what it flags in Fashion-MNIST is foreign (recall 0.99), 80% in the sample (recall 0.09: each
emoji is unlike the others, so photos among them are not far out). Tukey's 1.5 flags 22 of the
clean 2,000; his far-out 3 finds almost nothing in the sample. A ``keep:outlier`` tag keeps an
image unflagged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.vocabulary import OUTLIER_SCORE

#: How many interquartile ranges past the third quartile an ``outlier_score`` must lie.
FENCE = 2.0
#: The fewest images whose spread makes a fence (fewer: nothing is flagged).
MIN_IMAGES = 20


def outlier_flags(score: np.ndarray, fence: float = FENCE) -> tuple[np.ndarray, float]:
    """(flags, threshold): scores above Q3 + ``fence`` x IQR of the finite scores."""
    score = np.asarray(score, np.float64)
    known = score[np.isfinite(score)]
    if len(known) < MIN_IMAGES:
        return np.zeros(len(score), bool), float("inf")
    q1, q3 = np.percentile(known, [25, 75])
    threshold = float(q3 + fence * (q3 - q1))
    return np.nan_to_num(score, nan=-np.inf) > threshold, threshold


def class_outlier_score(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """1 - mean cosine similarity to the ``k`` nearest images **of the image's own label**: the
    class-aware score, high for an image that fits the dataset but not its class (a class the
    labels never name, spread over the others), where ``outlier_score`` sees only how far it is
    from everything. A class of one image has no neighbour to measure: NaN. Measured against
    cleanlab in ``make bench`` (section ``outliers``); not a findings column yet."""
    from embedscope.knn import neighbors

    labels = np.asarray(labels, dtype=object)
    out = np.full(len(labels), np.nan)
    for label in pd.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        _, sim = neighbors(vectors[rows], min(k, len(rows) - 1))
        out[rows] = 1.0 - sim.astype(np.float64).mean(axis=1)
    return out


def _compute(context: Context) -> pd.DataFrame:
    score = np.asarray(context.per_image["outlier_score"], np.float32)
    return pd.DataFrame({OUTLIER_SCORE: score, "outlier": outlier_flags(score)[0]})


def _reasons(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    """ "far from every class: nearest is a cat at 0.41 cosine (most images: 0.83)"."""
    if not len(at):
        return []
    sim = np.asarray(context.per_image["similarity"], np.float64)
    idx = np.asarray(context.per_image["neighbors"])
    labels = context.rows["label"].to_numpy(dtype=object)
    typical = float(np.median(sim[:, 0])) if sim.size else float("nan")
    out = []
    for i in at:
        near = labels[idx[i, 0]] if sim.shape[1] else "?"
        nearest = float(sim[i, 0]) if sim.shape[1] else float("nan")
        out.append(
            f"far from every class: nearest is {near} at {nearest:.2f} cosine "
            f"(most images: {typical:.2f})"
        )
    return out


FAMILY = Family(
    name="outliers",
    order=20,
    columns=(
        Column(OUTLIER_SCORE, "1 - mean cosine similarity to the neighbours"),
        Column("outlier", "past the far-out fence of the dataset's outlier scores"),
    ),
    compute=_compute,
    types=(
        IssueType(
            "outlier",
            weight=0.7,
            reason=_reasons,
            doc="far from every class: `outlier_score` past Q3 + 2 x IQR of the dataset's",
        ),
    ),
)
