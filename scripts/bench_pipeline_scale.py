"""The ``pipeline_scale`` bench section: the kit's stages at 1,000,000 vectors (and 100,000).

Imported by ``scripts/bench.py`` (``--only pipeline_scale``); runnable alone:
``python scripts/bench_pipeline_scale.py --n 1000000``.

The vectors are generated, not embedded (embedding 1M images on 2 cores takes days): clusters
of skewed sizes, each a low-dimensional spread around its centre in a 256-d latent space mapped
to 1,280 non-negative dimensions (as a CNN's pooled ReLU features are), plus 1% near-copies of
other rows (the leaks and look-alikes the findings look for). Neighbour structure like this --
low intrinsic dimension, uneven density -- is what makes an approximate index's recall honest;
isotropic noise would make every neighbour a coin toss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LATENT = 256
SPREAD = 24


def realistic_vectors(
    n: int, d: int = 1280, *, seed: int = 0, out: Path | None = None, clusters_only: bool = False
):
    """``n`` x ``d`` float32 vectors (a memory-mapped ``.npy`` at ``out`` when given, written a
    block at a time so 1M x 1280 = 5.1 GB never sits in memory twice), and their cluster ids
    (``clusters_only``: the ids alone, as the vectors of the same seed have them)."""
    rng = np.random.default_rng(seed)
    clusters = max(10, n // 1000)
    sizes = rng.zipf(1.6, clusters).astype(float)
    share = np.minimum(sizes, 50) / np.minimum(sizes, 50).sum()
    cluster = np.sort(rng.choice(clusters, size=n, p=share))
    centres = rng.standard_normal((clusters, LATENT)).astype(np.float32)
    bases = (rng.standard_normal((clusters, SPREAD, LATENT)) * 0.35).astype(np.float32)
    mix = (rng.standard_normal((LATENT, d)) / np.sqrt(LATENT)).astype(np.float32)
    order = rng.permutation(n)  # rows in random order, as files of images arrive
    cluster = cluster[order]
    if clusters_only:
        return None, cluster
    if out is None:
        x = np.empty((n, d), np.float32)
    else:
        x = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        c = cluster[s:e]
        local = np.einsum("ns,nsl->nl", rng.standard_normal((e - s, SPREAD), np.float32), bases[c])
        block = (centres[c] + local) @ mix + 0.05 * rng.standard_normal((e - s, d), np.float32)
        x[s:e] = np.maximum(block, 0)
    copies = rng.choice(n, size=n // 100, replace=False)
    for s in range(0, len(copies), 50_000):
        dst = copies[s : s + 50_000]
        src = (dst + rng.integers(1, n, size=len(dst))) % n
        noisy = x[np.sort(src)] * rng.uniform(0.95, 1.05, (len(dst), 1)).astype(np.float32)
        x[np.sort(dst)] = noisy + 0.02 * rng.random(noisy.shape, np.float32)
    if out is not None:
        x.flush()
    return x, cluster


def _exact_truth(x, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k (self excluded) of the given query rows, by blocks of the base."""
    from embedscope.knn import normalize

    q = normalize(x[queries])
    best = np.full((len(q), k), -np.inf, np.float32)
    where = np.zeros((len(q), k), np.int64)
    for s in range(0, len(x), 100_000):
        sims = q @ normalize(x[s : s + 100_000]).T
        sims[queries[:, None] == np.arange(s, s + sims.shape[1])[None, :]] = -np.inf
        allv = np.concatenate([best, sims], axis=1)
        alli = np.concatenate([where, np.arange(s, s + sims.shape[1])[None].repeat(len(q), 0)], 1)
        top = np.argpartition(-allv, k - 1, axis=1)[:, :k]
        best, where = np.take_along_axis(allv, top, 1), np.take_along_axis(alli, top, 1)
    return where


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)])
    )


def rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# -- stages, each in a process of its own so its peak memory is its own ------------------------


