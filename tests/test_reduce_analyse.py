"""Reducers and quality numbers on synthetic data with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedscope.analyse import (
    cluster_table,
    clusters,
    look_alikes,
    projection_quality,
)
from embedscope.ingest import UNLABELLED
from embedscope.knn import knn_report, knn_vote, neighbors
from embedscope.label_issues import label_issues, neighbour_probabilities
from embedscope.reduce import METHODS, reduce


def blobs(n_per: int = 40, dim: int = 64, k: int = 3, seed: int = 0):
    """Well separated clusters in random directions: every good method must keep them apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    labels = np.repeat([f"c{i}" for i in range(k)], n_per).astype(object)
    return x, labels


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dims", [2, 3])
def test_each_reducer_keeps_separated_clusters_apart(method: str, dims: int) -> None:
    x, labels = blobs()
    coords, facts = reduce(x, method, dims, random_state=0, chunk_size=50)
    assert coords.shape == (len(x), dims) and np.isfinite(coords).all()
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)  # distances in the map
    np.fill_diagonal(d, np.inf)
    nearest = labels[np.argsort(d, axis=1)[:, :5]]
    assert (nearest == labels[:, None]).mean() > 0.9, method  # 3D t-SNE on 120 points: ~0.93
    q = projection_quality(x, coords, labels)
    assert q["trustworthiness"] > 0.8, (method, q)
    assert q["silhouette_projection"] > 0.25, (method, q)
    if method in ("pca", "ipca"):
        assert len(facts["explained_variance_ratio"]) == dims


def test_pca_and_seeded_umap_are_identical_on_rerun() -> None:
    x, _ = blobs()
    for method in ("pca", "umap"):
        a, _ = reduce(x, method, 3, random_state=7)
        b, _ = reduce(x, method, 3, random_state=7)
        np.testing.assert_array_equal(a, b)


def test_ipca_streams_a_memmap_and_matches_pca(tmp_path: Path) -> None:
    x, _ = blobs(n_per=100, k=4)  # four clusters span three strong directions
    np.save(tmp_path / "v.npy", x)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    inc, _ = reduce(mm, "ipca", 3, chunk_size=64)
    full, _ = reduce(x, "pca", 3)
    # the same subspace up to sign: per-axis absolute correlation near 1
    for a, b in zip(inc.T, full.T, strict=True):
        assert abs(np.corrcoef(a, b)[0, 1]) > 0.99


def test_knn_accuracy_is_one_on_separated_clusters_and_drops_with_planted_errors() -> None:
    x, labels = blobs()
    idx, sim = neighbors(x, 10)
    assert (idx != np.arange(len(x))[:, None]).all(), "a point must not be its own neighbour"
    assert knn_report(labels, idx, sim)["knn_accuracy"] == 1.0
    wrong = labels.copy()
    planted = [0, 45, 90]
    wrong[planted] = ["c1", "c2", "c0"]
    report = knn_report(wrong, idx, sim)
    assert report["knn_accuracy"] == pytest.approx(1 - 3 / 120, abs=1e-4)
    found = label_issues(x, wrong, idx, sim).table
    top3 = set(np.argsort(-found["mislabel_score"].to_numpy())[:3])
    assert top3 == set(planted)
    assert list(found["suggested_label"][planted]) == ["c0", "c1", "c2"]
    assert set(np.flatnonzero(found["label_issue"])) == set(planted)


