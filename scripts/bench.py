"""`make bench`: embedding throughput and memory, measured side by side in one run.

Ratios taken in the same run on the same images are what we compare (these machines are shared
and noisy): the kit against the older project's approach, against ``transformers.pipeline`` and
against the model's bare forward pass on already-decoded tensors (the ceiling); on camera-sized
JPEGs against the older approach and against their floor, what the cores could do with no
waste (``photos``); per model, how far the precision ``auto`` tries moves the analysis from
float32 on the sample (random-weight ViT-B/16 for its FLOPs, a real-weight DINOv2-S for real
attention activations: scripts/dinov2_small.py); how often the kit's fidelity decision on
random calibration draws agrees with the whole set's truth, on the sample and on 4,096
Fashion-MNIST images (``precision_draws``); the Ray engine against the local one; and the
shared page at a million points, each with its own picture, in a real browser
(``explorer_scale``: scripts/bench_explorer_scale.py). ``--device cuda`` runs the embedding
sections on a GPU. Writes ``reports/bench/bench.json`` and ``reports/bench/bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_explorer_scale import drag_box, explorer_scale, explorer_scale_table, probe_report
from bench_findings import cost, fashion_folder, findings_bench, findings_table
from bench_first_run import SIZES as FIRST_SIZES
from bench_first_run import first_run_table, first_runs, race_table, race_under_load
from bench_forward import ceiling, encoder_at, pixel_batches, vit_b16_dir
from bench_leaks import leaks_bench, leaks_table
from bench_outliers import outliers_bench, outliers_table
from bench_pipeline_scale import (
    end_to_end,
    images_table,
    pipeline_scale,
    pipeline_scale_table,
)
from bench_quality import quality_bench, quality_table
from browser import CHROMIUM_ARGS, ensure_chromium
from dinov2_small import dinov2_small_dir
from PIL import Image

from embedscope.embed import Encoder, embed, embedded, start_local_ray
from embedscope.embed.calibrate import calibration_limit, calibration_size
from embedscope.embed.pixels import decode
from embedscope.embed.precision import (
    KNN_LOSS_MARGIN,
    MIN_AGREEMENT,
    SCREEN_IMAGES,
    agreement,
    calibration_needed,
    candidates,
    clearly_lossy,
    judge,
)
from embedscope.ingest import decode_cost, ingest
from embedscope.knn import knn_vote, neighbors
from embedscope.layout import Layout, update_json, write_atomic
from embedscope.models import builtin_model_dir, load_model
from embedscope.store import load_embeddings
from embedscope.vocabulary import precision_name

ROOT = Path(__file__).resolve().parents[1]
#: Each section's budget when run alone (seconds), and what the embed section keeps of it for
#: the race under load after the first runs (whose rows past the rest are skipped, and say so).
SECTION_BUDGET = 3600
RACE_RESERVE = 600
#: The models of the first-run and race-under-load tables (see bench_first_run.py).
FIRST_MODELS = ["mobilenet_v2", "dinov2-s"]


def make_images(folder: Path, n: int, seed: int = 0, sample: bool = True) -> list[Path]:
    """The sample's images (unless not ``sample``), topped up with generated 640x480 JPEG
    'photos' to reach ``n``."""
    rng = np.random.default_rng(seed)
    paths = sorted((ROOT / "data" / "sample").rglob("*.webp"))[:n] if sample else []
    for i, src in enumerate(paths):
        dest = folder / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        paths[i] = dest
    for i in range(len(paths), n):  # each one distinct: the kit embeds a content once
        dest = folder / f"generated-{i % 8}" / f"img{i:05d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).resize((640, 480), Image.BILINEAR).save(dest, quality=85)
        paths.append(dest)
    return paths


def make_photos(folder: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> list[Path]:
    """``n`` distinct camera-sized JPEGs (quality 90) in 4 class folders: smooth shapes plus
    sensor-like noise, so the files are as large and as slow to decode as real photos."""
    rng = np.random.default_rng(6)
    noise = rng.integers(-8, 9, (size[1], size[0], 3), dtype=np.int16)
    paths = []
    for i in range(n):
        dest = folder / f"camera-{i % 4}" / f"IMG_{i:04d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)
        arr += np.roll(noise, i * 7, axis=1)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(dest, quality=90)
        paths.append(dest)
    return paths


def old_approach(model_dir: str, paths: list[Path], device: str = "cpu") -> float:
    """The older scripts project: PIL decode in the main thread, one image at a time, the
    image processor, float32, and the flattened last_hidden_state kept in memory."""
    net, processor, _ = load_model(model_dir, device=device)
    kept = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            im = Image.open(p).convert("RGB")
            out = net(**processor(images=im, return_tensors="pt").to(device))
            kept.append(out.last_hidden_state.flatten().cpu().numpy())
    return len(paths) / (time.perf_counter() - t0)


def pipeline_approach(model_dir: str, paths: list[Path], batch_size: int, device: str) -> float:
    from transformers import pipeline

    net, processor, _ = load_model(model_dir, device=device)
    pipe = pipeline("image-feature-extraction", model=net, image_processor=processor, device=device)
    t0 = time.perf_counter()
    list(pipe([str(p) for p in paths], batch_size=batch_size, pool=hasattr(net, "pooler")))
    return len(paths) / (time.perf_counter() - t0)


def precision_fidelity(
    model_dir: str, paths: list[Path], batch_size: int, device: str, name: str | None
) -> dict:
    """What precision ``name`` (the one ``auto`` raced best here) does to the analysis of
    ``paths`` (labelled by folder): neighbour agreement and kNN-accuracy change against
    float32."""
    if name is None:
        return {"candidate": None}
    reference = encoder_at(model_dir, device, "fp32")
    low = Encoder(reference.net, reference.pooling, reference.device, reference.pixels, name)
    batches = pixel_batches(reference, paths, batch_size)
    ref = np.concatenate([v for _, v, _ in embedded(batches, reference)])
    other = np.concatenate([v for _, v, _ in embedded(batches, low)])
    labels = np.array([p.parent.name for p in paths])
    return {"candidate": name, **agreement(ref, other, labels)}


def precision_draws(
    work: Path, images: int, device: str, draws: int, only: list[str] | None = None
) -> dict:
    """For the sample (360 emoji) and the first ``images`` of Fashion-MNIST's training split
    (real 28x28 photos of clothes, 10 classes), each bench model and each precision the
    hardware offers it, plus a borderline candidate (:func:`borderline`): the truth on the
    whole set (agreement and kNN change against float32, figures of every image) and the
    kit's decision on ``draws`` random calibrations of the set, sized and grown as the kit
    does (:func:`kit_decision`), counted against that truth: ``false_rejections`` (truly
    faithful, rejected) and ``false_acceptances`` (truly lossy, accepted); ``accepted_before``
    counts the former rule (the first sample alone, no finite-population correction).

    Vectors are the kit's own, embedded at each precision and cached in ``work``: a second
    run embeds nothing. ``only``: the bench models to draw for (see :func:`bench_models`)."""
    fashion = fashion_folder(work / f"fashion-train-{images}", "train", images)
    sets = {"sample": ROOT / "data" / "sample", f"fashion-mnist {images}": fashion}
    models = {name: d for name, (d, _) in bench_models(work / "models", only).items()}
    rows = {}
    for set_name, folder in sets.items():
        layout = Layout(folder.name, work / "data", work / "reports")
        ingest(str(folder), layout)
        rng = np.random.default_rng(0)
        orders = None
        for name, model_dir in models.items():
            ref, labels = kit_vectors(layout, model_dir, "fp32", device)
            orders = orders or [rng.permutation(len(ref)) for _ in range(draws)]
            net = encoder_at(model_dir, device, "fp32").net
            others = {
                c: kit_vectors(layout, model_dir, c, device)[0]
                for c in candidates(torch.device(device), net)
            }
            if name == "mobilenet_v2":
                others["fp32+noise (borderline)"] = borderline(ref, labels)
            for cand, other in others.items():
                print(f"[bench] precision draws: {set_name} {name} {cand}", flush=True)
                rows[f"{set_name}: {name} {cand}"] = draw_row(ref, other, labels, orders)
    return rows


def kit_vectors(layout: Layout, model_dir: str, precision: str, device: str):
    """The kit's vectors of ``layout``'s images at ``precision`` and their labels, in path
    order (embedded once, then read from the kit's cache)."""
    embed(layout, model_dir, device=device, precision=precision, progress=False)
    emb = load_embeddings(layout, model_dir)
    order = np.argsort(emb.rows["path"].to_numpy(dtype=str), kind="stable")
    return emb.vectors[order], emb.rows["label"].to_numpy(dtype=object)[order]


def kit_decision(ref: np.ndarray, other: np.ndarray, labels: np.ndarray, order: np.ndarray):
    """The kit's verdict (calibrate.auto_precision) on a calibration drawn in ``order``, a
    random order of the whole set: the first :func:`calibration_size` images, grown to what
    their verdict needs (at most :func:`calibration_limit`), judged as a sample of the set.
    Returns (kept, images judged, the former rule's verdict on the first sample). As in the
    kit's race, a candidate clearly lossy on the first :data:`SCREEN_IMAGES` is dropped there."""
    population = len(order)
    first = order[: calibration_size(population)]
    screened = first[:SCREEN_IMAGES]
    before = judge(agreement(ref[first], other[first], labels[first]))[0]
    if len(screened) >= SCREEN_IMAGES and clearly_lossy(ref[screened], other[screened]):
        return False, len(screened), before
    figures = agreement(ref[first], other[first], labels[first], population=population)
    n = min(calibration_needed(figures), calibration_limit(population))
    if n > len(first):
        pick = order[:n]
        figures = agreement(ref[pick], other[pick], labels[pick], population=population)
    return judge(figures)[0], figures["images"], before


def draw_row(ref: np.ndarray, other: np.ndarray, labels: np.ndarray, orders: list) -> dict:
    truth = agreement(ref, other, labels)
    loss = -(truth["knn_accuracy_delta"] or 0.0)
    faithful = truth["neighbour_agreement"] >= MIN_AGREEMENT and loss < KNN_LOSS_MARGIN
    kept, sizes, before = zip(*(kit_decision(ref, other, labels, o) for o in orders), strict=True)
    draws = len(orders)
    return {
        "images": len(ref),
        "neighbour_agreement": truth["neighbour_agreement"],
        "knn_accuracy_delta": truth["knn_accuracy_delta"],
        "knn_losses": truth["knn_losses"],
        "knn_gains": truth["knn_gains"],
        "truly_faithful": bool(faithful),
        "first_images": calibration_size(len(ref)),
        "draw_images": [min(sizes), max(sizes)],
        "draws": draws,
        "accepted": int(sum(kept)),
        "false_rejections": 0 if not faithful else int(draws - sum(kept)),
        "false_acceptances": 0 if faithful else int(sum(kept)),
        "accepted_before": int(sum(before)),
    }


def borderline(ref: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 vectors with noise added, made to fail on kNN only: 3% of the images whose vote
    float32 gets right are moved beside a random image of another class (kNN accuracy about
    0.03 lower), and every vector gets a light noise whose scale, found by bisection, brings
    neighbour agreement on the whole set to 0.92, as bf16's on the sample. Isotropic noise
    alone cannot do it: in 1,280 dimensions it barely reorders neighbours."""
    rng = np.random.default_rng(seed)
    idx, sim = neighbors(ref, 10)
    right = np.flatnonzero(knn_vote(labels, idx, sim) == labels)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    moved = unit.copy()
    for i in rng.choice(right, round(0.03 * len(ref)), replace=False):
        moved[i] = unit[rng.choice(right[labels[right] != labels[i]])]
    noise = rng.normal(size=ref.shape).astype(np.float32) / np.sqrt(ref.shape[1])
    lo, hi = 0.0, 1.0
    for _ in range(12):
        scale = (lo + hi) / 2
        agree = agreement(unit, moved + scale * noise, labels)["neighbour_agreement"]
        lo, hi = (scale, hi) if agree > 0.92 else (lo, scale)
    return moved + (lo + hi) / 2 * noise


def kit(model_dir: str, images: Path, work: Path, device: str = "auto", **options) -> dict:
    layout = Layout("bench", work / "data", work / "reports")
    ingest(str(images), layout)
    return embed(layout, model_dir, device=device, progress=False, **options)


def kit_again(model_dir: str, images: Path, work: Path, facts: dict) -> dict:
    """A second run on the same images at the precision the first one chose, its decision
    remembered (no calibration): what every later run of the dataset costs."""
    return kit(
        model_dir, images, work, facts["device"], precision=precision_name(facts["precision"])
    )


def bench_models(folder: Path, only: list[str] | None = None) -> dict[str, tuple[str, int]]:
    """The bench's models (their folders) and how many images the slow approaches get;
    ``only``: those whose name starts with one of these (``--models``; default all)."""
    models = {
        "mobilenet_v2": lambda: str(builtin_model_dir()),
        "vit-b16": lambda: str(vit_b16_dir(folder / "vit-b16")),
        "dinov2-s (real weights)": lambda: str(dinov2_small_dir(folder / "dinov2-s")),
    }
    slow = {"mobilenet_v2": 128}
    return {
        name: (folder_of(), slow.get(name, 48))
        for name, folder_of in models.items()
        if only is None or name.split()[0] in only
    }


_PEAK = """
import resource, sys, json
from pathlib import Path
from embedscope.embed import embed
from embedscope.ingest import ingest
from embedscope.layout import Layout
layout = Layout("mem", Path(sys.argv[2]) / "data", Path(sys.argv[2]) / "reports")
ingest(sys.argv[1], layout)
facts = embed(layout, "mobilenet_v2", progress=False)
try:  # this process's own peak: ru_maxrss keeps the parent's size across fork and exec
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"images": facts["images"], "peak_rss_mb": peak_kb / 1024}))
"""


def peak_memory(images: Path, work: Path) -> dict:
    """Peak resident memory of a fresh process embedding ``images`` with the kit."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(images), str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def manifest_speed(folder: Path, n: int) -> dict:
    """Manifest of ``n`` small images: cold (every file read and decoded) and warm (reused)."""
    from embedscope.ingest import build_manifest

    rng = np.random.default_rng(2)
    base = rng.integers(0, 255, (28, 28), dtype=np.uint8)
    for i in range(n):
        dest = folder / f"class-{i % 10}" / f"{i:06d}.png"
        if i % 10 == 0 or i < 10:
            dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i)).save(dest, compress_level=1)
    t0 = time.perf_counter()
    cold = build_manifest(folder)
    t1 = time.perf_counter()
    build_manifest(folder, previous=cold)
    t2 = time.perf_counter()
    return {
        "images": n,
        "ok": int((cold["status"] == "ok").sum()),
        "seconds_cold": round(t1 - t0, 2),
        "seconds_warm": round(t2 - t1, 2),
    }


