"""`make bench` section `quality`: the image-quality flags against real degradations.

Images (disjoint between calibration and report):

- photos: crops of scikit-learn's two sample photos, 200-300 pixels wide; calibration crops
  from the left half of each photo, reported crops from the right half;
- clip art: the sample's emoji (3D renders on white); calibration the even files, reported the
  odd ones;
- artwork (reported only, when installed): Debian's ``ukui-wallpapers`` under
  ``/usr/share/backgrounds`` (smooth digital art at 1280 pixels wide; no photo wallpapers were
  installable here).

Each image gets one copy per strength of a fixed grid (:data:`GRID`, strengths relative to the
image so that they look the same at review size), saved as PNG, and two distractors (JPEG at
quality 20, Gaussian noise of 8 and 16 grey levels) that no type should flag. The reported
folder is ingested by the kit (the statistics come from ingest's own decoding pass) and scored
with the calibrated thresholds and with ``quality_thresholds="cleanvision"``, which is compared
flag for flag with cleanvision 0.3.7 run on the same files. ``--calibrate`` (or
:func:`calibrate`) derives the thresholds from the calibration images alone, by the rule in
:data:`embedscope.quality.CALIBRATED`.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from embedscope.images import to_rgb
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.quality import (
    CALIBRATED,
    calibrated_scores,
    image_stats,
    quality_findings,
)

ROOT = Path(__file__).resolve().parents[1]
WALLPAPERS = Path("/usr/share/backgrounds")
TYPES = ("blurry", "dark", "light", "low_information", "grayscale")
Change = Callable[[Image.Image], Image.Image]


def _stops(s: float) -> Change:
    """Exposure in stops, applied in linear light (sRGB taken as gamma 2.2), clipped."""

    def change(im: Image.Image) -> Image.Image:
        linear = (np.asarray(im, np.float32) / 255) ** 2.2 * 2.0**s
        return Image.fromarray((np.clip(linear, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8))

    return change


def _blur(fraction: float) -> Change:
    return lambda im: im.filter(ImageFilter.GaussianBlur(fraction * max(im.size)))


def _washed(share: float) -> Change:
    return lambda im: Image.blend(im, Image.new("RGB", im.size, "white"), share)


def _contrast(factor: float) -> Change:
    return lambda im: ImageEnhance.Contrast(im).enhance(factor)


def _saturation(factor: float) -> Change:
    return lambda im: ImageEnhance.Color(im).enhance(factor)


def _jpeg(quality: int) -> Change:
    def change(im: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return change


def _noise(sigma: float) -> Change:
    def change(im: Image.Image) -> Image.Image:
        rng = np.random.default_rng(int(sigma))
        a = np.asarray(im, np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    return change


#: type -> strength -> what is done. Blur radius is a share of the longest side (0.5% is 1.3
#: pixels on a 256-pixel review thumbnail); exposure is in stops of linear light; washed is the
#: share of a blend toward white; contrast and saturation are PIL's enhance factors.
#: ``exposure +N`` rows are reported for light but are outside its definition (see docs).
GRID: dict[str, dict[str, Change]] = {
    "blurry": {f"blur {f:.1%}": _blur(f) for f in (0.005, 0.01, 0.02)},
    "dark": {f"exposure {s} stops": _stops(s) for s in (-2, -3, -4)},
    "light": {
        **{f"washed {a:.0%}": _washed(a) for a in (0.5, 0.7, 0.9)},
        **{f"exposure +{s} stops": _stops(s) for s in (2, 3)},
    },
    "low_information": {f"contrast {c:.0%}": _contrast(c) for c in (0.2, 0.1, 0.05)},
    "grayscale": {f"saturation {s:.0%}": _saturation(s) for s in (0.1, 0.05, 0.0)},
}
#: Strengths outside a type's definition: reported, neither calibrated on nor in its target.
OUTSIDE = {"exposure +2 stops", "exposure +3 stops"}
DISTRACTORS: dict[str, Change] = {
    "jpeg q20": _jpeg(20),
    "noise 8": _noise(8),
    "noise 16": _noise(16),
}


def sources(part: str, photos: int = 40, emoji: int = 60) -> dict[str, list[Image.Image]]:
    """The images of ``part`` ("calibration" or "report"): no pixel of one is in the other."""
    from sklearn.datasets import load_sample_images

    right = part == "report"
    rng = np.random.default_rng(1 if right else 0)
    crops = []
    for i in range(photos):
        photo = load_sample_images().images[i % 2]
        height, width = photo.shape[:2]
        start = width // 2 if right else 0
        w = int(rng.integers(200, 301))
        h = int(w * rng.uniform(0.6, 1.0))
        x = start + int(rng.integers(0, width // 2 - w))
        y = int(rng.integers(0, height - h))
        crops.append(Image.fromarray(photo[y : y + h, x : x + w]))
    files = sorted((ROOT / "data" / "sample").rglob("*.webp"))[int(right) :: 2][:emoji]
    out = {"photo": crops, "clip art": [to_rgb(Image.open(f)) for f in files]}
    if right and WALLPAPERS.is_dir():
        walls = sorted(p for p in WALLPAPERS.iterdir() if p.suffix in (".jpg", ".png"))
        out["artwork"] = [_wide(Image.open(p).convert("RGB"), 1280) for p in walls]
    return out


def _wide(im: Image.Image, width: int) -> Image.Image:
    return im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)


def variants() -> list[tuple[str, str, str, Change]]:
    """(folder, type or "", strength, change) of every copy, originals first."""
    out = [("original", "", "original", lambda im: im)]
    out += [(f"d{i}", "", name, change) for i, (name, change) in enumerate(DISTRACTORS.items())]
    for issue, grid in GRID.items():
        out += [(f"{issue}-{i}", issue, name, c) for i, (name, c) in enumerate(grid.items())]
    return out


def degraded_folder(folder: Path, part: str) -> pd.DataFrame:
    """Every copy of ``part``'s images as PNG in ``folder/<variant>/``; one row per file."""
    rows = []
    for source, images in sources(part).items():
        for i, im in enumerate(images):
            for slug, issue, strength, change in variants():
                rel = f"{slug}/{source.replace(' ', '-')}-{i:03d}.png"
                dest = folder / rel
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    change(im).save(dest)
                rows.append({"path": rel, "source": source, "type": issue, "strength": strength})
    return pd.DataFrame(rows)