def _stage(name: str, npy: str) -> dict:
    """Run one stage on the vectors at ``npy`` (memory-mapped) in this process; its facts."""
    from embedscope import knn

    x = np.load(npy, mmap_mode="r")
    n = len(x)
    if name == "pca":  # reduce()'s PCA: exact, streaming (mean and covariance by blocks)
        from embedscope.reduce import reduce

        coords, _ = reduce(x, "pca", 3)
        np.save(Path(npy).with_suffix(".pca.npy"), coords)
        return {"points": len(coords)}
    if name == "store_vectors":  # 02 with VECTORS=: the file's vectors into the store
        return _store_vectors(Path(npy), n)
    if name == "pca_sklearn":  # the old way: scikit-learn's PCA on the vectors in memory
        from sklearn.decomposition import PCA

        coords = PCA(3, random_state=0).fit_transform(np.asarray(x, dtype=np.float32))
        return {"points": len(coords)}
    if name == "label_issues":  # analysis: the label probe (5-fold logistic regression) + vote
        from embedscope.label_issues import label_issues

        _, cluster = realistic_vectors(n, seed=0, clusters_only=True)
        labels = np.array([f"c{c % 10}" for c in range(10)], object)[cluster % 10]
        graph = "the neighbors stage's"
        if Path(npy).with_suffix(".idx.npy").exists():
            idx = np.load(Path(npy).with_suffix(".idx.npy"))
            sim = np.load(Path(npy).with_suffix(".sim.npy"))
        else:  # the probe's cost does not depend on which rows the neighbours are
            graph = "a stand-in (row i's neighbours: rows i+1..i+10)"
            idx = (np.arange(n)[:, None] + np.arange(1, 11)[None, :]) % n
            sim = np.full(idx.shape, 0.9, np.float32)
        found = label_issues(x, labels, idx, sim)
        facts = {"flagged": found.facts["label_issues"], "classes": found.facts["classes"]}
        return facts | {"graph": graph}
    if name == "neighbors_rate":
        return _neighbors_rate(x)
    if name == "umap_rate":
        return _umap_rate(x)
    if name == "projection_quality":  # 03's silhouette and trustworthiness, on 5,000 points
        from embedscope.analyse import projection_quality

        coords = np.load(Path(npy).with_suffix(".pca.npy"))
        labels = np.array([f"c{i % 10}" for i in range(n)], object)
        return projection_quality(x, coords, labels)
    if name == "ipca":  # the streaming PCA, for memory-mapped vectors
        from embedscope.reduce import reduce

        coords, _ = reduce(x, "ipca", 3, chunk_size=50_000)
        return {"points": len(coords)}
    if name == "umap":  # the kit's UMAP: fitted on reduce.UMAP_SAMPLE points, applied to all
        from embedscope.reduce import reduce

        coords, facts = reduce(x, "umap", 3, random_state=None)
        return {"points": len(coords)} | facts
    if name == "neighbors":  # analysis: every point's 10 nearest others, from the index
        idx, sim = knn.neighbors(x, 10)
        truth_at = np.sort(np.random.default_rng(1).choice(n, 500, replace=False))
        truth = _exact_truth(x, truth_at, 10)
        np.save(Path(npy).with_suffix(".idx.npy"), idx)
        np.save(Path(npy).with_suffix(".sim.npy"), sim)
        return {"recall@10_vs_exact_500": round(recall(idx[truth_at], truth), 4)}
    if name.startswith("hdbscan"):  # analysis: clusters (sample-fit above CLUSTER_SAMPLE)
        from embedscope import analyse

        if name == "hdbscan_all":  # the old way: HDBSCAN on every point
            analyse.CLUSTER_SAMPLE = n
        found = analyse.clusters(x)
        return {"clusters": int(found.max() + 1), "noise": round(float((found < 0).mean()), 3)}
    if name == "look_alikes":
        from embedscope.analyse import look_alikes

        idx = np.load(Path(npy).with_suffix(".idx.npy"))
        sim = np.load(Path(npy).with_suffix(".sim.npy"))
        groups = look_alikes(idx, sim, 0.97)
        return {"groups": int(groups.max() + 1)}
    if name == "leak_search":  # the leak search's candidate step: test (20%) vs train (80%)
        test = np.zeros(n, bool)
        test[np.random.default_rng(2).choice(n, n // 5, replace=False)] = True
        held, train = knn.Rows(x, np.flatnonzero(test)), knn.Rows(x, np.flatnonzero(~test))
        idx, _ = knn.top_k(held, train, 10)
        return {"queries": int(test.sum()), "base": int((~test).sum())}
    if name == "honest_numbers":  # 03's per-split kNN and probe (splits.split_report), 80/20
        from embedscope.splits import split_report

        _, cluster = realistic_vectors(n, seed=0, clusters_only=True)
        labels = np.array([f"c{c}" for c in range(10)], object)[cluster % 10]
        split = np.full(n, "train", object)
        split[np.random.default_rng(2).choice(n, n // 5, replace=False)] = "test"
        return split_report(x, labels, split, np.zeros(n, bool))["test"]
    if name == "copy_search":
        return _copy_search(x)
    raise ValueError(f"unknown stage {name!r}")


def _copy_search(x) -> dict:
    """The leak and near-duplicate search at ``len(x)`` vectors (test 20 %, train 80 %): both
    candidate steps in full, as ``dataset_leaks`` runs them (cosine and the tiny picture,
    mirrored or not, through ``knn.top_k``: test among train, then each split among itself;
    the tiny pictures are stand-ins, 64 random projections of the vectors), and the
    verification, which costs the same per image at any size, timed on the sample's real emoji
    (one per row, the generated vectors as theirs) and scaled to every image."""
    import time

    import pandas as pd

    from embedscope import knn
    from embedscope.findings.leaks import CANDIDATES, TINY, near_duplicates, small_copy
    from embedscope.images import load_rgb

    n = len(x)
    test = np.zeros(n, bool)
    test[np.random.default_rng(2).choice(n, n // 5, replace=False)] = True
    held, train = np.flatnonzero(test), np.flatnonzero(~test)
    rng = np.random.default_rng(3)
    project = rng.standard_normal((x.shape[1], TINY * TINY)).astype(np.float32)
    pictures = np.concatenate([x[s : s + 50_000] @ project for s in range(0, n, 50_000)])
    pictures -= pictures.mean(axis=1, keepdims=True)
    mirror = pictures[:, ::-1].copy()
    t = time.perf_counter()
    knn.top_k(knn.Rows(x, held), knn.Rows(x, train), CANDIDATES)  # as leaks._candidates
    knn.top_k(pictures[held], pictures[train], CANDIDATES)
    knn.top_k(mirror[held], pictures[train], CANDIDATES)
    leak_candidates = time.perf_counter() - t
    t = time.perf_counter()
    for rows in (train, held):
        knn.top_k(knn.Rows(x, rows), knn.Rows(x, rows), CANDIDATES, exclude_self=True)
        knn.top_k(pictures[rows], pictures[rows], CANDIDATES, exclude_self=True)
        knn.top_k(mirror[rows], pictures[rows], CANDIDATES, exclude_self=True)
    near_candidates = time.perf_counter() - t
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    files = sorted(sample.glob("*/*.webp"))
    smalls = {f"e{i}.png": small_copy(load_rgb(f)) for i, f in enumerate(files)}
    at = np.sort(np.random.default_rng(4).choice(n, len(files), replace=False))
    t = time.perf_counter()
    near_duplicates(sample, pd.DataFrame({"path": list(smalls)}), x[at], [""] * len(at),
                    smalls=smalls)  # fmt: skip
    per_image = (time.perf_counter() - t) / len(files)
    return {
        "leak_images_searched": len(held),
        "near_duplicate_images_searched": n,
        "leak_candidate_seconds": round(leak_candidates, 1),
        "near_duplicate_candidate_seconds": round(near_candidates, 1),
        "verification_seconds_per_image": round(per_image, 4),
        "verified_images_timed": len(files),
        "leak_search_seconds_scaled": round(leak_candidates + per_image * len(held)),
        "near_duplicate_search_seconds_scaled": round(near_candidates + per_image * n),
    }


def _cpu() -> float:
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _neighbors_rate(x, queries: int = 20_000) -> dict:
    """The 10-NN graph of all ``len(x)`` rows, costed where a full run does not fit a session
    (at 1M on 2 shared cores it takes hours of wall time): the index over every row built
    once (``knn.build_index``, timed alone), then ``knn.top_k`` of a seeded sample of
    ``queries`` rows against all rows (the same build again, then the same search and exact
    re-ranking; each row's own match dropped as ``neighbors`` drops it). Every query costs
    the same, so the graph costs the build plus ``n / queries`` times the sample's search.
    Recall@10 of 500 of the sample against the exact neighbours."""
    import time

    from embedscope import knn

    n = len(x)
    c, t = _cpu(), time.perf_counter()
    knn.build_index(x)
    build_cpu, build_wall = _cpu() - c, time.perf_counter() - t
    at = np.sort(np.random.default_rng(1).choice(n, min(queries, n), replace=False))
    c, t = _cpu(), time.perf_counter()
    idx, _ = knn.top_k(x[at], x, 11)
    search_cpu = max(_cpu() - c - build_cpu, 0.0)
    search_wall = max(time.perf_counter() - t - build_wall, 0.0)
    found = np.stack([row[row != i][:10] for row, i in zip(idx, at, strict=True)])
    check = np.arange(min(500, len(at)))
    truth = _exact_truth(x, at[check], 10)
    graph_cpu = build_cpu + search_cpu * n / len(at)
    return {
        "build_cpu_seconds": round(build_cpu, 1),
        "build_seconds": round(build_wall, 1),
        "sample_queries": len(at),
        "sample_search_cpu_seconds": round(search_cpu, 1),
        "sample_search_seconds": round(search_wall, 1),
        "graph_cpu_seconds_estimated": round(graph_cpu),
        "graph_seconds_on_2_idle_cores_estimated": round(graph_cpu / 2),
        "recall@10_vs_exact_500": round(recall(found[check], truth), 4),
    }


def _umap_rate(x, points: int = 250_000) -> dict:
    """The kit's UMAP at ``len(x)`` rows, costed from a run on the first ``points`` rows
    (``reduce(..., "umap")``: fitted on ``reduce.UMAP_SAMPLE`` of them, every one placed by
    the fitted model's transform): the fit costs the same at any n past the sample, the
    transform the same per point, so the full run costs the PCA-50 of all rows (timed here
    on all), the fit, and ``n / points`` times the transform measured."""
    import time

    import umap

    from embedscope.reduce import UMAP_SAMPLE, reduce, streaming_pca

    n = len(x)
    spent = {"fit": 0.0, "transform": 0.0}
    real = {"fit": umap.UMAP.fit, "transform": umap.UMAP.transform}

    def timed(what: str):
        def call(self, *args, **kwargs):
            c = _cpu()
            try:
                return real[what](self, *args, **kwargs)
            finally:
                spent[what] += _cpu() - c

        return call

    c, t = _cpu(), time.perf_counter()
    streaming_pca(x, 50, unit=True)
    pca_cpu, pca_wall = _cpu() - c, time.perf_counter() - t
    umap.UMAP.fit, umap.UMAP.transform = timed("fit"), timed("transform")
    points = min(points, n)
    c, t = _cpu(), time.perf_counter()
    coords, facts = reduce(x[:points], "umap", 3, random_state=None)
    run_cpu, run_wall = _cpu() - c, time.perf_counter() - t
    estimate = pca_cpu + spent["fit"] + spent["transform"] * n / points
    return {
        "pca50_all_cpu_seconds": round(pca_cpu, 1),
        "pca50_all_seconds": round(pca_wall, 1),
        "run_points": points,
        "fitted_on": min(points, UMAP_SAMPLE),
        "run_cpu_seconds": round(run_cpu, 1),
        "run_seconds": round(run_wall, 1),
        "fit_cpu_seconds": round(spent["fit"], 1),
        "transform_cpu_seconds": round(spent["transform"], 1),
        "umap_cpu_seconds_estimated": round(estimate),
        "umap_seconds_on_2_idle_cores_estimated": round(estimate / 2),
        "finite": bool(np.isfinite(coords).all()),
    }


def _store_vectors(npy: Path, n: int) -> dict:
    """``store_vectors`` (02_embed with ``VECTORS=``) of the ``.npy`` at ``npy`` for a dataset
    of ``n`` images whose manifest is written here (as ingest would write it, without the
    files: storing reads none), timed alone."""
    import hashlib
    import shutil
    import time

    import pandas as pd

    from embedscope.layout import Layout, write_json, write_parquet
    from embedscope.vectors import paths_file, store_vectors

    work = npy.parent / f"store-{n}"
    shutil.rmtree(work, ignore_errors=True)
    layout = Layout("scale", work / "data", work / "reports")
    paths = [f"c{i % 10}/img{i:07d}.png" for i in range(n)]
    paths_file(npy).write_text("\n".join(paths) + "\n", encoding="utf-8")
    manifest = pd.DataFrame(
        {
            "path": paths,
            "label": [p[:2] for p in paths],
            "status": "ok",
            "reason": "",
            "sha256": [hashlib.sha256(p.encode()).hexdigest() for p in paths],
            "bytes": 100,
            "mtime_ns": 0,
        }
    )
    write_parquet(layout.manifest, manifest)
    write_json(layout.source_file, {"root": str(work / "images")})
    del manifest, paths
    t = time.perf_counter()
    facts = store_vectors(layout, npy)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    store_vectors(layout, npy)  # a re-run: the outputs are complete, nothing is written
    again = time.perf_counter() - t
    shutil.rmtree(work, ignore_errors=True)  # 10 GB of shards and vectors.npy at 1M
    return {"images": facts["images"], "store_seconds": round(seconds, 1),
            "again_seconds": round(again, 1)}  # fmt: skip


class _AnonPeak:
    """The peak of this process's anonymous memory (``RssAnon``), sampled every 0.2 s: peak
    RSS also counts the pages of a memory-mapped vectors file the stage read, which are the
    kernel's page cache (dropped under pressure, shared), not memory the stage holds."""

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _now(self) -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self._now())

    def stop(self) -> float | None:
        self.done.set()
        self.thread.join()
        peak = max(self.peak, self._now())
        return round(peak / 1e9, 2) if peak else None


def run_stage(name: str, npy: Path, timeout: float) -> dict:
    """``name`` in a fresh Python: wall seconds and that process's peak RSS (GB)."""
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", name, "--work", str(npy)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"stage": name, "missed": f"not done in {timeout:.0f} s (stopped)"}
    for line in done.stdout.splitlines():
        if line.startswith("FACTS"):
            return {"stage": name} | json.loads(line[5:])
    return {"stage": name, "failed": (done.stderr.strip().splitlines() or ["?"])[-1]}


def machine() -> dict:
    import os

    from embedscope.embed.precision import cpu_model

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
    }


STAGES = (
    "hdbscan",
    "hdbscan_all",
    "neighbors",
    "look_alikes",
    "label_issues",
    "leak_search",
    "copy_search",
    "honest_numbers",
    "store_vectors",
    "pca",
    "pca_sklearn",
    "projection_quality",
    "ipca",
    "umap",
)
#: Not run by default (``--stages`` names them): ``neighbors`` and ``umap`` costed from a part
#: of the work, for a session whose shared cores cannot wait for the full runs.
RATE_STAGES = ("neighbors_rate", "umap_rate")
#: Stages of the old ways, kept to show why the new ones exist: run up to this many vectors.
OLD_WAYS = {"hdbscan_all": 100_000, "pca_sklearn": 300_000}


def stages(work: Path, n: int, only: tuple[str, ...] = STAGES, timeout: float = 1800) -> dict:
    """Every stage at ``n`` generated vectors (written once to ``work``), each in its own
    process, with the machine's facts."""
    import os
    import time

    work.mkdir(parents=True, exist_ok=True)
    npy = work / f"vectors-{n}.npy"
    t = time.perf_counter()
    if not npy.exists():
        realistic_vectors(n, out=npy)
    rows = [{"stage": "generate", "seconds": round(time.perf_counter() - t, 1)}]
    for name in only:
        row = run_stage(name, npy, timeout)
        row["load_1min"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(row, flush=True)
    return {"vectors": n, "dims": 1280, "machine": machine(), "stages": rows}


# -- end to end: make run-all SOURCE=<folder> VECTORS=<file>, every notebook its own process --


def small_images(folder: Path, n: int, classes: int = 10) -> list[str]:
    """``n`` distinct 32x32 PNGs in ``classes`` folders (thumbnails and quality run on them).
    An image's folder is its vector's cluster (:func:`realistic_vectors`, modulo ``classes``),
    so labels agree with the vectors as a real dataset's mostly do; only the vectors' 1% of
    copies of another cluster's rows disagree."""
    from PIL import Image

    _, cluster = realistic_vectors(n, clusters_only=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        rel = f"c{cluster[i] % classes}/img{i:07d}.png"
        dest = folder / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(dest)
        paths.append(rel)
    return paths


def real_images(folder: Path, n: int = 100_000, seed: int = 0) -> dict:
    """``n`` real images in ``train/<class>/`` and ``test/<class>/`` (the commonest public
    layout, so the leak search runs too): Fashion-MNIST's 70,000 (60,000 train, 10,000 test,
    28 x 28 PNGs), then crops of other real images up to ``n`` (the sample's emoji and
    scikit-learn's two photos; random boxes of 30-70% of the side, so few are copies of each
    other, redrawn where the box is nearly flat (an emoji's empty margin: the first build's
    black corners made one near-duplicate group of 47); JPEG at quality 90; 80/20
    train/test). Written once; the counts per kind."""
    import json

    from bench_findings import FASHION, fashion_folder
    from bench_leaks import emoji_pool
    from PIL import Image
    from sklearn.datasets import load_sample_images

    done = folder / ".complete"
    if done.exists():
        return json.loads(done.read_text())
    counts = {"fashion_train": 0, "fashion_test": 0, "crops": 0}
    for split, file, most in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        take = min(most, n - sum(counts.values())) if FASHION.is_dir() else 0
        if take > 0:
            fashion_folder(folder / split, file, take)
            counts[f"fashion_{split}"] = take
    sources = emoji_pool() + [
        (name, Image.fromarray(x))
        for name, x in zip(("china", "flower"), load_sample_images().images, strict=True)
    ]
    rng = np.random.default_rng(seed)
    for i in range(n - sum(counts.values())):
        spread = 0.0
        while spread < 12:  # grey levels: a box of empty margin is no picture
            label, im = sources[int(rng.integers(len(sources)))]
            w, h = im.size
            share = rng.uniform(0.3, 0.7)
            cw, ch = max(8, round(w * share)), max(8, round(h * share))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = im.crop((x, y, x + cw, y + ch))
            spread = float(np.asarray(crop.convert("L"), np.float32).std())
        if max(crop.size) > 256:
            crop.thumbnail((256, 256))
        split = "train" if rng.random() < 0.8 else "test"
        dest = folder / split / f"crop-{label}" / f"crop-{i:06d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop.save(dest, quality=90)
        counts["crops"] += 1
    done.write_text(json.dumps(counts))
    return counts


def end_to_end(work: Path, n: int, timeout: float = 3600, *, real: bool = False) -> dict:
    """``embedscope run-all`` on ``n`` images, with the peak RSS of each kernel (one per
    notebook), sampled every 0.5 s with psutil, and the notebooks' own seconds from
    metrics.json. ``real``: :func:`real_images`, embedded by the kit's default model; else
    generated images with generated vectors (no embedding)."""
    import json
    import os
    import subprocess
    import sys
    import time

    import psutil

    cmd = [sys.executable, "-m", "embedscope.cli", "run-all"]
    if real:
        images = work / f"real-{n}"
        built = real_images(images, n)
        cmd += ["--source", str(images)]
    else:
        images = work / f"images-{n}"
        paths = small_images(images, n)
        npy = work / f"e2e-vectors-{n}.npy"
        if not npy.exists():
            realistic_vectors(n, out=npy)
        npy.with_name(npy.name[:-4] + ".paths.txt").write_text("\n".join(paths) + "\n")
        cmd += ["--source", str(images), "--vectors", str(npy)]
        built = {"generated": n}
    name = f"{'real' if real else 'scale'}{n}"
    cmd += ["--name", name, "--data-root", str(work / "data")]
    cmd += ["--reports-root", str(work / "reports")]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    log = work / f"{name}.log"  # a file, not a pipe: nothing waits on a reader
    with log.open("w") as out:
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    # kernel (or process) -> [what, peak RSS, peak anonymous RSS]: RSS counts the pages of a
    # memory-mapped file read (the vectors), which the kernel can drop; RSS less its file-backed
    # and shared pages is what the process itself holds
    peaks: dict[str, list] = {}
    while proc.poll() is None and time.perf_counter() - t < timeout:
        for child in [proc, *proc.children(recursive=True)]:
            try:
                mem = child.memory_info()
                line = child.cmdline()
            except psutil.Error:
                continue
            # a kernel is named by its connection file (its launcher's threads share it)
            what = next((a for a in line if a.endswith(".json")), "") if "-f" in line else ""
            peak = peaks.setdefault(what or f"run-all {child.pid}", [what or "run-all", 0, 0])
            peak[1], peak[2] = max(peak[1], mem.rss), max(peak[2], mem.rss - mem.shared)
        time.sleep(0.5)
    if proc.poll() is None:
        for child in [*proc.children(recursive=True), proc]:  # its kernels too
            child.kill()
        return {"images": n, "missed": f"not done in {timeout:.0f} s (stopped)"}
    tail = log.read_text().strip().splitlines()[-3:]
    metrics = work / "reports" / name / "metrics.json"
    facts = json.loads(metrics.read_text()) if metrics.exists() else {}
    kernels = [p for p in peaks.values() if p[0] != "run-all"]
    run_all = [p for p in peaks.values() if p[0] == "run-all"]
    return {
        "images": n,
        "built": built,
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - t, 1),
        "load_1min_at_start": round(load, 2),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "notebook_seconds": facts.get("notebook_seconds"),
        "kernel_peak_rss_gb_in_order": [round(p[1] / 1e9, 2) for p in kernels],
        "kernel_peak_anon_gb_in_order": [round(p[2] / 1e9, 2) for p in kernels],
        "run_all_peak_rss_gb": round(max(p[1] for p in run_all) / 1e9, 2),
        "run_all_peak_anon_gb": round(max(p[2] for p in run_all) / 1e9, 2),
        "tail": tail,
        "report": str(work / "reports" / name),
        "source": str(images),
    }


def images_table(r: dict, section: str = "pipeline_images") -> str:
    """An end-to-end section: each notebook's seconds and its kernel's peak RSS, and what a
    real browser measured on the page written (``page``, where probed)."""
    lines = [f"## {section}", ""]
    if "missed" in r:
        return "\n".join([*lines, f"{r['images']:,} images: {r['missed']}", ""])
    lines += [
        f"{r['images']:,} images ({r.get('built')}), return code {r.get('returncode')}, "
        f"{r.get('seconds')} s in all; load {r.get('load_1min_at_start')} at start, "
        f"{r.get('load_1min_at_end')} at the end",
        "",
        "| notebook | seconds | kernel peak RSS GB | of it anonymous GB |",
        "|---|---|---|---|",
    ]
    peaks = r.get("kernel_peak_rss_gb_in_order") or []
    anon = r.get("kernel_peak_anon_gb_in_order") or []
    for k, (nb, sec) in enumerate((r.get("notebook_seconds") or {}).items()):
        lines.append(
            f"| {nb} | {sec} | {peaks[k] if k < len(peaks) else ''} "
            f"| {anon[k] if k < len(anon) else ''} |"
        )
    if "page" in r:
        lines += ["", f"The page in Chromium: {r['page']}"]
    return "\n".join([*lines, ""])


def pipeline_scale(work: Path, sizes: list[int], timeout: float = 1800) -> dict:
    """The section: :func:`stages` at each size (the old ways of :data:`OLD_WAYS` only up to
    their sizes: kept to show why the sample fit and the streaming PCA exist)."""
    out = {}
    for n in sizes:
        names = tuple(s for s in STAGES if n <= OLD_WAYS.get(s, n))
        print(f"[bench] pipeline_scale {n:,} vectors", flush=True)
        out[str(n)] = stages(work, n, names, timeout)
    return out


def pipeline_scale_table(results: dict) -> str:
    lines = ["## pipeline_scale", ""]
    for n, r in results.items():
        m = r["machine"]
        lines += [
            f"{int(n):,} x {r['dims']} vectors; {m['cores']} cores, {m['cpu']}, "
            f"{m['memory_gb']} GB, load {m['load_1min_at_start']} at start",
            "",
            "| stage | seconds | CPU seconds | peak RSS GB | of it anonymous GB | load | facts |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["stages"]:
            facts = {
                k: v
                for k, v in row.items()
                if k
                not in (
                    "stage",
                    "seconds",
                    "cpu_seconds",
                    "peak_rss_gb",
                    "peak_anon_gb",
                    "load_1min",
                )
            }
            lines.append(
                f"| {row['stage']} | {row.get('seconds')} | {row.get('cpu_seconds')} "
                f"| {row.get('peak_rss_gb')} | {row.get('peak_anon_gb')} "
                f"| {row.get('load_1min')} | {facts or ''} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pipeline_scale"))
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--end-to-end", action="store_true", help="run-all on --n images")
    parser.add_argument("--real", action="store_true", help="--end-to-end on real images")
    parser.add_argument("--one", help="run this one stage on the vectors at --work (a .npy)")
    args = parser.parse_args()
    if args.one:  # a child of run_stage: its own peak memory is the stage's
        import resource
        import time

        anon = _AnonPeak()
        t = time.perf_counter()
        facts = _stage(args.one, str(args.work))
        facts["seconds"] = round(time.perf_counter() - t, 1)
        use = resource.getrusage(resource.RUSAGE_SELF)
        facts["peak_rss_gb"] = round(use.ru_maxrss / 1e6, 2)
        facts["peak_anon_gb"] = anon.stop()
        # CPU seconds (all threads): on a shared machine they move far less than wall time
        facts["cpu_seconds"] = round(use.ru_utime + use.ru_stime, 1)
        print("FACTS" + json.dumps(facts))
        raise SystemExit(0)
    if args.end_to_end:
        out = end_to_end(args.work, args.n, args.timeout, real=args.real)
    else:
        out = stages(args.work, args.n, tuple(args.stages), args.timeout)
    print(json.dumps(out, indent=1))
