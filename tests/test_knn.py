"""knn.top_k: exact blocks for small sizes, the faiss index (re-ranked exactly) for large ones."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import embedscope.knn as knn
from embedscope.knn import Rows, normalize, top_k
from embedscope.splits import _knn, split_report, split_table


def clustered(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    """Embedding-like vectors: skewed clusters, each a low-rank spread around its centre,
    mapped to non-negative dimensions (pooled ReLU features), so neighbours are meaningful."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 30, n)
    centres = rng.standard_normal((30, 32))
    bases = rng.standard_normal((30, 6, 32)) * 0.4
    latent = centres[c] + np.einsum("ns,nsl->nl", rng.standard_normal((n, 6)), bases[c])
    mix = rng.standard_normal((32, d)) / np.sqrt(32)
    return np.maximum(latent @ mix + 0.05 * rng.standard_normal((n, d)), 0).astype(np.float32)


def brute(q: np.ndarray, b: np.ndarray, k: int, exclude_self: bool = False):
    sims = normalize(q) @ normalize(b).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def test_index_recall_against_exact_and_similarities_are_true_cosines(monkeypatch) -> None:
    x = clustered(2000, 300)  # above INDEX_DIMS: the PCA step runs too
    truth, _ = brute(x, x, 10, exclude_self=True)
    monkeypatch.setattr(knn, "EXACT_LIMIT", 100)  # 2000 x 2000 pairs go to the index
    idx, sim = top_k(x, x, 10, exclude_self=True)
    assert idx.dtype == np.int64 and sim.dtype == np.float32 and idx.shape == (2000, 10)
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, truth, strict=True)])
    assert hits >= 0.9, hits
    assert not (idx == np.arange(2000)[:, None]).any()
    cos = np.einsum("nd,nkd->nk", normalize(x), normalize(x)[idx])
    np.testing.assert_allclose(sim, cos, atol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # best first


@pytest.mark.parametrize("limit", [20_000, 10])
def test_exclude_self_drops_the_row_but_keeps_its_exact_copy(monkeypatch, limit: int) -> None:
    x = clustered(400, 48, seed=1)
    x[7] = x[300]  # an exact copy: its neighbour at similarity 1, yet never itself
    monkeypatch.setattr(knn, "EXACT_LIMIT", limit)
    idx, sim = top_k(x, x, 5, exclude_self=True)
    assert not (idx == np.arange(400)[:, None]).any()
    assert idx[7, 0] == 300 and idx[300, 0] == 7 and sim[7, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="exclude_self"):
        top_k(x[:10], x, 3, exclude_self=True)


@pytest.mark.parametrize("limit", [20_000, 10])
def test_exclude_self_searches_the_queries_given_not_the_base(monkeypatch, limit: int) -> None:
    """Row i of the queries is another picture of base row i (the leak search's mirrored tiny
    pictures among the plain ones): its neighbours are those of the query, never of the base."""
    x = clustered(400, 48, seed=2)
    mirrored = x[:, ::-1].copy()
    monkeypatch.setattr(knn, "EXACT_LIMIT", limit)
    idx, sim = top_k(mirrored, x, 5, exclude_self=True)
    truth, truth_sim = brute(mirrored, x, 5, exclude_self=True)
    assert np.mean(idx == truth) >= 0.9
    np.testing.assert_allclose(sim[idx == truth], truth_sim[idx == truth], atol=1e-5)


def test_queries_against_another_base_in_small_blocks_match_brute_force(
    monkeypatch, tmp_path: Path
) -> None:
    x = clustered(900, 40, seed=2)
    np.save(tmp_path / "base.npy", x[300:])
    base = np.load(tmp_path / "base.npy", mmap_mode="r")  # memory-mapped vectors work as they are
    want_idx, want_sim = brute(x[:300], x[300:], 7)
    monkeypatch.setattr(knn, "BLOCK_BYTES", 4 * 600 * 3)  # three query rows per block
    idx, sim = top_k(x[:300], base, 7)
    np.testing.assert_allclose(sim, want_sim, atol=1e-5)
    assert (idx == want_idx).mean() > 0.99  # ties among equal similarities may swap
    assert top_k(x[:3], x[:2], 5)[0].shape == (3, 2)  # k capped at the base size


def test_held_out_knn_never_holds_the_whole_held_by_train_matrix(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([clustered(6000, 32, seed=3), clustered(1500, 32, seed=4)])
    train, held = np.arange(6000), np.arange(6000, 7500)
    labels = rng.choice(np.array(["a", "b", "c"], dtype=object), 6000)
    monkeypatch.setattr(knn, "BLOCK_BYTES", 1 << 20)
    tracemalloc.start()
    try:
        guess = _knn(x, labels, train, held, 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * len(held) * len(train) * 4  # the full matrix would be 36 MB
    assert len(guess) == len(held) and set(guess) <= {"a", "b", "c"}


def test_rows_of_memory_mapped_vectors_give_top_k_without_a_copy_of_them(
    monkeypatch, tmp_path: Path
) -> None:
    """A split handed to top_k as Rows: the same neighbours as its copy, on the exact path and
    on the index's, and the index path holds no copy of the splits (x[train] at 1M: 4.1 GB)."""
    x = clustered(12_000, 64, seed=6)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    rng = np.random.default_rng(7)
    held = np.sort(rng.choice(len(x), 2000, replace=False))
    train = np.setdiff1d(np.arange(len(x)), held)

    def traced(search):
        tracemalloc.start()
        try:
            return search(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for limit in (knn.EXACT_LIMIT, 1000):  # exact, then the index (above 1000 x 1000 pairs)
        monkeypatch.setattr(knn, "EXACT_LIMIT", limit)
        want, copied = traced(lambda: top_k(mapped[held], mapped[train], 5))
        got, read = traced(lambda: top_k(Rows(mapped, held), Rows(mapped, train), 5))
        np.testing.assert_allclose(got[1], want[1], atol=1e-5)
        assert (got[0] == want[0]).mean() > 0.99
        if limit == 1000:  # the index reads blocks: the copies of both splits are not made
            assert read < copied - 0.9 * x.nbytes
    assert np.asarray(Rows(mapped, held[:3])).tolist() == x[held[:3]].tolist()


def test_the_honest_probe_above_its_train_limit_fits_a_seeded_sample(monkeypatch) -> None:
    import embedscope.splits as splits

    centres = np.random.default_rng(8).normal(size=(3, 16)) * 5
    x = np.concatenate([c + np.random.default_rng(9).normal(size=(400, 16)) for c in centres])
    labels = np.repeat(np.array(["a", "b", "c"], dtype=object), 400)
    split = np.where(np.arange(1200) % 4 == 0, "test", "train")
    whole = split_report(x, labels, split, np.zeros(1200, bool))["test"]
    monkeypatch.setattr(splits, "PROBE_TRAIN", 60)
    sampled = split_report(x, labels, split, np.zeros(1200, bool))["test"]
    assert whole["probe_accuracy_all"] == 1.0 and sampled["probe_accuracy_all"] >= 0.95
    assert sampled["knn_accuracy_all"] == whole["knn_accuracy_all"]  # kNN: every train image
    assert "classes_not_in_train" not in whole


def test_held_out_classes_that_train_lacks_are_named_with_their_case_twins() -> None:
    """A test folder "Cat" beside train's "cat" (and a class train has not at all): the honest
    figures cannot be right on them, and the report says which they are."""
    x = np.random.default_rng(3).normal(size=(12, 4))
    labels = np.array(["cat", "dog"] * 4 + ["Cat", "dog", "fox", "dog"], dtype=object)
    split = np.array(["train"] * 8 + ["test"] * 4, dtype=object)
    report = split_report(x, labels, split, np.zeros(12, bool))
    test = report["test"]
    assert test["classes_not_in_train"] == ["Cat (train: cat)", "fox"]
    # as 03_reduce shows it: counts whole, the classes as text in the last column
    shown = split_table(report)
    assert shown.loc["test", "classes_not_in_train"] == "Cat (train: cat), fox"
    assert shown.columns[-1] == "classes_not_in_train" and shown.loc["test", "scored"] == 4
    assert type(shown.loc["test", "images"]) is int  # not 4.0 beside a split with no score


def test_clusters_beyond_the_sample_size_fit_a_sample_and_assign_the_rest(monkeypatch) -> None:
    import embedscope.analyse as analyse

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 64)) * 10
    x = np.concatenate([c + rng.normal(size=(250, 64)) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(4), 250)
    monkeypatch.setattr(analyse, "CLUSTER_SAMPLE", 200)  # fit on 200 of 1000, assign 800
    found = analyse.clusters(x)
    assert len(found) == 1000 and (found >= 0).mean() > 0.9
    for c in range(4):  # each blob is one cluster, and no two blobs share one
        values = found[(truth == c) & (found >= 0)]
        assert len(set(values)) == 1
    assert len(set(found[found >= 0])) == 4


def test_look_alike_groups_are_numbered_by_their_first_member() -> None:
    from embedscope.analyse import look_alikes

    idx = np.array([[3], [2], [1], [0], [0]])
    sim = np.array([[0.99], [0.99], [0.99], [0.99], [0.5]], np.float32)
    assert look_alikes(idx, sim).tolist() == [0, 1, 1, 0, -1]


def test_umap_beyond_its_sample_size_fits_a_sample_and_places_every_point(monkeypatch) -> None:
    import embedscope.reduce as reduce_module

    rng = np.random.default_rng(6)
    centres = rng.normal(size=(3, 64)) * 10
    x = np.concatenate([c + rng.normal(size=(100, 64)) for c in centres]).astype(np.float32)
    monkeypatch.setattr(reduce_module, "UMAP_SAMPLE", 120)  # fit on 120 of 300, place all
    coords, facts = reduce_module.reduce(x, "umap", 2, random_state=0)
    assert coords.shape == (300, 2) and facts["fitted_on"] == 120
    centre = np.stack([coords[i * 100 : (i + 1) * 100].mean(axis=0) for i in range(3)])
    spread = max(coords[i * 100 : (i + 1) * 100].std(axis=0).max() for i in range(3))
    gaps = [np.linalg.norm(centre[a] - centre[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 3 * spread  # the placed points keep the blobs apart
