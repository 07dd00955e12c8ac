"""Reducers and quality numbers on synthetic data with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedscope.analyse import (
    cluster_table,
    clusters,
    near_duplicates,
    neighbour_scores,
    projection_quality,
)
from embedscope.ingest import UNLABELLED
from embedscope.knn import knn_report, knn_vote, neighbors
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
    scores = neighbour_scores(wrong, idx, sim)
    top3 = set(np.argsort(-scores["mislabel_score"].to_numpy())[:3])
    assert top3 == set(planted)


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
    assert report["knn_accuracy"] is None and "two" in report["reason"]


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
    groups = near_duplicates(idx, sim, threshold=0.999)
    assert groups[3] == groups[50] >= 0
    assert groups[7] == groups[90] == groups[91] >= 0 and groups[7] != groups[3]
    assert (groups >= 0).sum() == 5


def test_clusters_recover_separated_blobs() -> None:
    x, labels = blobs(n_per=60, k=4)
    found = clusters(x)
    table = cluster_table(labels, found)
    assert len(table) == 4 and (table["purity"] == 1.0).all()
    assert (found >= 0).mean() > 0.9


def test_suggested_label_is_the_similarity_weighted_majority() -> None:
    """Hand-made neighbour tables with a known answer: similarity beats head count, unlabelled
    neighbours do not vote, and the mislabel score is share x closeness of the other label."""
    labels = np.array(["a", "a", "a", "b", "b", UNLABELLED, "a"], dtype=object)
    idx = np.array(
        [
            [3, 4, 1, 2, 6],  # two close b's against three far a's: b wins on similarity
            [0, 2, 6, 3, 5],  # a wins; one b
            [5, 5, 5, 5, 5],  # only an unlabelled neighbour: no suggestion
            [4, 0, 1, 2, 6],  # b among a's
            [3, 3, 3, 3, 3],  # all agree
            [0, 1, 3, 2, 4],  # unlabelled image: gets a suggestion, never a mislabel score
            [0, 1, 2, 3, 4],
        ]
    )
    sim = np.array(
        [
            [0.9, 0.8, 0.5, 0.5, 0.5],
            [0.9, 0.9, 0.8, 0.4, 0.9],
            [0.7, 0.7, 0.7, 0.7, 0.7],
            [0.2, 0.8, 0.8, 0.8, 0.8],
            [0.9, 0.9, 0.9, 0.9, 0.9],
            [0.6, 0.6, 0.9, 0.6, -0.3],  # a negative similarity counts zero
            [0.9, 0.9, 0.9, 0.1, 0.1],
        ],
        dtype=np.float32,
    )
    s = neighbour_scores(labels, idx, sim)
    assert list(s["suggested_label"]) == ["b", "a", UNLABELLED, "a", "b", "a", "a"]
    np.testing.assert_allclose(
        s["suggested_share"], [1.7 / 3.2, 2.6 / 3.0, 0.0, 3.2 / 3.4, 1.0, 1.8 / 2.7, 2.7 / 2.9],
        rtol=1e-5,
    )  # fmt: skip
    expected = [
        (1.7 / 3.2) * (1.7 / 2),  # b holds 1.7 of 3.2 votes, mean similarity 0.85
        (0.4 / 3.0) * 0.4,
        0.0,  # nobody votes
        (3.2 / 3.4) * 0.8,
        0.0,  # everyone agrees
        0.0,  # unlabelled
        (0.2 / 2.9) * 0.1,
    ]
    np.testing.assert_allclose(s["mislabel_score"], expected, rtol=1e-5, atol=1e-7)
    # the count-majority k-NN vote (knn_accuracy's) still picks "a" for point 0
    assert knn_vote(labels, idx, sim)[0] == "a"


def test_mislabel_score_ranks_the_sample_top_twelve(tmp_path: Path, builtin_cache: Path) -> None:
    """On the built-in sample the twelve strongest mislabel candidates have twelve distinct
    scores (the old share-of-neighbours score tied them all at 1.0)."""
    from embedscope.analyse import analyse
    from embedscope.embed import embed
    from embedscope.ingest import ingest
    from embedscope.layout import Layout
    from embedscope.store import load_embeddings

    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    ingest("sample", layout)
    embed(layout, "mobilenet_v2", progress=False)
    _, per_image = analyse(layout)
    score = pd.Series(per_image["mislabel_score"])
    top = score.nlargest(12)
    assert top.nunique() == 12 and top.iloc[0] < 1.0 and top.iloc[-1] > 0.3
    share = pd.Series(per_image["suggested_share"])
    assert share.between(0, 1).all()
    rows = load_embeddings(layout).rows
    suggested = pd.Series(per_image["suggested_label"])
    assert (suggested[top.index] != rows["label"][top.index]).all()  # each has a relabel to offer