def reduce_speed(n: int, dim: int = 1280) -> dict:
    """Reducers and neighbours at scale, on clustered vectors shaped like MobileNetV2's."""
    from embedscope.knn import neighbors
    from embedscope.reduce import reduce

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, dim)).astype(np.float32) * 3
    x = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    out = {"points": n, "dim": dim}
    for name, fn in [
        ("pca_3d", lambda: reduce(x, "pca", 3)),
        ("umap_3d", lambda: reduce(x, "umap", 3, random_state=None)),
        ("tsne_2d", lambda: reduce(x, "tsne", 2, random_state=None)),
        ("neighbors_k10", lambda: neighbors(x, 10)),
    ]:
        print(f"[bench] {name} at {n:,}", flush=True)
        t0 = time.perf_counter()
        fn()
        out[f"seconds_{name}"] = round(time.perf_counter() - t0, 2)
    return out


def explorer_speed(folder: Path, sizes: list[int]) -> dict:
    """explorer.html size and load-to-interactive time in headless Chromium per point count,
    hover latency (mouse move to hover card shown) on the 2D page and box-selection latency
    (mouse-up to the selection highlighted) on the 3D page."""
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from embedscope.explore import write_explorer

    pool = make_images(folder / "pool", 2000, seed=4)
    rel = [str(p.relative_to(folder)) for p in pool]
    rng = np.random.default_rng(5)
    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
        for n in sizes:
            pts = pd.DataFrame(rng.normal(size=(n, 3)), columns=list("xyz"))
            pts["path"] = [rel[i % len(rel)] for i in range(n)]
            pts["label"] = [f"class-{i % 8}" for i in range(n)]
            for dims in (3, 2):
                page_path = folder / f"explorer-{n}-{dims}d.html"
                t0 = time.perf_counter()
                write_explorer(pts if dims == 3 else pts.drop(columns="z"), folder, page_path)
                written = time.perf_counter() - t0
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                t0 = time.perf_counter()
                page.goto(page_path.as_uri())
                page.wait_for_selector("body[data-ready='1']", timeout=300_000)
                loaded = time.perf_counter() - t0
                if dims == 3:
                    out[f"{n}_points"] = {
                        "mb": round(page_path.stat().st_size / 1e6, 2),
                        "seconds_write": round(written, 2),
                        "seconds_load_to_interactive": round(loaded, 2),
                        "select_ms": _select_latency(page),
                    }
                else:
                    out[f"{n}_points"]["hover_ms"] = _hover_latency(page)
                page.close()
        browser.close()
    return out


