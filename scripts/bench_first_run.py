"""`make bench` section ``embed``, two of its tables: a first run with ``precision="auto"``
against one with ``precision="fp32"`` (``kit_first_over_fp32``, by size), and the precision
race run beside busy processes (``race_under_load``).

First runs: per model and size, the same images embedded from nothing (no vectors, no
decision, the race timed anew as on a new machine) with ``auto`` and with ``fp32``, in turn
(auto, fp32, fp32, auto, ...), each run's wall time from the model load to the last vector
written; the ratio fp32 time / auto time per pair, and their median (>= 1.0: auto is never
slower). Which precision ``auto`` kept and why is reported with it, and what a later run of
the same set keeps.

With ``--memory``, each row is run again as a new dataset on a machine that has embedded
another one: a kit cache of the row's own (``$EMBEDSCOPE_CACHE``) first holds what an ``auto``
run on other images (``make_images`` seed 1, none of the sample's) remembered (its race, and a
clear-cut fidelity rejection if it made one), then auto (remembered) and fp32 first runs
alternate as above. The row shows whether the other set's verdict was reused, and the set's
own verdict from the new-machine runs beside it: a remembered rejection must be one the set's
own check also makes.

Race under load: the kit's race (:class:`~embedscope.embed.precision.PrecisionRace`, float32
against one candidate on the same batches of real images, the kit's batch size) run quiet,
then ``races`` times beside ``busy`` processes that spin on a core each; counted: races the
candidate won, and those the kit would remember (none run loaded should be). The candidates:
bf16 where the CPU has it, and float32 itself under another name (a candidate that truly is
not faster: float32 must be kept).

Run alone: ``python scripts/bench_first_run.py --sizes 360 512 --models mobilenet_v2``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_markdown import markdown_table  # noqa: E402

from embedscope.embed import Encoder, embed, resolve_pooling  # noqa: E402
from embedscope.embed.calibrate import remember_race  # noqa: E402
from embedscope.embed.pixels import checked_pixels, decode  # noqa: E402
from embedscope.embed.plan import resolve_batch_size  # noqa: E402
from embedscope.embed.precision import PrecisionRace, load_per_core  # noqa: E402
from embedscope.embed.precision import candidates as offered  # noqa: E402
from embedscope.ingest import ingest  # noqa: E402
from embedscope.layout import Layout  # noqa: E402
from embedscope.models import load_model  # noqa: E402

SIZES = (360, 512, 1024, 4096)


def first_runs(
    work: Path,
    models: dict[str, str],
    sizes=SIZES,
    repeats: int = 3,
    memory: int = 0,
    deadline: float | None = None,
) -> dict:
    """``kit_first_over_fp32`` per model and size, on a new machine and, in ``memory`` pairs,
    on one that embedded another dataset (see the module's docstring). ``deadline``
    (``time.monotonic()``): a row whose runs would end past it, at the seconds per image the
    model's last row took, is skipped and says so (the row's runs cannot stop half-way)."""
    from bench import make_images

    rows: dict[str, dict] = {}
    per_image: dict[str, float] = {}
    for n in sizes:
        images = work / f"images-{n}"
        for name, model_dir in models.items():
            runs = 2 * repeats + 2 + (2 * memory + 1 if memory else 0)  # + warm-up, later run
            cost = per_image.get(name, 0.0) * n * runs
            if deadline is not None and time.monotonic() + cost > deadline:
                left = max(deadline - time.monotonic(), 0) / 60
                rows[f"{name} {n}"] = {"model": name, "images": n, "skipped": (
                    f"over the section's budget: about {cost / 60:.0f} min, {left:.0f} left; "
                    f"alone: python scripts/bench_first_run.py --sizes {n} --skip race"
                )}  # fmt: skip
                print(f"[bench] first runs {name} {n}: {rows[f'{name} {n}']['skipped']}")
                continue
            if not images.exists():
                make_images(images, n)
            layout = Layout(f"first-{n}", work / "data", work / "reports")
            ingest(str(images), layout)
            # untimed: the process's first embed pays torch's start-up and the page cache
            embed(layout, model_dir, precision="fp32", progress=False)
            row = _pairs(layout, model_dir, f"{name}, {n} images", repeats, "again")
            later = embed(layout, model_dir, precision="auto", progress=False)  # a later run
            rows[f"{name} {n}"] = {"model": name, "images": n, **row} | {
                "later_run_kept": later["precision"],
                "later_from_cache": later["from_cache"],
            }
            print(f"[bench] {json.dumps(rows[f'{name} {n}'])}", flush=True)
            per_image[name] = statistics.median(row["seconds_fp32"]) / n
            if not memory:
                continue
            other = work / f"other-images-{n}"
            if not other.exists():
                make_images(other, n, seed=1, sample=False)
            cache = work / f"kit-cache-{name}-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            with _environ(EMBEDSCOPE_CACHE=str(cache)):
                seen = Layout(f"other-{n}", work / "data", work / "reports")
                ingest(str(other), seen)
                shutil.rmtree(seen.data_dir / "embeddings", ignore_errors=True)
                print(f"[bench] another dataset first: {name}, {n} images", flush=True)
                before = embed(seen, model_dir, precision="auto", progress=False)["precision_check"]
                label = f"{name}, {n} images, after another dataset"
                row = _pairs(layout, model_dir, label, memory, "remembered")
            own = rows[f"{name} {n}"]
            rows[f"{name} {n}, after another dataset"] = {"model": name, "images": n, **row} | {
                "other_dataset_check": {k: (before or {}).get(k) for k in CHECK_FIGURES},
                "own_check": {k: own.get(k) for k in ("reason", "checked_images")},
            }
            print(f"[bench] {json.dumps(rows[f'{name} {n}, after another dataset'])}", flush=True)
    return rows


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set, as it was afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: What the first-run rows keep of a precision check.
CHECK_FIGURES = ("candidate", "kept", "reason", "images", "neighbour_agreement", "clear_cut")


def _pairs(layout: Layout, model_dir: str, label: str, repeats: int, race: str) -> dict:
    """``repeats`` pairs of first runs of ``layout``'s images, auto (``precision_race=race``)
    and fp32 alternating: their times, ratios and what auto kept."""
    from bench import cpu_seconds

    seconds: dict[str, list[float]] = {"auto": [], "fp32": []}
    cpu: dict[str, list[float]] = {"auto": [], "fp32": []}
    facts: dict[str, dict] = {}
    for i in range(2 * repeats):
        # fp32, auto, auto, fp32, ...: neither side always runs first after a pause, and the
        # last run is auto's, so that the later run after the pairs reads what a user's would
        precision = ("fp32", "auto")[(i + i // 2) % 2]
        shutil.rmtree(layout.data_dir / "embeddings", ignore_errors=True)
        print(f"[bench] first run: {label}, {precision}", flush=True)
        t0, c0 = time.perf_counter(), cpu_seconds()
        facts[precision] = embed(
            layout, model_dir, precision=precision, precision_race=race, progress=False
        )
        seconds[precision].append(time.perf_counter() - t0)
        cpu[precision].append(cpu_seconds() - c0)
        took = f"{seconds[precision][-1]:.1f} s, CPU {cpu[precision][-1]:.1f} s"
        print(f"[bench] ... {took}, {facts[precision]['precision']}", flush=True)
    ratios = [f / a for f, a in zip(seconds["fp32"], seconds["auto"], strict=True)]
    # CPU seconds (this process and its ended decoding workers): the work each run did,
    # which other tenants of a shared machine do not inflate as they do wall time
    cpu_ratios = [f / a for f, a in zip(cpu["fp32"], cpu["auto"], strict=True)]
    check = facts["auto"]["precision_check"] or {}
    return {
        "kit_first_over_fp32": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "cpu_first_over_fp32": round(statistics.median(cpu_ratios), 3),
        "cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "seconds_auto": [round(s, 1) for s in seconds["auto"]],
        "seconds_fp32": [round(s, 1) for s in seconds["fp32"]],
        "auto_kept": facts["auto"]["precision"],
        "reason": check.get("reason"),
        "speedups": check.get("speedups"),
        "checked_images": check.get("images"),
        # the check's cost, counted: images a candidate embedded beside float32 (0: auto did
        # float32's work exactly, and its ratio is 1.0 up to the machine's noise)
        "candidate_images": check.get("candidate_images", 0),
        "load_per_core": load_per_core(),
    }


def _batches(model_dir: str, count: int = 32) -> tuple[Encoder, list[torch.Tensor]]:
    """The float32 encoder and ``count`` batches of the sample's images at the kit's batch
    size, decoded as the kit decodes them."""
    net, processor, _ = load_model(model_dir)
    paths = sorted((ROOT / "data" / "sample").rglob("*.webp"))
    pixels = checked_pixels(processor, paths[0])
    encoder = Encoder(net, resolve_pooling(net), torch.device("cpu"), pixels, "fp32")
    batch = resolve_batch_size(None, torch.device("cpu"), net)
    pictures = [decode(p, pixels)[0] for p in paths[: batch * count]]
    stacked = [torch.stack(pictures[i : i + batch]) for i in range(0, len(pictures), batch)]
    return encoder, [b for b in stacked if len(b) == batch]


def _race(reference: Encoder, name: str, low, batches: list[torch.Tensor]) -> dict:
    race = PrecisionRace(reference, {name: low}, reference.device)
    with torch.inference_mode():
        for b in batches:
            race(b)
            if race.result:
                break
    result = race.result
    return {
        "kept": bool(race.lows),
        "speedup": result["speedups"][name],
        "low": result["speedup_low"][name],
        "batches": result["batches"],
        "load_per_core": result["load_per_core"],
        "remembered": remember_race(result),
    }


#: A busy process: spins on a core until its parent (the bench) is gone.
SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"


def race_under_load(
    models: dict[str, str], races: int = 20, busy: int = 2, control_races: int | None = None
) -> dict:
    """Per model and candidate: the race quiet, then ``races`` races beside ``busy`` spinning
    processes (``control_races`` for float32 as the candidate; see the module's docstring)."""
    rows = {}
    for name, model_dir in models.items():
        reference, batches = _batches(model_dir)
        lows = {}
        if "bf16" in offered(reference.device, reference.net):
            lows["bf16"] = Encoder(
                reference.net, reference.pooling, reference.device, reference.pixels, "bf16"
            )
        lows["fp32 as candidate (not faster)"] = reference
        for cand, low in lows.items():
            print(f"[bench] race under load: {name} {cand}", flush=True)
            quiet = _race(reference, cand, low, batches)
            print(f"[bench] ... quiet: {quiet}", flush=True)
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
            count = races if low is not reference or control_races is None else control_races
            try:
                loaded = []
                for _ in range(count):
                    loaded.append(_race(reference, cand, low, batches))
                    print(f"[bench] ... busy: {loaded[-1]}", flush=True)
            finally:
                for p in spinners:  # only the processes started here
                    p.kill()
                    p.wait()
            rows[f"{name}: {cand}"] = {
                "quiet_speedup": quiet["speedup"],
                "quiet_kept": quiet["kept"],
                "quiet_load_per_core": quiet["load_per_core"],
                "busy_processes": busy,
                "races": count,
                "kept": sum(r["kept"] for r in loaded),
                "remembered": sum(r["remembered"] for r in loaded),
                "median_speedup": round(float(np.median([r["speedup"] for r in loaded])), 3),
                "median_low": round(float(np.median([r["low"] for r in loaded])), 3),
                "median_batches": float(np.median([r["batches"] for r in loaded])),
                "load_per_core": [
                    min(r["load_per_core"] for r in loaded),
                    max(r["load_per_core"] for r in loaded),
                ],
            }
    return rows


def first_run_table(rows: dict) -> str:
    header = ["first run: model, images", "auto / fp32 speed (median)", "pairs",
              "CPU: fp32 / auto", "candidate forwards", "auto kept", "why", "later run keeps",
              "load/core"]  # fmt: skip
    return "\n".join(markdown_table(header, (
        [key, r["kit_first_over_fp32"], r["ratios"], r.get("cpu_first_over_fp32"),
         r.get("candidate_images", ""), r["auto_kept"], r["reason"],
         r.get("later_run_kept", ""), r["load_per_core"]]
        if "skipped" not in r else [key, "skipped", "", "", "", "", r["skipped"], "", ""]
        for key, r in rows.items()
    )))  # fmt: skip


def race_table(rows: dict) -> str:
    header = ["race: model: candidate", "quiet speed-up (load/core)", "busy processes",
              "candidate kept", "remembered", "median speed-up (low)", "batches",
              "load/core"]  # fmt: skip
    return "\n".join(markdown_table(header, (
        [key, f"{r['quiet_speedup']} ({r['quiet_load_per_core']})", r["busy_processes"],
         f"{r['kept']} / {r['races']}",
         r["remembered"], f"{r['median_speedup']} ({r['median_low']})", r["median_batches"],
         r["load_per_core"]]
        for key, r in rows.items()
    )))  # fmt: skip


def main() -> int:
    from bench import bench_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "reports" / "bench" / "first-run-work"))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "dinov2-s"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--races", type=int, default=20)
    parser.add_argument("--control-races", type=int, default=None)
    parser.add_argument("--skip", nargs="*", default=[], choices=["first", "race"])
    parser.add_argument("--memory", type=int, default=0, help="pairs after another dataset")
    args = parser.parse_args()
    work = Path(args.work)
    models = {k: d for k, (d, _) in bench_models(work / "models", args.models).items()}
    out = {}
    if "first" not in args.skip:
        out["first_runs"] = first_runs(work, models, args.sizes, args.repeats, args.memory)
        print(first_run_table(out["first_runs"]), flush=True)
    if "race" not in args.skip:
        out["race_under_load"] = race_under_load(
            models, args.races, control_races=args.control_races
        )
        print(race_table(out["race_under_load"]), flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
