"""Label issues: which labelled images are most likely wrong, and what they should be.

Each image gets class probabilities from signals that never saw its own label:

- a linear probe on the L2-normalised embeddings, out of fold (the field's standard recipe:
  logistic regression over stratified folds), which learns each class's direction from all
  of its images and so keeps ranking well as a set grows;
- the neighbour vote (leave-one-out k nearest neighbours, weighted by cosine), which sees
  local structure a linear probe cannot;
- the zero-shot label, where the model has a text tower and its class names mean something to
  it (it then agrees with most labels).

Their weighted mean goes to cleanlab, the field's standard package: its label quality scores
rank (``mislabel_score`` = 1 - quality) and confident learning
(``find_label_issues``) decides ``label_issue`` with per-class thresholds learnt from the data
itself, not a fixed cut-off.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from embedscope.confusion import confusion_facts
from embedscope.knn import labels_unjudged, normalize
from embedscope.vocabulary import UNLABELLED

#: Bumped whenever the scores change, so cached results are recomputed.
VERSION = 7  # 7: the probe's PCA is exact (streaming), 6: confused pairs in the facts
#: Folds of the out-of-fold probe; a class needs this many images for the probe to learn it.
FOLDS = 5
#: Weights of the probe and the neighbour vote in the mean of their probabilities (tuned on
#: Fashion-MNIST's test split, which ``make bench`` never reports on).
PROBE_WEIGHT = 0.7
NEIGHBOUR_WEIGHT = 0.3
#: Share of cleanlab's ``normalized_margin`` in the label quality, beside ``self_confidence``:
#: a label moved to the class an image most resembles leaves that class a close second, which
#: the margin sees and self-confidence alone does not (average precision on such errors 0.32
#: -> 0.44 on the tuning split, with uniform errors ranked as well as before).
MARGIN_MIX = 0.1
#: Weight of the zero-shot label, used only when it agrees with at least
#: ``ZERO_SHOT_MIN_AGREEMENT`` of the labels (otherwise the class names mean little to the model).
ZERO_SHOT_WEIGHT = 0.25
ZERO_SHOT_MIN_AGREEMENT = 0.5
#: Pseudo-count of the class prior mixed into the neighbour vote, so that ten neighbours that
#: all agree do not claim certainty.
NEIGHBOUR_SMOOTHING = 1.0
#: The probe is fitted on at most this many PCA dimensions of the normalised vectors: as good a
#: ranking as all 1,280 (average precision within 0.002 on the tuning split) at a fifth of
#: the cost.
PROBE_DIMS = 256
#: Above this many matrix entries (images x dimensions x classes) the probe is fitted on fewer
#: dimensions still (at least 32), which keeps its cost bounded at 1,000 classes.
PROBE_BUDGET = 100_000 * PROBE_DIMS * 10
#: Iterations of the probe's fit past that budget (a converged fit needs a few dozen on 10
#: classes, hundreds on 1,000).
EARLY_STOP = 100


@dataclass(frozen=True)
class LabelIssues:
    """Per-image results aligned with the input rows, plus the facts behind them."""

    table: pd.DataFrame
    facts: dict


def probe_probabilities(
    x: np.ndarray, codes: np.ndarray, n_classes: int, *, folds: int = FOLDS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold class probabilities of a logistic regression for rows with ``codes >= 0``,
    and for rows with ``codes < 0`` (unlabelled, or in a class too small to learn) the mean
    prediction of the fold models. Returns ``(probs, learnt)``: ``(n, n_classes)`` and the mask
    of classes the probe could learn (columns of the others are 0)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    train = codes >= 0
    probs = np.zeros((len(x), n_classes), np.float64)
    learnt = np.zeros(n_classes, bool)
    learnt[np.unique(codes[train])] = True
    if learnt.sum() < 2:
        return probs, np.zeros(n_classes, bool)
    x = _reduced(x, n_classes)
    # past the budget (many classes) the fit stops early: a probe still, at a bounded cost
    over = len(x) * x.shape[1] * n_classes > PROBE_BUDGET
    rows = np.flatnonzero(train)
    others = np.flatnonzero(~train)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, codes[rows])
    for fit_at, held_at in splits:
        fit, held = rows[fit_at], rows[held_at]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(max_iter=EARLY_STOP if over else 2000)
            model.fit(x[fit], codes[fit])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
        if len(others):
            probs[np.ix_(others, model.classes_)] += model.predict_proba(x[others]) / folds
    return probs, learnt


def _reduced(x: np.ndarray, n_classes: int, *, unit: bool = False) -> np.ndarray:
    """The leading PCA dimensions of ``x`` (``unit``: of its L2-normalised rows) the probe is
    fitted on: :data:`PROBE_DIMS`, fewer when that would cost more than :data:`PROBE_BUDGET`
    (many classes), never under 32. An exact PCA read a block at a time
    (:func:`embedscope.reduce.streaming_pca`): ``x`` may be a memory map of 5 GB."""
    n, d = x.shape
    keep = min(PROBE_DIMS, max(32, PROBE_BUDGET // max(n * n_classes, 1)))
    if keep >= min(n, d):
        return normalize(x) if unit else x
    from embedscope.reduce import streaming_pca

    return streaming_pca(x, keep, unit=unit)[0]


def neighbour_probabilities(
    codes: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    n_classes: int,
    *,
    smoothing: float = NEIGHBOUR_SMOOTHING,
) -> np.ndarray:
    """Each image's neighbours vote for their labels with their cosine (unlabelled neighbours
    and negative similarities count zero), mixed with ``smoothing`` images' worth of the class
    prior: ``(n, n_classes)`` probabilities that never used the image's own label."""
    n = len(codes)
    prior = np.bincount(codes[codes >= 0], minlength=n_classes).astype(np.float64)
    prior /= max(prior.sum(), 1.0)
    votes = np.zeros((n, n_classes), np.float64)
    if idx.shape[1]:
        near = codes[idx]
        weight = np.clip(np.asarray(sim, np.float64), 0.0, None) * (near >= 0)
        rows = np.repeat(np.arange(n), idx.shape[1])
        np.add.at(votes, (rows, np.where(near >= 0, near, 0).ravel()), weight.ravel())
    return (votes + smoothing * prior) / (votes.sum(axis=1, keepdims=True) + smoothing)