def calibrate(work: Path) -> dict[str, float]:
    """Thresholds from the calibration images alone: per type, halfway between the 97th
    percentile of the originals and distractors and the 5th percentile of the degraded copies
    (outside strengths left out) where the two do not overlap, else that 97th percentile."""
    files = degraded_folder(work / "calibration", "calibration")
    stats = pd.DataFrame(
        [image_stats(Image.open(work / "calibration" / rel)) for rel in files["path"]]
    )
    scores = calibrated_scores(stats)
    clean = (files["type"] == "").to_numpy()
    out = {}
    for issue in TYPES:
        score = scores[issue].to_numpy(float)
        hit = ((files["type"] == issue) & ~files["strength"].isin(OUTSIDE)).to_numpy()
        low = float(np.nanquantile(score[clean], 0.97))
        high = float(np.nanquantile(score[hit], 0.05))
        out[issue] = round((low + high) / 2 if high > low else low, 3)
    return out


def quality_bench(work: Path) -> dict:
    """Recall per type, strength and source; false flags on originals and distractors; the
    cleanvision mode's agreement with cleanvision 0.3.7; the statistics' cost."""
    from cleanvision import Imagelab

    folder = work / "quality-report"
    files = degraded_folder(folder, "report")
    layout = Layout("quality-report", work / "data", work / "rep")
    shutil.rmtree(layout.data_dir, ignore_errors=True)  # a fresh ingest: its time is reported
    t0 = time.perf_counter()
    manifest = ingest(str(folder), layout).set_index("path").reindex(files["path"])
    ingest_seconds = time.perf_counter() - t0
    stats = manifest.reset_index()
    ours = quality_findings(stats)
    # the cleanvision mode's own ingest: full-size decodes, cleanvision's statistics
    layout = Layout("quality-report-cleanvision", work / "data", work / "rep")
    shutil.rmtree(layout.data_dir, ignore_errors=True)
    t0 = time.perf_counter()
    full = ingest(str(folder), layout, quality_thresholds="cleanvision")
    cleanvision_seconds = time.perf_counter() - t0
    strict = quality_findings(
        full.set_index("path").reindex(files["path"]).reset_index(), "cleanvision"
    )
    lab = Imagelab(data_path=str(folder))
    lab.find_issues(issue_types={t: {} for t in TYPES}, verbose=False)
    theirs = lab.issues.copy()
    theirs.index = [str(Path(p).relative_to(folder)) for p in theirs.index]
    theirs = theirs.reindex(files["path"]).reset_index(drop=True)
    out: dict = {
        "images": len(files),
        "calibrated": dict(CALIBRATED),
        "recalibrated": calibrate(work),
        "per_type": {},
    }
    clean = files["type"] == ""
    for issue in TYPES:
        flags, cv_mode = ours[issue].to_numpy(bool), strict[issue].to_numpy(bool)
        cv = theirs[f"is_{issue}_issue"].fillna(False).to_numpy(bool)
        row: dict = {"agreement_with_cleanvision": round(float((cv_mode == cv).mean()), 4)}
        for source in files["source"].unique():
            mine = (files["source"] == source).to_numpy()
            for strength in GRID[issue]:
                at = mine & (files["strength"] == strength).to_numpy()
                row.setdefault(strength, {})[source] = {
                    "recall": round(float(flags[at].mean()), 3),
                    "cleanvision": round(float(cv[at].mean()), 3),
                }
            at = mine & (files["strength"] == "original").to_numpy()
            row.setdefault("false flags: originals", {})[source] = {
                "recall": round(float(flags[at].mean()), 3),
                "cleanvision": round(float(cv[at].mean()), 3),
            }
            at = mine & clean.to_numpy() & (files["strength"] != "original").to_numpy()
            row.setdefault("false flags: JPEG, noise", {})[source] = {
                "recall": round(float(flags[at].mean()), 3),
                "cleanvision": round(float(cv[at].mean()), 3),
            }
        out["per_type"][issue] = row
    out["cost"] = {
        "ingest_seconds": round(ingest_seconds, 2),
        "ingest_ms_per_image": round(1000 * ingest_seconds / len(files), 2),
        "ingest_ms_per_image (cleanvision mode)": round(1000 * cleanvision_seconds / len(files), 2),
    } | stats_vs_embedding(work)
    return out


