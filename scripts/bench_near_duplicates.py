"""Near duplicates in `make bench` section ``leaks``: copies planted within one split, grouped?

The same sources as the leak rows (``bench_leaks``: the sample's emoji, Fashion-MNIST, each
de-duplicated), only their *report* halves (the threshold is the leak search's, calibrated on
the other halves). Each set is split 80/20 into train/ and test/; copies of every kind and
strength (``bench_leaks.VARIANTS``, crops centred and off-centre) go into the split of their
source, beside it. Reported per kind: recall (the copy in its source's near-duplicate group),
false pairs (two images grouped together that are not copies of one image) per 1,000 images,
and what the search cost: the kit (:func:`embedscope.findings.leaks.dataset_leaks`) beside
the findings' groups before it (one 64-bit perceptual hash, cleanvision's definition).

Run alone: ``scripts/bench.py --only leaks`` (or ``python scripts/bench_near_duplicates.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_leaks import plant_copies, source_halves  # noqa: E402

from embedscope.embed import embed  # noqa: E402
from embedscope.findings.leaks import dataset_leaks  # noqa: E402
from embedscope.ingest import ingest  # noqa: E402
from embedscope.layout import Layout  # noqa: E402
from embedscope.quality import near_duplicate_groups  # noqa: E402
from embedscope.store import load_embeddings  # noqa: E402

#: Per source: copies per kind and strength, and at most how many report-half images are used.
PLANTED = {"emoji": (6, None), "fashion-mnist": (6, 2000)}


def build_within(pool: list[tuple[str, Image.Image]], folder: Path, copies_per: int) -> dict:
    """train/ and test/ (80/20) from ``pool``, and copies of images of both splits planted in
    their source's own split and class; returns copy path -> (kind, strength, source path)."""
    rng = np.random.default_rng(3)
    if folder.exists():
        shutil.rmtree(folder)
    held = set(rng.permutation(len(pool))[: len(pool) // 5].tolist())
    sources = []
    for i, (label, im) in enumerate(pool):
        rel = f"{'test' if i in held else 'train'}/{label}/{i:05d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(folder / rel)
        sources.append((rel, im))
    return plant_copies(folder, sources, lambda rel: rel.rsplit("/", 1)[0], rng, copies_per)


def score_groups(paths: list[str], groups: np.ndarray, truth: dict) -> dict:
    """Recall per kind and strength (the copy grouped with its own source) and false pairs:
    pairs of one group that are not copies of one image (nor of each other)."""
    family = {p: truth[p][2] if p in truth else p for p in paths}
    group = dict(zip(paths, groups.tolist(), strict=True))
    rows = [
        {"kind": k, "strength": s, "found": group[p] >= 0 and group[p] == group[src]}
        for p, (k, s, src) in truth.items()
    ]
    table = pd.DataFrame(rows)
    members: dict[int, list[str]] = {}
    for p, g in group.items():
        if g >= 0:
            members.setdefault(g, []).append(p)
    false = sum(
        family[a] != family[b] for ms in members.values() for a, b in itertools.combinations(ms, 2)
    )
    return {
        "recall": {k: round(float(g["found"].mean()), 3) for k, g in table.groupby("kind")},
        "recall_by_strength": {
            f"{k} {s}": round(float(g["found"].mean()), 3)
            for (k, s), g in table.groupby(["kind", "strength"])
        },
        "recall_all": round(float(table["found"].mean()), 3),
        "false_pairs": int(false),
        "false_pairs_per_1000": round(1000 * false / max(len(paths), 1), 2),
        "images": len(paths),
        "copies": len(truth),
        "groups": len(members),
    }


def kit_groups(folder: Path, work: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """Ingest, MobileNetV2 vectors and :func:`dataset_leaks` on ``folder``: the paths, the
    kit's groups, the perceptual-hash groups (the findings before), and the search's cost."""
    layout = Layout(folder.name, work / "data", work / "reports")
    manifest = ingest(str(folder), layout)
    embed(layout, "mobilenet_v2", precision="fp32", progress=False)
    emb = load_embeddings(layout, "mobilenet_v2")
    t0 = time.perf_counter()
    found = dataset_leaks(folder, emb.rows, emb.vectors, manifest)
    cost = found.attrs["search"] | {"seconds": round(time.perf_counter() - t0, 1)}
    facts = manifest.set_index("path").reindex(emb.rows["path"])
    hashed = near_duplicate_groups(pd.to_numeric(facts["phash"], errors="coerce"))
    paths = emb.rows["path"].astype(str).tolist()
    return paths, found["near_duplicate_group"].to_numpy(), np.asarray(hashed), cost


def near_duplicates_bench(
    work: Path, *, fashion_images: int = 14000, only: tuple[str, ...] = ()
) -> dict:
    """The near-duplicate rows of the ``leaks`` section: per source's report half, the kit's
    groups beside the perceptual-hash groups, with the search's cost and the load. ``only``:
    these sources alone (default all)."""
    out: dict = {}
    for name, source in source_halves(work, fashion_images).items():
        if only and name not in only:
            continue
        pool, report = source["pool"], source["report"]  # bench_leaks' halves, de-duplicated
        copies_per, cap = PLANTED[name]
        take = report[:cap] if cap else report
        folder = work / "sets" / f"{name}-within"
        truth = build_within([pool[i] for i in take], folder, copies_per)
        print(f"[bench] near duplicates: {folder.name}: {len(truth)} copies", flush=True)
        load = round(os.getloadavg()[0], 2)
        paths, kit, hashed, cost = kit_groups(folder, work)
        out[name] = {
            "kit": score_groups(paths, kit, truth),
            "same_phash": score_groups(paths, hashed, truth),
            "cost": cost,
            "load_1min": [load, round(os.getloadavg()[0], 2)],
        }
        print(f"[bench] near duplicates: {name}: {out[name]['kit']['recall']} {cost}", flush=True)
    return out


def near_duplicates_table(results: dict) -> str:
    """The rows as markdown: per set, recall per kind and strength and false pairs per 1,000
    images, the kit beside the findings' groups before it (one perceptual hash)."""
    lines = []
    for name, r in results.items():
        c = r["cost"]
        lines += [
            "",
            f"**near duplicates within one split, {name}** ({r['kit']['images']} images, "
            f"{r['kit']['copies']} copies planted beside their source; search "
            f"{c['near_duplicate_search_seconds']} s for {c['near_duplicate_images_searched']} "
            f"images, load {r['load_1min'][0]}-{r['load_1min'][1]} on "
            f"{os.cpu_count()} cores)",
            "",
            "| kind | strength | kit | same pHash (before) |",
            "|---|---|---|---|",
        ]
        for key in r["kit"]["recall_by_strength"]:
            kind, strength = key.rsplit(" ", 1) if key != "exact None" else ("exact", "")
            if kind == "mirrored jpeg":
                kind, strength = "mirrored", "jpeg 50"
            cells = [f"{r[t]['recall_by_strength'][key]:.2f}" for t in ("kit", "same_phash")]
            lines.append(f"| {kind} | {strength} | " + " | ".join(cells) + " |")
        cells = [
            f"{r[t]['false_pairs_per_1000']} ({r[t]['false_pairs']})" for t in ("kit", "same_phash")
        ]
        lines.append("| false pairs / 1,000 images (count) | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = near_duplicates_bench(ROOT / "reports" / "bench" / "leaks-work")
    (ROOT / "reports" / "bench" / "near_duplicates.json").write_text(json.dumps(res, indent=1))
    print(near_duplicates_table(res))