def test_knn_matches_brute_force_definition() -> None:
    """Leave-one-out 10-NN majority vote under cosine similarity, checked the slow way."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.choice(["a", "b", "c"], 60).astype(object)
    idx, sim = neighbors(x, 10)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    for i in range(60):
        assert set(idx[i]) == set(np.argsort(-s[i])[:10])
    pred = knn_vote(labels, idx, sim)
    expected = []
    for i in range(60):
        votes = pd.Series(labels[idx[i]]).value_counts()
        top = votes[votes == votes.max()].index
        expected.append(top[0] if len(top) == 1 else pred[i])  # ties: any of the tied labels
        assert pred[i] in top
    assert list(pred) == expected


def test_unlabelled_images_are_not_scored_and_single_class_says_why() -> None:
    x, labels = blobs(k=2)
    labels[:5] = UNLABELLED
    idx, sim = neighbors(x, 10)
    assert knn_report(labels, idx, sim)["scored_images"] == len(x) - 5
    one = np.array(["only"] * len(x), dtype=object)
    report = knn_report(one, idx, sim)
    assert report["knn_accuracy"] is None and "only one class (only)" in report["reason"]


def test_approximate_neighbours_agree_with_exact(monkeypatch) -> None:
    import embedscope.knn as knn

    x, _ = blobs(n_per=200, dim=32)
    exact, _ = neighbors(x, 10)
    monkeypatch.setattr(knn, "EXACT_LIMIT", 10)
    approx, sim = neighbors(x, 10)
    assert approx.shape == exact.shape and (approx != np.arange(len(x))[:, None]).all()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.9


def test_reduce_rejects_bad_input_clearly() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        reduce(np.zeros((10, 4)), "lda")
    with pytest.raises(ValueError, match="at least"):
        reduce(np.zeros((3, 4)), "pca", 3)


def test_near_duplicates_group_planted_copies_only() -> None:
    x, _ = blobs(n_per=40, dim=64)
    rng = np.random.default_rng(5)
    planted = {3: 50, 7: 90, 90: 91}  # 7, 90, 91 form one group through 90
    for src, dst in planted.items():
        x[dst] = x[src] + rng.normal(scale=1e-3, size=x.shape[1])
    idx, sim = neighbors(x, 10)
    groups = look_alikes(idx, sim, threshold=0.999)
    assert groups[3] == groups[50] >= 0
    assert groups[7] == groups[90] == groups[91] >= 0 and groups[7] != groups[3]
    assert (groups >= 0).sum() == 5


def test_clusters_recover_separated_blobs() -> None:
    x, labels = blobs(n_per=60, k=4)
    found = clusters(x)
    table = cluster_table(labels, found)
    assert len(table) == 4 and (table["purity"] == 1.0).all()
    assert (found >= 0).mean() > 0.9


def test_neighbour_vote_weighs_similarity_and_ignores_unlabelled_neighbours() -> None:
    """Hand-made neighbour tables with a known answer: each labelled neighbour votes its
    cosine (negative counts zero), unlabelled ones do not vote, one image's worth of the class
    prior keeps the vote from certainty."""
    codes = np.array([0, 0, 0, 1, 1, -1, 0])  # -1: unlabelled
    idx = np.array([[3, 4, 1], [5, 5, 5], [0, 1, 3], [0, 1, 2], [0, 3, 5], [0, 1, 2], [3, 4, 0]])
    sim = np.array([[0.9, 0.8, 0.5], [0.7, 0.7, 0.7], [0.6, 0.6, -0.3]] + [[0.5] * 3] * 4)
    p = neighbour_probabilities(codes, idx, sim.astype(np.float32), 2)
    prior = np.array([4, 2]) / 6
    np.testing.assert_allclose(p[0], (np.array([0.5, 1.7]) + prior) / 3.2)
    np.testing.assert_allclose(p[1], prior)  # only an unlabelled neighbour: the prior alone
    np.testing.assert_allclose(p[2], (np.array([1.2, 0.0]) + prior) / 2.2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_label_issues_handle_small_classes_and_unlabelled_images() -> None:
    """A class of 3 images (too few for 5 folds) is judged by its neighbours and still offered
    as a suggestion; unlabelled images get a proposal but never a score or a flag; one labelled
    class says why nothing is scored."""
    x, labels = blobs(n_per=30, k=3)
    rng = np.random.default_rng(1)
    small = rng.normal(size=(3, x.shape[1])).astype(np.float32) * 10 + 40
    x = np.concatenate([x, small, small + rng.normal(size=small.shape).astype(np.float32)])
    labels = np.concatenate([labels, ["tiny"] * 3, [UNLABELLED] * 3]).astype(object)
    idx, sim = neighbors(x, 10)
    found = label_issues(x, labels, idx, sim)
    t = found.table
    assert found.facts["small_classes"] == ["tiny"] and found.facts["probe_classes"] == 3
    assert list(t["suggested_label"][-3:]) == ["tiny"] * 3  # the unlabelled copies of tiny
    assert (t["mislabel_score"][-3:] == 0).all() and not t["label_issue"][-3:].any()
    assert not t["label_issue"][:93].any() and t["mislabel_score"].between(0, 1).all()
    one = label_issues(x[:30], labels[:30], *neighbors(x[:30], 5))
    assert one.facts["skipped"] == "label issues not judged: only one class (c0)"
    assert not one.table["label_issue"].any()


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("flat", "label issues not judged: the images carry no labels (a flat folder)"),
        ("one class", "label issues not judged: only one class (c0)"),
        ("one class and loose", "label issues not judged: only one class (c0)"),
    ],
)
def test_labels_that_cannot_be_judged_say_why_and_keep_every_column(kind: str, why: str) -> None:
    """No labels, or one class (with or without loose images): nothing scored or flagged,
    k-NN accuracy not applicable, the same columns as a judged set (the analysis cache and the
    findings read them), and one line that says why; loose images take the zero-shot label
    as their suggestion where a text tower gave one."""
    from embedscope.analyse import LABEL_ISSUE_COLUMNS, label_note

    x, _ = blobs(n_per=20, k=2)
    labels = np.array([UNLABELLED if kind == "flat" else "c0"] * len(x), dtype=object)
    if kind == "one class and loose":
        labels[20:] = UNLABELLED
    idx, sim = neighbors(x, 10)
    report = knn_report(labels, idx, sim)
    assert report["knn_accuracy"] is None and report["reason"] == why
    found = label_issues(x, labels, idx, sim)
    assert found.facts["skipped"] == why and found.facts["label_issues"] == 0
    assert list(found.table.columns) == list(LABEL_ISSUE_COLUMNS)
    assert not found.table["label_issue"].any() and (found.table["mislabel_score"] == 0).all()
    assert list(found.table["suggested_label"]) == list(labels)  # nothing to propose
    assert label_note({**report, "label_issues": found.facts}) == why
    zero_shot = np.repeat(["a dog", "a cat"], 20).astype(object)
    told = label_issues(x, labels, idx, sim, zero_shot=zero_shot).table
    loose = labels == UNLABELLED
    assert list(told["suggested_label"][loose]) == list(zero_shot[loose])
    assert list(told["suggested_label"][~loose]) == list(labels[~loose])
    assert (told["suggested_share"][loose] == 0.75).all() and not told["label_issue"].any()


def test_a_mix_of_labelled_and_loose_images_is_judged_on_the_labelled_ones() -> None:
    """Two classes and loose images: the labelled ones are judged as usual, each loose one is
    proposed its neighbours' class (never scored or flagged)."""
    from embedscope.analyse import label_note

    x, labels = blobs(n_per=20, k=2)
    labels[::4] = UNLABELLED
    idx, sim = neighbors(x, 10)
    report = knn_report(labels, idx, sim)
    assert report["knn_accuracy"] == 1.0 and report["scored_images"] == 30
    found = label_issues(x, labels, idx, sim)
    loose = labels == UNLABELLED
    truth = np.repeat(["c0", "c1"], 20)
    assert "skipped" not in found.facts and found.facts["probe_classes"] == 2
    assert (found.table["suggested_label"][loose] == truth[loose]).all()
    assert (found.table["mislabel_score"][loose] == 0).all()
    note = label_note({**report, "label_issues": found.facts})
    assert note == "label issues judged on 30 labelled images in 2 classes: 0 flagged"


