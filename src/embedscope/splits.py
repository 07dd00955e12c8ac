"""Honest numbers for a dataset with splits: each held-out split judged by the train split only.

Leave-one-out kNN accuracy over the whole dataset lets a test image vote with train images and
with its own copies in train; here each held-out image is classified by its nearest train
images only (kNN) and by a linear probe fitted on train only, each figure twice: on every
held-out image, and without those the leak search (:mod:`embedscope.findings.leaks`) found to
copy an earlier split, so the user sees how much the leaks inflate the number.
"""

from __future__ import annotations

import numpy as np

from embedscope.knn import knn_vote, normalize, top_k
from embedscope.vocabulary import UNLABELLED


def _knn(x_train, y_train, x_test, k: int) -> np.ndarray:
    """The vote of each held-out image's k nearest train images (:func:`~embedscope.knn.top_k`:
    blocks of products or the index, never the whole held x train matrix)."""
    idx, sim = top_k(x_test, x_train, k)
    return knn_vote(y_train, idx, sim)


def _probe(x_train, y_train, x_test) -> np.ndarray | None:
    """A logistic regression fitted on train (None with fewer than two train classes)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train)) < 2:
        return None
    return LogisticRegression(max_iter=2000).fit(x_train, y_train).predict(x_test)


def _accuracy(truth: np.ndarray, guess: np.ndarray | None, keep: np.ndarray) -> float | None:
    if guess is None or not keep.any():
        return None
    return round(float((truth[keep] == guess[keep]).mean()), 4)


def split_report(vectors: np.ndarray, labels, splits, leaked, *, k: int = 10) -> dict:
    """Per split: its image count; per held-out split (every split but train): how many of its
    images leak, and kNN (among train images only) and linear-probe (fitted on train only)
    accuracy, ``*_all`` on every labelled image and ``*_without_leaks`` on those not leaked.
    Unlabelled images are neither fitted on nor scored."""
    labels = np.asarray(labels, dtype=object).astype(str)
    splits = np.asarray(splits, dtype=object).astype(str)
    leaked = np.asarray(leaked, dtype=bool)
    out: dict = {"images": {s: int((splits == s).sum()) for s in sorted(set(splits) - {""})}}
    train = (splits == "train") & (labels != UNLABELLED)
    if not train.any():
        out["reason"] = "no labelled train image: held-out splits not judged"
        return out
    x = normalize(vectors)
    xt, yt = x[train], labels[train]  # one copy of the train split for every held-out one
    for split in sorted(set(splits) - {"", "train"}):
        held = (splits == split) & (labels != UNLABELLED)
        facts: dict = {
            "images": int((splits == split).sum()),
            "leaks": int((leaked & (splits == split)).sum()),
        }
        if held.any():
            truth = labels[held]
            xh = x[held]
            knn, probe = _knn(xt, yt, xh, k), _probe(xt, yt, xh)
            clean = ~leaked[held]
            facts |= {
                "scored": int(held.sum()),
                "knn_accuracy_all": _accuracy(truth, knn, np.ones(len(truth), bool)),
                "knn_accuracy_without_leaks": _accuracy(truth, knn, clean),
                "probe_accuracy_all": _accuracy(truth, probe, np.ones(len(truth), bool)),
                "probe_accuracy_without_leaks": _accuracy(truth, probe, clean),
            }
        out[split] = facts
    return out
