"""One GPU check within a short device lease: kit / bare forward for three models, and the
embed stage at 100,000 images.

Imports only torch, transformers and the kit (no Playwright, plotly or onnx: a lent GPU
machine may lack them). For each model the kit embeds ``--images`` distinct generated JPEGs
(ingest, then ``embed`` with its defaults: the first run, precision race included) and the bare
forward runs on already-decoded tensors at the precision the kit chose (its ceiling); then the
kit's ``embed`` stage alone on ``--scale`` images with MobileNetV2. Prints a table and writes
``<out>/gpu.json``. Runs on a CPU too (small numbers: a smoke run)::

    python scripts/gpu_check.py --out $OUT             # on the device, about 6-9 minutes
    python scripts/gpu_check.py --images 64 --scale 256 --device cpu --out /tmp/g
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import ceiling, forward_models  # noqa: E402

from embedscope.embed import embed  # noqa: E402
from embedscope.embed.precision import cpu_model  # noqa: E402
from embedscope.ingest import ingest  # noqa: E402
from embedscope.layout import Layout, write_json  # noqa: E402
from embedscope.models import builtin_model_dir  # noqa: E402


def _write_images(args: tuple[Path, int, int]) -> None:
    folder, start, stop = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        dest = folder / f"class-{i % 8}" / f"img{i:06d}.jpg"
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # distinct content each
        Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR).save(dest, quality=85)


def make_jpegs(folder: Path, n: int) -> Path:
    """``n`` distinct 640x480 JPEGs in 8 class folders, written on every core."""
    for c in range(8):
        (folder / f"class-{c}").mkdir(parents=True, exist_ok=True)
    step = 2_000
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_images, [(folder, s, min(s + step, n)) for s in range(0, n, step)]))
    return folder


def kit_run(images: Path, work: Path, model_dir: str, device: str) -> tuple[dict, float]:
    """The kit's first run on ``images``: facts of its embed, and its ingest seconds."""
    layout = Layout(images.name, work / "data", work / "reports")
    t0 = time.perf_counter()
    ingest(str(images), layout)
    seconds_ingest = time.perf_counter() - t0
    return embed(layout, model_dir, device=device, progress=False), seconds_ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=4096, help="images per model")
    parser.add_argument("--scale", type=int, default=100_000, help="images for the embed stage")
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args(argv)
    result = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_jpegs(tmp / "images", args.images)
        paths = sorted(images.rglob("*.jpg"))
        for name, model_dir in forward_models(tmp / "models").items():
            print(f"[gpu] {name}", flush=True)
            facts, _ = kit_run(images, tmp / f"kit-{name}", model_dir, args.device)
            n_bare = min(len(paths), max(16 * facts["batch_size"], 512))
            bare = ceiling(
                model_dir, paths[:n_bare], facts["batch_size"], args.device, facts["precision"]
            )
            result["models"][name] = {
                "kit_img_s": round(facts["images_per_second"], 1),
                "bare_forward_img_s": round(bare, 1),
                "kit_over_bare": round(facts["images_per_second"] / bare, 3),
                "precision": facts["precision"],
                "batch_size": facts["batch_size"],
                "num_workers": facts["num_workers"],
            }
        print(f"[gpu] embed stage at {args.scale} images", flush=True)
        t0 = time.perf_counter()
        scale = make_jpegs(tmp / f"scale-{args.scale}", args.scale)
        seconds_write = time.perf_counter() - t0
        model_dir = str(builtin_model_dir())
        facts, seconds_ingest = kit_run(scale, tmp / "kit-scale", model_dir, args.device)
        result["embed_stage"] = {
            "images": facts["images"],
            "seconds_writing_images": round(seconds_write, 1),
            "seconds_ingest": round(seconds_ingest, 1),
            "seconds_embed": round(facts["images"] / facts["images_per_second"], 1),
            "embed_img_s": round(facts["images_per_second"], 1),
            "precision": facts["precision"],
        }
    write_json(Path(args.out) / "gpu.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