def zero_shot_probabilities(
    zero_shot: np.ndarray, classes: list[str], *, smoothing: float = NEIGHBOUR_SMOOTHING
) -> np.ndarray:
    """The zero-shot label as one vote, smoothed like the neighbour vote (one image's worth of
    a uniform prior): a second opinion, never a certainty."""
    at = {c: i for i, c in enumerate(classes)}
    probs = np.full((len(zero_shot), len(classes)), smoothing / len(classes), np.float64)
    for i, label in enumerate(zero_shot):
        if label in at:
            probs[i, at[label]] += 1.0
    return probs / (1.0 + smoothing)


def label_issues(
    vectors: np.ndarray,
    labels: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    *,
    zero_shot: np.ndarray | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> LabelIssues:
    """Rank and flag likely label errors of a labelled image set.

    ``vectors`` are the embeddings, ``labels`` one per row (``(unlabelled)`` allowed), ``idx``
    and ``sim`` each row's nearest neighbours (leave-one-out), ``zero_shot`` an optional
    zero-shot label per row. Returns per row:

    - ``mislabel_score`` 0..1 (higher = more likely wrong): 1 - cleanlab's label quality of the
      combined probabilities (self-confidence with :data:`MARGIN_MIX` of the normalised
      margin); 0 for unlabelled rows, which cannot be mislabelled;
    - ``label_issue``: cleanlab's confident-learning verdict on the combined probabilities;
    - ``suggested_label`` and ``suggested_share``: the most probable class and its probability
      (for unlabelled rows too: a proposal);
    - ``probe_label``/``probe_share``, ``neighbour_label`` and ``neighbour_votes`` (how many of
      the k neighbours carry the suggestion): what each signal said, for the reason a person
      reads.

    Classes with fewer than ``folds`` images cannot be learnt by the probe: their images are
    judged by the neighbours (and zero-shot) alone, and they stay candidate labels for others.
    With fewer than two labelled classes nothing is judged (the same columns, nothing scored or
    flagged) and ``facts["skipped"]`` says why in one line.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    labelled = labels != UNLABELLED
    classes = sorted({str(v) for v in labels[labelled]})
    code_of = {c: i for i, c in enumerate(classes)}
    codes = np.array([code_of.get(str(v), -1) for v in labels], dtype=np.int64)
    counts = np.bincount(codes[labelled], minlength=len(classes)) if classes else np.zeros(0)
    table = pd.DataFrame(
        {
            "mislabel_score": np.zeros(n, np.float32),
            "label_issue": np.zeros(n, bool),
            "suggested_label": labels.copy(),
            "suggested_share": np.zeros(n, np.float32),
        }
    )
    facts: dict = {"classes": len(classes), "folds": folds}
    why = labels_unjudged(labels)
    if why is not None:
        return _unjudged(table, facts | {"skipped": why}, labels, zero_shot)

    x = _reduced(vectors, len(classes), unit=True)  # never a normalised copy of them all
    probe_codes = np.where(labelled & (counts[np.maximum(codes, 0)] >= folds), codes, -1)
    probe, learnt = probe_probabilities(x, probe_codes, len(classes), folds=folds, seed=seed)
    knn = neighbour_probabilities(codes, idx, sim, len(classes))
    # The probe knows only the classes it learnt: it splits the neighbours' share of those
    # classes among them, and the neighbours alone speak for the small classes.
    probed = learnt.any()
    if probed:
        probe = probe * knn[:, learnt].sum(axis=1, keepdims=True)
        probe[:, ~learnt] = knn[:, ~learnt]
    combined = (PROBE_WEIGHT if probed else 0.0) * probe + NEIGHBOUR_WEIGHT * knn
    total = (PROBE_WEIGHT if probed else 0.0) + NEIGHBOUR_WEIGHT
    zs_used = False
    if zero_shot is not None:
        zero_shot = np.asarray(zero_shot, dtype=object)
        agreement = float((zero_shot[labelled] == labels[labelled]).mean())
        facts["zero_shot_agreement"] = round(agreement, 4)
        if agreement >= ZERO_SHOT_MIN_AGREEMENT:
            combined = combined + ZERO_SHOT_WEIGHT * zero_shot_probabilities(zero_shot, classes)
            total = total + ZERO_SHOT_WEIGHT
            zs_used = True
    combined /= total

    given = codes[labelled]
    quality = (1 - MARGIN_MIX) * get_label_quality_scores(
        given, combined[labelled], method="self_confidence"
    ) + MARGIN_MIX * get_label_quality_scores(given, combined[labelled], method="normalized_margin")
    flagged = np.zeros(n, bool)
    flagged[labelled] = find_label_issues(given, combined[labelled])
    best = combined.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    table.loc[labelled, "mislabel_score"] = (1.0 - quality).astype(np.float32)
    table["label_issue"] = flagged
    table["suggested_label"] = names[best]
    table["suggested_share"] = combined[np.arange(n), best].astype(np.float32)
    table["probe_label"] = names[probe.argmax(axis=1)] if probed else ""
    table["probe_share"] = np.where(probed, probe[np.arange(n), best], np.nan).astype(np.float32)
    near = codes[idx] if idx.shape[1] else np.zeros((n, 0), np.int64)
    table["neighbour_votes"] = (near == best[:, None]).sum(axis=1).astype(np.int16)
    facts |= {
        "label_issues": int(flagged.sum()),
        "probe_classes": int(learnt.sum()),
        "small_classes": [c for c, k in zip(classes, counts, strict=True) if k < folds],
        "zero_shot_used": zs_used,
        # which classes the same probabilities mix up, beside cleanlab's view of them
        **confusion_facts(given, combined[labelled], classes),
    }
    return LabelIssues(table, facts)


def _unjudged(table: pd.DataFrame, facts: dict, labels: np.ndarray, zero_shot) -> LabelIssues:
    """The full set of columns when the labels cannot be judged (no labels, or one class):
    nothing scored or flagged; a labelled image's suggestion is its own label, an unlabelled
    one's the zero-shot label when the model has one (:func:`zero_shot_probabilities`' share:
    one vote against a uniform prior), else none."""
    n = len(labels)
    labelled = labels != UNLABELLED
    if zero_shot is not None:
        zero_shot = np.asarray(zero_shot, dtype=object)
        names = sorted({str(v) for v in zero_shot})
        share = zero_shot_probabilities(zero_shot, names).max(axis=1)
        table["suggested_label"] = np.where(labelled, labels, zero_shot)
        table["suggested_share"] = np.where(labelled, 0.0, share).astype(np.float32)
        facts["zero_shot_used"] = True
    table["probe_label"] = np.full(n, "", dtype=object)
    table["probe_share"] = np.full(n, np.nan, np.float32)
    table["neighbour_votes"] = np.zeros(n, np.int16)  # no vote was taken
    return LabelIssues(table, facts | {"label_issues": 0, "probe_classes": 0})
