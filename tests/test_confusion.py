"""Classes the model confuses: pairs that overlap most, beside cleanlab's view of the same
probabilities, and each class's label quality, in the label-issue facts (metrics.json)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from embedscope.confusion import look_alike_counts, look_alikes
from embedscope.knn import neighbors
from embedscope.label_issues import label_issues


def test_two_classes_of_one_kind_are_the_most_confused_pair_and_rank_last() -> None:
    """``cat`` and ``lynx`` share one centre (a model that cannot tell them apart); ``car`` and
    ``ship`` have their own."""
    rng = np.random.default_rng(0)
    centres = {c: rng.normal(0, 1, 32) for c in ("car", "ship", "feline")}
    labels = np.array(["car"] * 30 + ["ship"] * 30 + ["cat"] * 30 + ["lynx"] * 30, dtype=object)
    kind = np.where(np.isin(labels, ["cat", "lynx"]), "feline", labels)
    x = np.stack([centres[k] + rng.normal(0, 0.6, 32) for k in kind]).astype(np.float32)
    idx, sim = neighbors(x, 10)
    found = label_issues(x, labels, idx, sim)
    facts = found.facts
    json.dumps(facts)  # metrics.json takes them as they are

    top = facts["confused_pairs"][0]
    assert {top["class_a"], top["class_b"]} == {"cat", "lynx"}
    assert top["images"] == 60 and 0.2 < top["share"] <= 1
    assert top["share"] == round((top["a_as_b"] + top["b_as_a"]) / 60, 4)
    assert top["joint_probability"] > 0 and top["cleanlab_overlapping"] > 0  # cleanlab agrees
    others = [
        p for p in facts["confused_pairs"][1:] if {p["class_a"], p["class_b"]} != {"cat", "lynx"}
    ]
    assert all(p["share"] < top["share"] / 3 for p in others)
    # the page's and Dash's "A that look like B" are the images the table counts
    pairs = look_alikes(pd.Series(labels), found.table["suggested_label"])
    counts = look_alike_counts(pairs)
    for p in facts["confused_pairs"]:
        a, b = p["class_a"], p["class_b"]
        assert counts.get(f"{a} that look like {b}", 0) == p["a_as_b"]
        assert counts.get(f"{b} that look like {a}", 0) == p["b_as_a"]
    assert counts.iloc[0] == max(counts) and counts.sum() == (pairs != "").sum()

    ranked = [r["class"] for r in facts["class_label_quality"]]
    assert set(ranked[:2]) == {"cat", "lynx"} and set(ranked[2:]) == {"car", "ship"}
    qualities = [r["label_quality"] for r in facts["class_label_quality"]]
    assert qualities == sorted(qualities)  # worst first