def _hover_latency(page, tries: int = 10) -> float | None:
    """Median ms from a mouse move onto a point to the hover card showing it (2D page)."""
    times = []
    for i in range(tries):
        x, y = page.evaluate(
            """(i) => { const r = document.getElementById('plot').getBoundingClientRect(),
                p = window.embedscope.screenPositions([i]);
                return [r.left + p[0], r.top + p[1]]; }""",
            i * 97,
        )
        page.mouse.move(5, 5)
        page.wait_for_timeout(100)
        t0 = time.perf_counter()
        page.mouse.move(x, y)
        try:
            page.wait_for_selector("#hover:not([hidden])", timeout=5_000)
        except Exception:  # a point hidden under another: try the next one
            continue
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 1) if times else None


def _select_latency(page, tries: int = 5) -> float:
    """Median ms from mouse-up to the box's points highlighted, as the page times it (3D page:
    every point's last-frame position tested against the box, the selection drawn on top);
    boxes of growing size around the centre, each replacing the last selection."""
    page.click("#tool [data-tool='box']")
    times = []
    for k in range(tries):
        box = page.locator("#plot").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        times.append(drag_box(page, cx, cy, 20 + 30 * k, steps=4, timeout=60_000))
    return round(float(np.median(times)), 1)


def _counts(text: str) -> list[int]:
    """``100000,1000000`` (underscores allowed) as positive numbers."""
    try:
        counts = [int(v) for v in text.replace("_", "").split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 100000,1000000: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--memory-images", type=int, default=5000)
    parser.add_argument("--scale", type=int, default=100_000, help="points for manifest/reduce")
    parser.add_argument("--photos", type=int, default=48, help="4000x3000 JPEGs to embed")
    parser.add_argument("--fidelity-images", type=int, default=360, help="sample images")
    parser.add_argument("--draws", type=int, default=100, help="calibration draws per candidate")
    parser.add_argument(
        "--precision-images", type=int, default=4096, help="Fashion-MNIST, precision draws"
    )
    parser.add_argument(
        "--models", nargs="+", help="embed and precision_draws: mobilenet_v2 vit-b16 dinov2-s"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | mps (embedding sections)")
    parser.add_argument(
        "--first-sizes", nargs="+", type=int, default=list(FIRST_SIZES), help="embed: first runs"
    )
    parser.add_argument("--first-repeats", type=int, default=3, help="embed: pairs per size")
    parser.add_argument(
        "--first-memory", type=int, default=0, help="embed: pairs after another dataset"
    )
    parser.add_argument("--races", type=int, default=20, help="embed: races beside busy work")
    parser.add_argument("--findings-images", type=int, default=12_000, help="Fashion-MNIST")
    parser.add_argument("--findings-seeds", type=int, default=5)
    parser.add_argument(
        "--findings-tune", action="store_true", help="findings on the held-out tuning split"
    )
    parser.add_argument(
        "--scale-points",
        type=_counts,
        default="100000,1000000",
        help="explorer_scale: point counts of the pages, comma-separated",
    )
    parser.add_argument("--scale-hovers", type=int, default=200, help="explorer_scale: hovers")
    parser.add_argument(
        "--scale-served", type=int, default=100_000, help="explorer_scale: live/Dash points (0: no)"
    )
    parser.add_argument(
        "--scale-lab",
        type=lambda t: [] if t.strip() in ("", "0") else _counts(t),
        default="100000,1000000",
        help="explorer_scale: live panel point counts in a real JupyterLab (0: none)",
    )
    sections = (
        "embed",
        "precision_draws",
        "photos",
        "manifest",
        "reduce",
        "explorer",
        "ray",
        "findings",
        "explorer_scale",
        "leaks",
        "quality",
        "outliers",
        "pipeline_scale",
        "pipeline_vectors",
        "pipeline_images",
    )
    parser.add_argument(
        "--pipeline-sizes",
        type=_counts,
        default="1000000",
        help="pipeline_scale: generated 1,280-d vector counts, comma-separated",
    )
    parser.add_argument("--only", nargs="+", default=list(sections), choices=sections)
    args = parser.parse_args(argv)
    out = Path(args.out)
    results: dict = {}  # this run's sections, merged into bench.json at the end
    results["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        if "manifest" in args.only:
            print("[bench] manifest", flush=True)
            results["manifest"] = manifest_speed(Path(tmp) / "small", args.scale)
        if "reduce" in args.only:
            results["reduce"] = reduce_speed(args.scale)
        if "explorer" in args.only:
            print("[bench] explorer", flush=True)
            sizes = [n for n in (1_000, 10_000, 100_000) if n <= args.scale]
            results["explorer"] = explorer_speed(Path(tmp) / "explorer", sizes)
    if "embed" in args.only:
        started = time.monotonic()
        models, memory = embedding_speed(args)
        results["models" if args.device == "cpu" else f"models_{args.device}"] = models
        if memory:
            results["memory"] = memory
        if args.device == "cpu":  # first runs auto vs fp32 by size; the race beside busy work
            work = out / "first-run-work"  # kept: the images are made once
            first = {k: d for k, (d, _) in bench_models(work / "models", FIRST_MODELS).items()}
            # the section's hour, less what the race under load takes (about 10 minutes)
            deadline = started + SECTION_BUDGET - RACE_RESERVE
            results["first_runs"] = first_runs(
                work, first, args.first_sizes, args.first_repeats, args.first_memory, deadline
            )
            results["race_under_load"] = race_under_load(first, args.races)
    if "precision_draws" in args.only:
        work = out / "precision-work"  # kept: a second run embeds nothing again
        results["precision_draws"] = precision_draws(
            work, args.precision_images, args.device, args.draws, args.models
        )
    if "photos" in args.only:
        results["photos"] = photo_speed(args.photos, min(args.photos, 12), args.device)
    if "ray" in args.only:
        print("[bench] ray engine", flush=True)
        results["ray"] = ray_speed(args.images)
    if "findings" in args.only:
        work = out / "findings-work"  # kept: a second run embeds nothing again
        results["findings"] = findings_bench(
            work, images=args.findings_images, seeds=args.findings_seeds, tune=args.findings_tune
        )
        print("[bench] findings: cost", flush=True)
        results["findings"]["cost"] = [cost(100_000, 1280, 10), cost(100_000, 1280, 1000)]
    if "quality" in args.only:
        print("[bench] quality", flush=True)
        results["quality"] = quality_bench(out / "quality-work")  # kept: copies made once
    if "outliers" in args.only:
        print("[bench] outliers", flush=True)
        results["outliers"] = outliers_bench(out / "outliers-work", seeds=args.findings_seeds)
    if "leaks" in args.only:
        print("[bench] leaks", flush=True)
        results["leaks"] = leaks_bench(out / "leaks-work")  # kept: a second run embeds nothing
    if "explorer_scale" in args.only:
        results["explorer_scale"] = explorer_scale(
            out,
            args.scale_points,
            hovers=args.scale_hovers,
            served=args.scale_served,
            lab=args.scale_lab,
        )
    if "pipeline_scale" in args.only:
        results["pipeline_scale"] = pipeline_scale(
            out / "pipeline-scale-work", args.pipeline_sizes, timeout=1800
        )
    if "pipeline_vectors" in args.only:  # run-all with VECTORS= at 1M: about 47 minutes quiet
        print("[bench] pipeline_vectors: run-all on 1,000,000 files with their vectors", flush=True)
        # writing the files and vectors takes about 9 minutes: run-all gets the rest of the hour
        run = end_to_end(out / "pipeline-vectors-work", 1_000_000, timeout=3000)
        if "missed" not in run:
            run["page"] = probe_report(Path(run["report"]), Path(run["source"]))
        results["pipeline_vectors"] = run
    if "pipeline_images" in args.only:  # run-all on 100,000 real images: its own hour
        print("[bench] pipeline_images: run-all on 100,000 real images", flush=True)
        results["pipeline_images"] = end_to_end(
            out / "pipeline-images-work", 100_000, timeout=3600, real=True
        )
    # sections run at once (each alone, as the budget asks) each keep their part of bench.json
    results = update_json(out / "bench.json", lambda kept: kept.update(results))
    text = table(results)
    write_atomic(out / "bench.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(text)
    return 0


def embedding_speed(args: argparse.Namespace) -> tuple[dict, dict]:
    """Images/s of each approach per model, precision fidelity on the sample, and peak memory
    of the kit at two sizes (CPU runs only)."""
    rows = {}
    device = args.device
    sample = sorted((ROOT / "data" / "sample").rglob("*.webp"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp / "images", args.images)
        for name, (model_dir, n_slow) in bench_models(tmp, args.models).items():
            print(f"[bench] {name}", flush=True)
            # a first run as on a new machine: the race timed, not remembered from a last bench
            facts = kit(
                model_dir, tmp / "images", tmp / f"kit-{name}", device, precision_race="again"
            )
            batch = facts["batch_size"]  # the kit's own choice, used for the others too
            n_ceiling = max(8 * batch, 64)
            again = kit_again(model_dir, tmp / "images", tmp / f"again-{name}", facts)
            row = {
                "kit": facts["images_per_second"],
                "kit_streaming": facts["images_per_second_streaming"],
                "kit_again": again["images_per_second"],
                "old_approach": old_approach(model_dir, paths[:n_slow], facts["device"]),
                "pipeline": pipeline_approach(model_dir, paths[:n_slow], batch, facts["device"]),
                "ceiling": ceiling(
                    model_dir, paths[:n_ceiling], batch, facts["device"], facts["precision"]
                ),
                "precision": facts["precision"],
                "precision_check": facts["precision_check"],
                "seconds_precision_check": facts["seconds_precision_check"],
                "batch_size": batch,
                "num_workers": facts["num_workers"],
                "images": facts["images"],
                "device": facts["device"],
            }
            if facts["device"].startswith("cuda"):
                row["gpu_name"] = torch.cuda.get_device_name(facts["device"])
            for other in ("old_approach", "pipeline", "ceiling"):
                row[f"kit_over_{other}"] = round(row["kit"] / row[other], 3)
            row["kit_again_over_ceiling"] = round(row["kit_again"] / row["ceiling"], 3)
            print(f"[bench] {name} precision fidelity on the sample", flush=True)
            tried = (facts["precision_check"] or {}).get("candidate")
            fidelity = precision_fidelity(
                model_dir, sample[: args.fidelity_images], batch, facts["device"], tried
            )
            row |= {
                "candidate": fidelity["candidate"],
                "neighbour_agreement": fidelity.get("neighbour_agreement"),
                "knn_accuracy_delta": fidelity.get("knn_accuracy_delta"),
                "fidelity_images": fidelity.get("images"),
            }
            rows[name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        if device != "cpu":
            return rows, {}
        print("[bench] peak memory", flush=True)
        small = peak_memory(tmp / "images", tmp / "mem-small")
        make_images(tmp / "many", args.memory_images, seed=1)
        large = peak_memory(tmp / "many", tmp / "mem-large")
    memory = {
        f"peak_rss_mb_{small['images']}": round(small["peak_rss_mb"], 1),
        f"peak_rss_mb_{large['images']}": round(large["peak_rss_mb"], 1),
        "large_over_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }
    return rows, memory


def photo_speed(n: int, n_slow: int, device: str) -> dict:
    """Camera-sized JPEGs with mobilenet_v2: the kit (draft-scale decoding in workers) against
    the older one-image-at-a-time approach (full decode), and against its floor — what the
    cores could do if decoding and the model kept every one of them busy (:func:`floor_costs`)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"[bench] photos: writing {n} 4000x3000 JPEGs", flush=True)
        paths = make_photos(tmp / "photos", n)
        model_dir = str(builtin_model_dir())
        print("[bench] photos: kit", flush=True)
        # a first run as on a new machine: the race timed, not remembered from a last bench
        facts = kit(model_dir, tmp / "photos", tmp / "kit", device, precision_race="again")
        check, batch = facts["precision_check"] or {}, facts["batch_size"]
        kept, candidate = precision_name(facts["precision"]), check.get("candidate")
        # the later run as kit_again makes it, its CPU time counted from ingest's end
        layout = Layout("bench", tmp / "again" / "data", tmp / "again" / "reports")
        ingest(str(tmp / "photos"), layout)
        ingested = decode_cost(layout)  # what ingest's pass measured, passed on to the embed
        cpu = cpu_seconds()
        again = embed(layout, model_dir, device=facts["device"], progress=False, precision=kept)
        cpu = cpu_seconds() - cpu - again["seconds_load_model"]  # its model load: one thread
        print("[bench] photos: floor", flush=True)
        ms = floor_costs(model_dir, paths, batch, facts["device"], [kept, "fp32", candidate])
        print("[bench] photos: old approach", flush=True)
        old = old_approach(model_dir, paths[:n_slow], facts["device"])
        mb = sum(p.stat().st_size for p in paths) / n / 1e6
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # a first run: every image decoded once; the calibration images through float32 (the
    # kept precision's vectors are not redone), and through the candidate while it raced (all
    # of them when it was judged; a warm-up and the timed batches when it lost the race)
    calibrated = check.get("images") or (
        calibration_size(n) if check.get("race") == "measured" else 0
    )
    raced = calibrated if "images" in check else (check.get("race_batches", 0) + 1) * batch
    calibration_ms = calibrated * ms["fp32"] + min(raced, calibrated) * ms.get(candidate, 0.0)
    first_ms = n * ms["decode"] + calibration_ms + (n - calibrated) * ms[kept]
    floor = 1000 * cores / (ms["decode"] + ms[kept])
    floor_first = 1000 * cores * n / first_ms
    return {
        "model": "mobilenet_v2",
        "photos": n,
        "size": "4000x3000",
        "mb_per_photo": round(mb, 2),
        "old_approach": round(old, 2),
        "kit": facts["images_per_second"],
        "kit_over_old_approach": round(facts["images_per_second"] / old, 2),
        "kit_again": again["images_per_second"],
        "kit_again_over_old_approach": round(again["images_per_second"] / old, 2),
        "cores": cores,
        "decode_ms": round(ms["decode"], 2),
        "model_ms": round(ms[kept], 2),
        "calibration_images": calibrated,
        "calibration_model_ms": round(calibration_ms / max(calibrated, 1), 2),
        "floor": round(floor, 2),
        "kit_over_floor": round(again["images_per_second"] / floor, 3),
        "floor_first": round(floor_first, 2),
        "kit_first_over_floor_first": round(facts["images_per_second"] / floor_first, 3),
        "kit_again_workers": again["num_workers"],
        # CPU-ms per image the later run spent, decoding workers included: against decode_ms +
        # model_ms, what the kit spends beyond the work, whatever else the machine runs
        "kit_again_cpu_ms": round(cpu * 1000 / n, 2),
        # the worker costs that chose the decoding workers, neither measured again by the run:
        # the decode cost from ingest's pass, the model's one-thread cost as remembered
        "decode_ms_from_ingest": round(ingested * 1000, 2) if ingested else None,
        "ms_decode_per_image": again["ms_decode_per_image"],
        "ms_model_per_image": again["ms_model_per_image"],
        "precision": facts["precision"],
        "num_workers": facts["num_workers"],
        "device": facts["device"],
    }


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that ended (decoding workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def floor_costs(
    model_dir: str, paths: list[Path], batch_size: int, device: str, precisions: list[str]
) -> dict[str, float]:
    """CPU-milliseconds per image (this process's CPU time, so another tenant's load does not
    count) to decode ``paths`` through the kit's own :func:`~embedscope.embed.pixels.decode`
    (draft scale, resize, crop), ``"decode"``, and to run the kit's :class:`Encoder` at each of
    ``precisions`` on the decoded pictures in batches of ``batch_size`` (after one untimed
    warm-up batch). The model runs on one thread: its work, without the CPU that threads
    waiting on each other burn (2x the CPU time on 2 shared cores)."""
    ref = encoder_at(model_dir, device, "fp32")
    threads = torch.get_num_threads()
    t0 = time.process_time()
    pictures = [decode(p, ref.pixels)[0] for p in paths]
    ms = {"decode": (time.process_time() - t0) * 1000 / len(paths)}
    batches = [torch.stack(pictures[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    torch.set_num_threads(1)
    for name in dict.fromkeys(p for p in precisions if p):
        encoder = Encoder(ref.net, ref.pooling, ref.device, ref.pixels, name)
        list(embedded([([], batches[0], [])], encoder))  # warm-up: kernels picked
        t0 = time.process_time()
        list(embedded([([], b, []) for b in batches], encoder))
        ms[name] = (time.process_time() - t0) * 1000 / len(paths)
    torch.set_num_threads(threads)
    return ms


def ray_speed(n: int) -> dict:
    """The built-in model on the same ``n`` images with the local engine and with the Ray engine
    on a local Ray using every core; each engine's images/s counts from its first image read to
    its last vector written (for Ray: actor start-up and model load included, Ray start not)."""
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "images", n)
        local = kit("mobilenet_v2", tmp / "images", tmp / "local", "cpu")
        t0 = time.perf_counter()
        start_local_ray()
        started = time.perf_counter() - t0
        try:
            layout = Layout("bench", tmp / "on-ray" / "data", tmp / "on-ray" / "reports")
            ingest(str(tmp / "images"), layout)
            on_ray = embed(layout, "mobilenet_v2", progress=False, engine="ray")
        finally:
            ray.shutdown()
    return {
        "ray_version": ray.__version__,
        "images": on_ray["images"],
        "cpus": os.cpu_count(),
        "actors": on_ray["concurrency"],
        "local_img_s": local["images_per_second"],
        "ray_img_s": on_ray["images_per_second"],
        "ray_over_local": round(on_ray["images_per_second"] / local["images_per_second"], 3),
        "seconds_ray_start": round(started, 2),
        "seconds_local_embed": local["seconds_embed"],
        "seconds_ray_embed": on_ray["seconds_embed"],
    }


def table(results: dict) -> str:
    lines = []
    for section in ("models", "models_cuda", "models_mps"):
        if not results.get(section):
            continue
        lines += [
            f"| {section}: model | device | kit img/s | again img/s | old img/s | pipeline img/s "
            "| ceiling img/s | kit/old | kit/pipeline | kit/ceiling | again/ceiling |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results[section].items():
            lines.append(
                f"| {name} ({r['precision']}) | {r.get('gpu_name') or r.get('device', 'cpu')} "
                f"| {r['kit']} | {r.get('kit_again')} | {r['old_approach']} | {r['pipeline']} "
                f"| {r['ceiling']} | {r['kit_over_old_approach']} | {r['kit_over_pipeline']} "
                f"| {r['kit_over_ceiling']} | {r.get('kit_again_over_ceiling')} |"
            )
        lines += [
            "",
            "| precision auto tried | model | neighbour agreement | kNN accuracy delta | images "
            "| kept by the kit's own check |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in results[section].items():
            kept = (r.get("precision_check") or {}).get("kept")
            lines.append(
                f"| {r.get('candidate')} | {name} | {r.get('neighbour_agreement')} "
                f"| {r.get('knn_accuracy_delta')} | {r.get('fidelity_images')} | {kept} |"
            )
        lines.append("")
    if results.get("precision_draws"):
        lines += [
            "| precision draws: set: model, candidate | agreement (all) | kNN delta (all) "
            "| lost / gained (all) | truly faithful | draws x images | accepted "
            "| false rejections | false acceptances | accepted by the former rule |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results["precision_draws"].items():
            low, high = r["draw_images"]
            sizes = f"{r['first_images']}" + (f"->{low}-{high}" if high > r["first_images"] else "")
            lines.append(
                f"| {name} | {r['neighbour_agreement']} | {r['knn_accuracy_delta']} "
                f"| {r['knn_losses']} / {r['knn_gains']} | {r['truly_faithful']} "
                f"| {r['draws']} x {sizes} | {r['accepted']} | {r['false_rejections']} "
                f"| {r['false_acceptances']} | {r['accepted_before']} |"
            )
        lines.append("")
    if results.get("first_runs"):
        lines += [first_run_table(results["first_runs"]), ""]
    if results.get("race_under_load"):
        lines += [race_table(results["race_under_load"]), ""]
    if results.get("memory"):
        lines += ["| peak memory | MB |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in results["memory"].items()]
    if "photos" in results:
        lines += ["", "| photos (4000x3000 JPEG) | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in results["photos"].items()]
    for section in ("manifest", "reduce", "ray"):
        if section in results:
            lines += ["", f"| {section} | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in results[section].items()]
    if "explorer" in results:
        lines += [
            "",
            "| explorer | MB | write s | load-to-interactive s | hover ms | select ms |",
            "|---|---|---|---|---|---|",
        ]
        for k, v in results["explorer"].items():
            lines.append(
                f"| {k} | {v['mb']} | {v['seconds_write']} | "
                f"{v['seconds_load_to_interactive']} | {v.get('hover_ms')} | {v.get('select_ms')} |"
            )
    if "findings" in results:
        lines += ["", findings_table(results["findings"])]
    if "leaks" in results:
        lines += ["", "## leaks", "", leaks_table(results["leaks"])]
    if "quality" in results:
        lines += ["", "## quality", "", quality_table(results["quality"])]
    if "outliers" in results:
        lines += ["", "## outliers", "", outliers_table(results["outliers"])]
    if "explorer_scale" in results:
        lines += ["", explorer_scale_table(results["explorer_scale"])]
    if "pipeline_scale" in results:
        lines += ["", pipeline_scale_table(results["pipeline_scale"])]
    if "pipeline_vectors" in results:
        lines += ["", images_table(results["pipeline_vectors"], "pipeline_vectors")]
    if "pipeline_images" in results:
        lines += ["", images_table(results["pipeline_images"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
