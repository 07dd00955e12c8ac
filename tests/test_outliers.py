"""The ``outlier`` issue type: images past the far-out fence of the dataset's outlier scores are
flagged with a reason that names their nearest class, weigh in ``review_priority``, reach the
review queue's filter, and a ``keep:outlier`` tag stops the flag."""

from __future__ import annotations

import numpy as np
from helpers import make_classes

from embedscope import findings
from embedscope.decisions import ReviewQueue
from embedscope.findings.outliers import class_outlier_score, outlier_flags
from embedscope.ingest import ingest
from embedscope.knn import neighbors
from embedscope.layout import Layout


def _analysis(labels: np.ndarray, foreign: int) -> dict:
    """Per-image results of vectors around one centre per class, the ``foreign`` row elsewhere:
    the kit's own neighbours and the outlier score analyse() computes from them."""
    rng = np.random.default_rng(0)
    centres = {c: rng.normal(0, 1, 64) for c in sorted(set(labels))}
    x = np.stack([centres[c] + rng.normal(0, 0.35, 64) for c in labels])
    x[foreign] = rng.normal(0, 1, 64)  # a picture of none of the classes
    idx, sim = neighbors(x, 5)
    n = len(labels)
    return {
        "neighbors": idx,
        "similarity": sim,
        "outlier_score": (1 - sim.mean(axis=1)).astype(np.float32),
        "mislabel_score": np.zeros(n, np.float32),
        "label_issue": np.zeros(n, bool),
        "suggested_label": labels.astype(object),
        "suggested_share": np.ones(n, np.float32),
        "probe_label": labels.astype(object),
        "probe_share": np.ones(n, np.float32),
        "neighbour_votes": np.full(n, 5),
        "k": 5,
    }


def test_an_image_far_from_every_class_is_flagged_explained_and_can_be_kept(tmp_path) -> None:
    root = make_classes(tmp_path / "imgs", per_class=10, size=16)
    layout = Layout("far", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(root), layout).reset_index(drop=True)
    rows = manifest[["path", "label"]]
    foreign = int(np.flatnonzero(rows["path"] == "green/green_3.jpg")[0])
    per_image = _analysis(rows["label"].to_numpy(str), foreign)

    table = findings.findings_table(rows, per_image, manifest).set_index("path")
    assert table["outlier"].sum() == 1 and table.loc["green/green_3.jpg", "outlier"]
    assert table.loc["green/green_3.jpg", "issues"].split(";")[0] == "outlier"
    reason = table.loc["green/green_3.jpg", "reason"]
    assert reason.startswith("far from every class: nearest is ") and " cosine (most" in reason
    score = table.loc["green/green_3.jpg", "outlier_score"]
    assert table.loc["green/green_3.jpg", "review_priority"] >= 1 + 0.7 * score - 1e-6
    points = rows.assign(x=0.0, y=0.0)
    points = findings.with_findings(points, table.reset_index())
    queue = ReviewQueue(points)  # the page's (page_data) and Dash's queue alike
    assert ("outlier (1)", "outlier") in queue.page_data()["options"]
    assert queue.entries("outlier") == [foreign]

    kept = manifest.assign(tags=np.where(rows["path"] == "green/green_3.jpg", "keep:outlier", ""))
    again = findings.findings_table(rows, per_image, kept)
    assert not again["outlier"].any() and findings.issue_counts(again)["outlier"] == 0


def test_the_fence_needs_a_spread_and_enough_images() -> None:
    calm = np.random.default_rng(1).normal(0.2, 0.01, 500)
    assert outlier_flags(calm)[0].sum() <= 1  # a normal spread: 3.4 sd, 4 in 10,000 past it
    flags, threshold = outlier_flags(np.r_[calm, 0.6, np.nan])
    assert flags.tolist()[-2:] == [True, False] and 0.2 < threshold < 0.6
    assert not outlier_flags(np.r_[np.zeros(10), 1.0])[0].any()  # too few to know a spread


def test_the_class_aware_score_sees_an_image_that_fits_the_dataset_but_not_its_class() -> None:
    """An image of class a filed under b is near many images (``outlier_score`` calls it
    ordinary) but far from its own class's; a class of one has nothing to measure."""
    rng = np.random.default_rng(0)
    centres = {c: rng.normal(0, 1, 32) for c in "abc"}
    labels = np.array([c for c in "abc" for _ in range(20)] + ["d"], dtype=object)
    x = np.stack([centres.get(c, centres["a"]) + rng.normal(0, 0.3, 32) for c in labels])
    labels[5] = "b"  # an "a" filed under b
    own = class_outlier_score(x, labels, k=5)
    assert np.nanargmax(own) == 5 and np.isnan(own[-1])
    _, sim = neighbors(x, 5)
    plain = 1 - sim.mean(axis=1)
    assert (plain > plain[5]).sum() >= 3 and own[5] > 3 * np.nanmedian(own)