def test_mislabel_score_ranks_the_sample_top_twelve(tmp_path: Path, builtin_cache: Path) -> None:
    """On the built-in sample the twelve strongest mislabel candidates have twelve distinct
    scores (a share-of-neighbours score tied them all at 1.0), each with a relabel to offer."""
    from embedscope.analyse import analyse
    from embedscope.embed import embed
    from embedscope.ingest import ingest
    from embedscope.layout import Layout
    from embedscope.store import load_embeddings

    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    ingest("sample", layout)
    embed(layout, "mobilenet_v2", progress=False)
    per_image = analyse(layout)
    score = pd.Series(per_image["mislabel_score"])
    top = score.nlargest(12)
    assert top.nunique() == 12 and top.iloc[0] < 1.0 and top.iloc[-1] > 0.3
    share = pd.Series(per_image["suggested_share"])
    assert share.between(0, 1).all()
    rows = load_embeddings(layout).rows
    suggested = pd.Series(per_image["suggested_label"])
    assert (suggested[top.index] != rows["label"][top.index]).all()  # each has a relabel to offer


def test_zero_shot_labels_join_only_when_they_mean_something() -> None:
    """A zero-shot label that agrees with most labels is a third voice: of two images between
    two classes, the one whose label zero-shot contradicts looks likelier wrong than without
    it, the one it confirms less likely. One that mostly disagrees (class names the model does
    not know) is left out."""
    x, labels = blobs(n_per=30, k=3)
    middle = (x[:30].mean(axis=0) + x[60:].mean(axis=0)) / 2
    x = np.concatenate([x, middle[None], middle[None] + 0.01]).astype(np.float32)
    labels = np.concatenate([labels, ["c0", "c2"]]).astype(object)
    idx, sim = neighbors(x, 10)
    informed = labels.copy()
    informed[-2:] = "c0"  # zero-shot sees the c0 side in both
    with_zs = label_issues(x, labels, idx, sim, zero_shot=informed)
    without = label_issues(x, labels, idx, sim)
    assert with_zs.facts["zero_shot_used"] and with_zs.facts["zero_shot_agreement"] > 0.9
    change = with_zs.table["mislabel_score"].to_numpy() - without.table["mislabel_score"].to_numpy()
    assert change[-1] > 0.05 and change[-2] < -0.05  # contradicted up, confirmed down
    noise = np.random.default_rng(0).choice(["c0", "c1", "c2"], len(x)).astype(object)
    ignored = label_issues(x, labels, idx, sim, zero_shot=noise)
    assert not ignored.facts["zero_shot_used"]
    np.testing.assert_allclose(ignored.table["mislabel_score"], without.table["mislabel_score"])


