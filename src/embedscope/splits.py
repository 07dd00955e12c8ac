"""Honest numbers for a dataset with splits: each held-out split judged by the train split only.

Leave-one-out kNN accuracy over the whole dataset lets a test image vote with train images and
with its own copies in train; here each held-out image is classified by its nearest train
images only (kNN) and by a linear probe fitted on train only, each figure twice: on every
held-out image, and without those the leak search (:mod:`embedscope.findings.leaks`) found to
copy an earlier split, so the user sees how much the leaks inflate the number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.knn import Rows, knn_vote, normalize, sample_rows, top_k
from embedscope.vocabulary import UNLABELLED

#: Train images the probe is fitted on, at most (a seeded sample above, as UMAP and HDBSCAN
#: take one): at 1,000,000 images the train split alone is 4.1 GB of float32 vectors, which
#: the fit would hold more than once; the 84,000 of the 100,000-image bench are within it.
PROBE_TRAIN = 100_000
#: Held-out rows classified at a time (read from the vectors, which may be memory-mapped).
BLOCK = 65_536


def _knn(x, y_train, train: np.ndarray, held: np.ndarray, k: int) -> np.ndarray:
    """The vote of each held-out image's k nearest train images (:func:`~embedscope.knn.top_k`
    on :class:`~embedscope.knn.Rows` of ``x``: never a copy of the train split, nor the whole
    held x train matrix)."""
    idx, sim = top_k(Rows(x, held), Rows(x, train), k)
    return knn_vote(y_train, idx, sim)


def _probe(x, y_train, train: np.ndarray, held: np.ndarray) -> np.ndarray | None:
    """A logistic regression on the normalised vectors, fitted on train (on a seeded sample of
    :data:`PROBE_TRAIN` of them above that), predicting the held-out rows a block at a time;
    None with fewer than two train classes."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train)) < 2:
        return None
    fit = sample_rows(len(train), PROBE_TRAIN)
    model = LogisticRegression(max_iter=2000).fit(normalize(x[train[fit]]), y_train[fit])
    return np.concatenate(
        [model.predict(normalize(x[held[s : s + BLOCK]])) for s in range(0, len(held), BLOCK)]
    )


def _accuracy(truth: np.ndarray, guess: np.ndarray | None, keep: np.ndarray) -> float | None:
    if guess is None or not keep.any():
        return None
    return round(float((truth[keep] == guess[keep]).mean()), 4)


def split_report(vectors: np.ndarray, labels, splits, leaked, *, k: int = 10) -> dict:
    """Per split: its image count; per held-out split (every split but train): how many of its
    images leak, and kNN (among train images only) and linear-probe (fitted on train only)
    accuracy, ``*_all`` on every labelled image and ``*_without_leaks`` on those not leaked;
    ``classes_not_in_train`` where it has classes train lacks (:func:`_unseen`). Unlabelled
    images are neither fitted on nor scored."""
    labels = np.asarray(labels, dtype=object).astype(str)
    splits = np.asarray(splits, dtype=object).astype(str)
    leaked = np.asarray(leaked, dtype=bool)
    out: dict = {"images": {s: int((splits == s).sum()) for s in sorted(set(splits) - {""})}}
    train = (splits == "train") & (labels != UNLABELLED)
    if not train.any():
        out["reason"] = "no labelled train image: held-out splits not judged"
        return out
    train_rows, yt = np.flatnonzero(train), labels[train]
    # every held-out split at once: one search among train and one probe fit for all of them
    rows = np.flatnonzero((splits != "") & (splits != "train") & (labels != UNLABELLED))
    knn = _knn(vectors, yt, train_rows, rows, k) if len(rows) else None
    probe = _probe(vectors, yt, train_rows, rows) if len(rows) else None
    for split in sorted(set(splits) - {"", "train"}):
        facts: dict = {
            "images": int((splits == split).sum()),
            "leaks": int((leaked & (splits == split)).sum()),
        }
        mine = splits[rows] == split
        if mine.any():
            truth, clean = labels[rows][mine], ~leaked[rows][mine]
            unseen = _unseen(truth, yt)
            if unseen:
                facts["classes_not_in_train"] = unseen
            everything = np.ones(len(truth), bool)
            guess = probe[mine] if probe is not None else None
            facts |= {
                "scored": int(mine.sum()),
                "knn_accuracy_all": _accuracy(truth, knn[mine], everything),
                "knn_accuracy_without_leaks": _accuracy(truth, knn[mine], clean),
                "probe_accuracy_all": _accuracy(truth, guess, everything),
                "probe_accuracy_without_leaks": _accuracy(truth, guess, clean),
            }
        out[split] = facts
    return out


def _unseen(truth: np.ndarray, train_labels: np.ndarray) -> list[str]:
    """The classes of a held-out split that no train image has (no train image can vote for
    them, nor the probe predict them: its figures are lower by their share), each named with
    the train class it differs from only in case or spaces (``cat (train: Cat)``)."""
    known = set(train_labels)
    folded = {" ".join(k.split()).casefold(): k for k in known}
    out = []
    for label in sorted(set(truth) - known):
        near = folded.get(" ".join(label.split()).casefold())
        out.append(f"{label} (train: {near})" if near else label)
    return out


def split_table(report: dict) -> pd.DataFrame:
    """:func:`split_report` as a table to show, a held-out split a row: counts as whole numbers,
    the accuracies, the classes train lacks last as text, and blank where a split has no
    labelled image to score (a set to predict)."""
    table = pd.DataFrame.from_dict(
        {s: v for s, v in report.items() if isinstance(v, dict) and s != "images"}, orient="index"
    )
    for column in ("images", "leaks", "scored"):
        if column in table:
            table[column] = table[column].astype("Int64")
    if "classes_not_in_train" in table:
        unseen = table.pop("classes_not_in_train")
        table["classes_not_in_train"] = unseen.map(
            lambda c: ", ".join(c) if isinstance(c, list) else ""
        )
    return table.astype(object).where(table.notna(), "")
