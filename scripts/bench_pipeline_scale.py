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


def realistic_vectors(n: int, d: int = 1280, *, seed: int = 0, out: Path | None = None):
    """``n`` x ``d`` float32 vectors (a memory-mapped ``.npy`` at ``out`` when given, written a
    block at a time so 1M x 1280 = 5.1 GB never sits in memory twice), and their cluster ids."""
    rng = np.random.default_rng(seed)
    clusters = max(10, n // 1000)
    sizes = rng.zipf(1.6, clusters).astype(float)
    share = np.minimum(sizes, 50) / np.minimum(sizes, 50).sum()
    cluster = np.sort(rng.choice(clusters, size=n, p=share))
    centres = rng.standard_normal((clusters, LATENT)).astype(np.float32)
    bases = (rng.standard_normal((clusters, SPREAD, LATENT)) * 0.35).astype(np.float32)
    mix = (rng.standard_normal((LATENT, d)) / np.sqrt(LATENT)).astype(np.float32)
    if out is None:
        x = np.empty((n, d), np.float32)
    else:
        x = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, d))
    order = rng.permutation(n)  # rows in random order, as files of images arrive
    cluster = cluster[order]
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
    if name == "pca":  # reduce()'s PCA reads all vectors into memory once
        from embedscope.reduce import reduce

        coords, _ = reduce(x, "pca", 3)
        return {"points": len(coords)}
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
        idx, _ = knn.top_k(x[np.flatnonzero(test)], x[np.flatnonzero(~test)], 10)
        return {"queries": int(test.sum()), "base": int((~test).sum())}
    raise ValueError(f"unknown stage {name!r}")


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
    "leak_search",
    "pca",
    "ipca",
    "umap",
)


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
    """``n`` distinct 32x32 PNGs in ``classes`` folders (thumbnails and quality run on them)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        rel = f"c{i % classes}/img{i:07d}.png"
        dest = folder / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(dest)
        paths.append(rel)
    return paths


def end_to_end(work: Path, n: int, timeout: float = 3600) -> dict:
    """``embedscope run-all`` on ``n`` generated images and vectors (no embedding), with the
    peak RSS of each kernel (one per notebook), sampled every 0.5 s with psutil, and the
    notebooks' own seconds from metrics.json."""
    import json
    import subprocess
    import sys
    import time

    import psutil

    images = work / f"images-{n}"
    paths = small_images(images, n)
    npy = work / f"e2e-vectors-{n}.npy"
    if not npy.exists():
        realistic_vectors(n, out=npy)
    npy.with_name(npy.name[:-4] + ".paths.txt").write_text("\n".join(paths) + "\n")
    cmd = [sys.executable, "-m", "embedscope.cli", "run-all", "--source", str(images)]
    cmd += ["--vectors", str(npy), "--name", f"scale{n}", "--data-root", str(work / "data")]
    cmd += ["--reports-root", str(work / "reports")]
    t = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[str, list] = {}  # kernel (or process) -> [what, peak rss]
    while proc.poll() is None and time.perf_counter() - t < timeout:
        for child in [proc, *proc.children(recursive=True)]:
            try:
                rss = child.memory_info().rss
                line = child.cmdline()
            except psutil.Error:
                continue
            # a kernel is named by its connection file (its launcher's threads share it)
            what = next((a for a in line if a.endswith(".json")), "") if "-f" in line else ""
            peak = peaks.setdefault(what or f"run-all {child.pid}", [what or "run-all", 0])
            peak[1] = max(peak[1], rss)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        return {"images": n, "missed": f"not done in {timeout:.0f} s (stopped)"}
    tail = proc.stdout.read().strip().splitlines()[-3:]
    metrics = work / "reports" / f"scale{n}" / "metrics.json"
    facts = json.loads(metrics.read_text()) if metrics.exists() else {}
    kernels = [round(rss / 1e9, 2) for what, rss in peaks.values() if what != "run-all"]
    return {
        "images": n,
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - t, 1),
        "notebook_seconds": facts.get("notebook_seconds"),
        "kernel_peak_rss_gb_in_order": kernels,
        "run_all_peak_rss_gb": round(max(r for w, r in peaks.values() if w == "run-all") / 1e9, 2),
        "tail": tail,
    }


def pipeline_scale(work: Path, sizes: list[int], timeout: float = 1800) -> dict:
    """The section: :func:`stages` at each size (``hdbscan_all`` only up to 100k: the old way,
    kept to show why the sample fit exists)."""
    out = {}
    for n in sizes:
        names = tuple(s for s in STAGES if s != "hdbscan_all" or n <= 100_000)
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
            "| stage | seconds | CPU seconds | peak RSS GB | load | facts |",
            "|---|---|---|---|---|---|",
        ]
        for row in r["stages"]:
            facts = {
                k: v
                for k, v in row.items()
                if k not in ("stage", "seconds", "cpu_seconds", "peak_rss_gb", "load_1min")
            }
            lines.append(
                f"| {row['stage']} | {row.get('seconds')} | {row.get('cpu_seconds')} "
                f"| {row.get('peak_rss_gb')} "
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
    parser.add_argument("--one", help="run this one stage on the vectors at --work (a .npy)")
    args = parser.parse_args()
    if args.one:  # a child of run_stage: its own peak memory is the stage's
        import resource
        import time

        t = time.perf_counter()
        facts = _stage(args.one, str(args.work))
        facts["seconds"] = round(time.perf_counter() - t, 1)
        use = resource.getrusage(resource.RUSAGE_SELF)
        facts["peak_rss_gb"] = round(use.ru_maxrss / 1e6, 2)
        # CPU seconds (all threads): on a shared machine they move far less than wall time
        facts["cpu_seconds"] = round(use.ru_utime + use.ru_stime, 1)
        print("FACTS" + json.dumps(facts))
        raise SystemExit(0)
    if args.end_to_end:
        out = end_to_end(args.work, args.n, args.timeout)
    else:
        out = stages(args.work, args.n, tuple(args.stages), args.timeout)
    print(json.dumps(out, indent=1))