def _stats_seconds(paths: list[Path]) -> float:
    """Seconds of :func:`image_stats` over ``paths``, each decoded first (untimed) as ingest
    decodes it."""
    from embedscope.images import decode

    seconds = 0.0
    for path in paths:
        im, _ = decode(path, draft=(256, 256))
        t0 = time.perf_counter()
        image_stats(im)
        seconds += time.perf_counter() - t0
    return seconds


def stats_vs_embedding(work: Path, rounds: int = 5) -> dict:
    """The statistics' time against the kit's MobileNetV2 embedding of the same images (the
    reported originals), float32 and bfloat16, taken in turns (``rounds`` times each, so that a
    busy machine slows all alike). The statistics are taken as ingest takes them: in one process
    per core, each image decoded first (ingest decodes anyway; untimed), the copy they share
    with the thumbnail cell counted in; their wall time is the slowest process's sum. Medians of
    the rounds, and the ratios."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from embedscope.embed import embed

    folder = work / "quality-report"
    files = degraded_folder(folder, "report")
    originals = files[files["strength"] == "original"]["path"].tolist()
    images = work / "cost-originals"  # apart: the report folder is ingested whole
    for rel in originals:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (images / rel).exists():
            shutil.copy(folder / rel, images / rel)
    workers = os.cpu_count() or 1
    shares = [[images / rel for rel in originals[w::workers]] for w in range(workers)]
    times: dict[str, list[float]] = {"stats": [], "stats_cpu": [], "fp32": [], "bf16": []}
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_stats_seconds, [s[:2] for s in shares]))  # imports and warm-up, untimed
        for r in range(rounds):
            seconds = list(pool.map(_stats_seconds, shares))
            times["stats"].append(max(seconds))
            times["stats_cpu"].append(sum(seconds))
            for precision in ("fp32", "bf16"):
                layout = Layout(
                    f"cost-{precision}-{r}", work / "cost" / "data", work / "cost" / "rep"
                )
                shutil.rmtree(layout.data_dir, ignore_errors=True)  # embedded afresh every round
                ingest(str(images), layout)
                facts = embed(layout, "mobilenet_v2", precision=precision, progress=False)
                times[precision].append(facts["seconds_embed"])
    median = {k: float(np.median(v)) for k, v in times.items()}
    n = len(originals)
    return {
        "images": n,
        "rounds": rounds,
        "workers": workers,
        "stats_cpu_ms_per_image": round(1000 * median["stats_cpu"] / n, 2),
        "stats_wall_ms_per_image": round(1000 * median["stats"] / n, 2),
        "embed_fp32_ms_per_image": round(1000 * median["fp32"] / n, 2),
        "embed_bf16_ms_per_image": round(1000 * median["bf16"] / n, 2),
        "stats_share_of_fp32": round(median["stats"] / median["fp32"], 3),
        "stats_share_of_bf16": round(median["stats"] / median["bf16"], 3),
    }


def quality_table(q: dict) -> str:
    """Markdown: per type, recall per strength (calibrated / cleanvision) for each source."""
    sources = list(next(iter(q["per_type"].values()))["false flags: originals"])
    lines = [
        f"| quality ({q['images']} images): type | strength | "
        + " | ".join(f"{s} recall (cleanvision)" for s in sources)
        + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for issue, row in q["per_type"].items():
        for strength, per in row.items():
            if not isinstance(per, dict):
                continue
            cells = [f"{per[s]['recall']:.2f} ({per[s]['cleanvision']:.2f})" for s in sources]
            lines.append(f"| {issue} | {strength} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| type | threshold | recalibrated | agreement with cleanvision |",
        "|---|---|---|---|",
    ]
    for issue, row in q["per_type"].items():
        lines.append(
            f"| {issue} | {q['calibrated'][issue]} | {q['recalibrated'][issue]} "
            f"| {row['agreement_with_cleanvision']} |"
        )
    lines += ["", "| quality cost | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in q["cost"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="reports/bench/quality-work")
    parser.add_argument("--calibrate", action="store_true", help="only derive the thresholds")
    parser.add_argument(
        "--cost", action="store_true", help="only the statistics' time against embedding's"
    )
    args = parser.parse_args()
    work = Path(args.work).resolve()
    if args.cost:
        print(json.dumps(stats_vs_embedding(work), indent=1))
    elif args.calibrate:
        print(json.dumps({"derived": calibrate(work), "shipped": CALIBRATED}, indent=1))
    else:
        result = quality_bench(work)
        print(quality_table(result))