def test_pca_projection_quality_and_the_probe_read_a_memmap_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1M x 1,280 the vectors are a 5 GB memory map: the PCA (reduce's, UMAP's PCA-50, the
    label probe's) and the projection quality read them a block at a time, where a float32 or
    normalised copy of them all (two or three with scikit-learn's PCA) held 10-15 GB. The
    streaming PCA is exact: scikit-learn's full-SVD coordinates, signs included."""
    import tracemalloc

    from sklearn.decomposition import PCA

    from embedscope import label_issues as label_module
    from embedscope import reduce as reduce_module

    rng = np.random.default_rng(0)
    n, d = 20_000, 384  # 31 MB
    centres = rng.normal(size=(4, d)) * 3
    labels = np.repeat([f"c{i}" for i in range(4)], n // 4).astype(object)
    x = (centres[np.repeat(np.arange(4), n // 4)] + rng.normal(size=(n, d))).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    monkeypatch.setattr(reduce_module, "PCA_BLOCK", 1024, raising=False)  # (new) block size
    monkeypatch.setattr(label_module, "PROBE_DIMS", 32)  # as at 1M images (PROBE_BUDGET)

    def peak_of(call):
        tracemalloc.start()
        try:
            out = call()
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (coords, facts), peak = peak_of(lambda: reduce(mm, "pca", 3))
    assert peak < x.nbytes / 4, f"PCA: peak {peak / 1e6:.1f} MB for {x.nbytes / 1e6:.1f} MB"
    full = PCA(3, svd_solver="full").fit(x)
    np.testing.assert_allclose(coords, full.transform(x), atol=1e-3 * np.abs(coords).max())
    np.testing.assert_allclose(
        facts["explained_variance_ratio"], full.explained_variance_ratio_, rtol=1e-4
    )
    quality, peak = peak_of(lambda: projection_quality(mm, coords, labels, sample=500))
    assert peak < x.nbytes / 3 and quality["trustworthiness"] > 0.5, (peak, quality)
    no_neighbours = np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)
    found, peak = peak_of(lambda: label_issues(mm, labels, *no_neighbours))
    assert peak < x.nbytes / 2, f"probe: peak {peak / 1e6:.1f} MB for {x.nbytes / 1e6:.1f} MB"
    assert found.facts["label_issues"] == 0 and found.facts["probe_classes"] == 4
