"""Classes the model confuses: which pairs to merge or relabel, and each class's label quality.

From the combined class probabilities of :func:`embedscope.label_issues.label_issues` (the
probe, the neighbours and, when used, zero-shot: none saw an image's own label), side by side
with cleanlab's own view of the same probabilities:

- the kit's overlap of classes A and B: the share of their images that the evidence puts in
  the other one (an image of A most probably B, or of B most probably A);
- cleanlab's ``find_overlapping_classes``: the estimated joint probability that an image of one
  carries the other's label, from confident learning's joint;
- each class's label quality, ranked worst first (cleanlab's ``rank_classes_by_label_quality``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: How many pairs ``metrics.json`` lists (those with any overlap, most first).
TOP_PAIRS = 10


def confused_pairs(given: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per pair of classes with any overlap, most first: ``class_a``, ``class_b``,
    ``a_as_b`` and ``b_as_a`` (images of one most probably the other), ``images`` (both
    classes), ``share`` ((a_as_b + b_as_a) / images) and cleanlab's ``joint_probability`` and
    ``cleanlab_overlapping`` (its estimated count) for the same pair."""
    from cleanlab.dataset import find_overlapping_classes

    k = len(classes)
    best = probs.argmax(axis=1)
    moved = np.zeros((k, k), np.int64)  # moved[i, j]: images of i most probably j
    np.add.at(moved, (given, best), 1)
    sizes = np.bincount(given, minlength=k)
    theirs = find_overlapping_classes(labels=given, pred_probs=probs)
    joint = {
        (min(a, b), max(a, b)): (float(p), int(n))
        for a, b, n, p in theirs[
            ["Class Index A", "Class Index B", "Num Overlapping Examples", "Joint Probability"]
        ].itertuples(index=False)
    }
    rows = []
    for a in range(k):
        for b in range(a + 1, k):
            together = int(moved[a, b] + moved[b, a])
            p, n = joint.get((a, b), (0.0, 0))
            if together == 0 and p == 0:
                continue
            rows.append(
                {
                    "class_a": classes[a],
                    "class_b": classes[b],
                    "a_as_b": int(moved[a, b]),
                    "b_as_a": int(moved[b, a]),
                    "images": int(sizes[a] + sizes[b]),
                    "share": round(together / max(int(sizes[a] + sizes[b]), 1), 4),
                    "joint_probability": round(p, 5),
                    "cleanlab_overlapping": n,
                }
            )
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    return table.sort_values(
        ["share", "joint_probability"], ascending=False, kind="stable"
    ).reset_index(drop=True)


PAIR_COLUMNS = (
    "class_a",
    "class_b",
    "a_as_b",
    "b_as_a",
    "images",
    "share",
    "joint_probability",
    "cleanlab_overlapping",
)


def class_label_quality(given: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """cleanlab's ``rank_classes_by_label_quality`` with class names, worst first: ``class``,
    ``label_quality`` (0..1), ``label_issues`` (images of it likely labelled wrong),
    ``label_noise`` (their share) and ``inverse_label_issues`` (images of others that are it)."""
    from cleanlab.dataset import rank_classes_by_label_quality

    ranked = rank_classes_by_label_quality(labels=given, pred_probs=probs)
    return pd.DataFrame(
        {
            "class": [classes[i] for i in ranked["Class Index"]],
            "label_quality": ranked["Label Quality Score"].round(4).to_numpy(),
            "label_issues": ranked["Label Issues"].astype(int).to_numpy(),
            "label_noise": ranked["Label Noise"].round(4).to_numpy(),
            "inverse_label_issues": ranked["Inverse Label Issues"].astype(int).to_numpy(),
        }
    )


def confusion_facts(given: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """What ``metrics.json`` keeps: the :data:`TOP_PAIRS` most overlapping pairs and every
    class's label quality, worst first (JSON-ready)."""
    pairs = confused_pairs(given, probs, classes).head(TOP_PAIRS)
    ranked = class_label_quality(given, probs, classes)
    return {
        "confused_pairs": pairs.to_dict(orient="records"),
        "class_label_quality": ranked.to_dict(orient="records"),
    }


#: How an image of class A that looks like class B is named, by the page and Dash alike.
LOOK_ALIKE = "{a} that look like {b}"


def look_alikes(labels: pd.Series, suggested: pd.Series) -> pd.Series:
    """Per image, the pair it stands for, :data:`LOOK_ALIKE` (labelled A, most probably B by
    the combined evidence: the images :func:`confused_pairs` counts in ``a_as_b``), or '' where
    its suggestion is its own label or there is none. The page's "class that looks like
    another" (explorer.js ``lookAlike``) applies the same rule to its labels in the browser."""
    a = labels.astype(object).where(labels.notna(), "").astype(str).to_numpy(dtype=object)
    b = suggested.astype(object).where(suggested.notna(), "").astype(str).to_numpy(dtype=object)
    named = [
        LOOK_ALIKE.format(a=x, b=y) if x and y and x != y else "" for x, y in zip(a, b, strict=True)
    ]
    return pd.Series(named, index=labels.index, dtype=object)


def look_alike_counts(pairs: pd.Series) -> pd.Series:
    """How many images each pair of :func:`look_alikes` has, most first (ties by name), as the
    page lists them."""
    counts = pairs[pairs != ""].value_counts()
    order = sorted(counts.index, key=lambda p: (-counts[p], p))
    return counts.reindex(order)
