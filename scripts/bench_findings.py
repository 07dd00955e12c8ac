"""`make bench` section `findings`: the kit's label-issue ranking against cleanlab's standard
recipe on the same vectors, with labels moved on purpose so the truth is known.

Sets: Fashion-MNIST's training split (Debian's ``dataset-fashion-mnist``, real 28x28 photos of
clothes, the first ``--findings-images`` of them) and the sample (360 emoji). Its test split is
kept apart for tuning (``--findings-tune``), so the numbers reported here were never tuned on.
Both are embedded by the kit itself (MobileNetV2, float32). For each rate (2/5/10%), each way
of moving labels (``uniform``: to a random other class; ``structured``: to the image's most
confused class, the other class a probe trained on the clean labels gives most probability) and
each seed, both methods score the same noisy labels:

- kit: :func:`embedscope.label_issues.label_issues` on the kit's neighbours;
- recipe: ``cross_val_predict(LogisticRegression(max_iter=2000), X, y,
  cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")`` on the
  L2-normalised vectors, ``get_label_quality_scores(method="self_confidence")`` and
  ``find_label_issues``.

Reported as mean and standard deviation over seeds: AUROC, average precision and precision at
n (n = moved images) of the ranking, and precision/recall against the moved labels of the
yes/no flags (``label_issue``, ``find_label_issues``).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from embedscope.embed import embed
from embedscope.ingest import ingest
from embedscope.knn import neighbors
from embedscope.label_issues import label_issues
from embedscope.layout import Layout
from embedscope.store import load_embeddings

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
)  # fmt: skip
RATES = (0.02, 0.05, 0.10)
MODES = ("uniform", "structured")


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dimensions, then uint8 data."""
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_folder(folder: Path, split: str, n: int) -> Path:
    """The first ``n`` images of a Fashion-MNIST split as PNGs in class folders."""
    if not FASHION.is_dir():
        raise SystemExit(
            f"{FASHION} is missing: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) for the findings section"
        )
    images = _idx(FASHION / f"{split}-images-idx3-ubyte.gz")[:n]
    labels = _idx(FASHION / f"{split}-labels-idx1-ubyte.gz")[:n]
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        dest = folder / FASHION_CLASSES[label] / f"{split}-{i:05d}.png"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(dest)
    return folder


def vectors_of(source: Path | str, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The kit's own float32 MobileNetV2 vectors of a folder and their labels (cached by the
    kit in ``layout``'s data folder, so a second bench run embeds nothing)."""
    ingest(str(source), layout)
    embed(layout, "mobilenet_v2", precision="fp32", progress=False)
    emb = load_embeddings(layout, "mobilenet_v2")
    return emb.vectors, emb.rows["label"].to_numpy(dtype=object)


def recipe(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's standard recipe, exactly as pinned: (mislabel score, flags)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(
        LogisticRegression(max_iter=2000), x, y, cv=cv, method="predict_proba"
    )
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    return 1.0 - quality, find_label_issues(y, probs)


def most_confused(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per image, the other class a probe trained on the clean labels finds most likely."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(5, shuffle=True, random_state=12345)
    probs = cross_val_predict(
        LogisticRegression(max_iter=2000), x, codes, cv=cv, method="predict_proba"
    )
    probs[np.arange(len(codes)), codes] = -1.0
    return probs.argmax(axis=1)


def move_labels(
    codes: np.ndarray, rate: float, mode: str, confused: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy codes and the mask of moved images: ``rate`` of the images, chosen at random,
    moved to a random other class (uniform) or to their most confused class (structured)."""
    rng = np.random.default_rng(seed)
    n, k = len(codes), int(codes.max()) + 1
    moved = np.zeros(n, bool)
    moved[rng.choice(n, int(round(rate * n)), replace=False)] = True
    noisy = codes.copy()
    if mode == "uniform":
        shift = rng.integers(1, k, n)
        noisy[moved] = (codes[moved] + shift[moved]) % k
    else:
        noisy[moved] = confused[moved]
    return noisy, moved


def ranking_scores(score: np.ndarray, moved: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    n = int(moved.sum())
    top = np.argsort(-score, kind="stable")[:n]
    return {
        "auroc": float(roc_auc_score(moved, score)),
        "ap": float(average_precision_score(moved, score)),
        "precision_at_n": float(moved[top].mean()),
    }


def flag_scores(flags: np.ndarray, moved: np.ndarray) -> dict:
    hits = int((flags & moved).sum())
    return {
        "flagged": int(flags.sum()),
        "flag_precision": hits / max(int(flags.sum()), 1),
        "flag_recall": hits / max(int(moved.sum()), 1),
    }


def compare(x: np.ndarray, labels: np.ndarray, seeds: int, *, k: int = 10) -> dict:
    """Both methods at every rate and mode over ``seeds`` seeds: mean and spread."""
    classes, codes = np.unique(labels.astype(str), return_inverse=True)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    idx, sim = neighbors(x, k)  # neighbours depend on the vectors, not on the labels
    confused = most_confused(xn, codes)
    out: dict = {"images": len(x), "classes": len(classes)}
    for mode in MODES:
        for rate in RATES:
            runs: dict[str, list[dict]] = {"kit": [], "recipe": []}
            seconds = {"kit": 0.0, "recipe": 0.0}
            for seed in range(seeds):
                noisy, moved = move_labels(codes, rate, mode, confused, seed)
                t0 = time.perf_counter()
                found = label_issues(x, classes[noisy], idx, sim, seed=seed).table
                seconds["kit"] += time.perf_counter() - t0
                kit_score = found["mislabel_score"].to_numpy()
                kit_flags = found["label_issue"].to_numpy()
                t0 = time.perf_counter()
                rec_score, rec_flags = recipe(xn, noisy, seed)
                seconds["recipe"] += time.perf_counter() - t0
                runs["kit"].append(ranking_scores(kit_score, moved) | flag_scores(kit_flags, moved))
                runs["recipe"].append(
                    ranking_scores(rec_score, moved) | flag_scores(rec_flags, moved)
                )
            row = {
                name: {
                    key: [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)]
                    for key, v in _columns(r).items()
                }
                | {"seconds": round(seconds[name] / seeds, 2)}
                for name, r in runs.items()
            }
            row["moved"] = int(round(rate * len(x)))
            out[f"{mode} {int(rate * 100)}%"] = row
    return out


def _columns(runs: list[dict]) -> dict[str, list[float]]:
    return {key: [r[key] for r in runs] for key in runs[0]}


def cost(n: int, dim: int, classes: int, seed: int = 0) -> dict:
    """Seconds of :func:`label_issues` (neighbours included) on ``n`` x ``dim`` vectors with
    ``classes`` classes: clustered Gaussian vectors, 5% of their labels moved."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    x = centres[codes] + 2.0 * rng.normal(size=(n, dim)).astype(np.float32)
    noisy = codes.copy()
    moved = rng.random(n) < 0.05
    noisy[moved] = rng.integers(0, classes, int(moved.sum()))
    t0 = time.perf_counter()
    idx, sim = neighbors(x, 10)
    t1 = time.perf_counter()
    label_issues(x, noisy.astype(str), idx, sim)
    t2 = time.perf_counter()
    return {
        "images": n,
        "dim": dim,
        "classes": classes,
        "seconds_neighbours": round(t1 - t0, 1),
        "seconds_label_issues": round(t2 - t1, 1),
    }


def findings_bench(work: Path, *, images: int, seeds: int, tune: bool = False) -> dict:
    """The findings section: ``work`` keeps the image folders and the kit's caches."""
    results: dict = {}
    split = "t10k" if tune else "train"
    fashion = fashion_folder(work / f"fashion-{split}-{images}", split, images)
    x, y = vectors_of(fashion, Layout(f"fashion-{split}-{images}", work / "data", work / "rep"))
    print(f"[bench] findings: fashion-mnist {split} ({len(x)} images)", flush=True)
    results[f"fashion-mnist {split}"] = compare(x, y, seeds)
    if not tune:
        x, y = vectors_of("sample", Layout("sample", work / "data", work / "rep"))
        print(f"[bench] findings: sample ({len(x)} images)", flush=True)
        results["sample"] = compare(x, y, seeds)
    return results


def findings_table(results: dict) -> str:
    lines = []
    for name, sets in results.items():
        if name in ("quality", "cost"):
            continue
        lines += [
            f"| findings: {name} ({sets['images']} images, {sets['classes']} classes) | moved "
            "| kit AP | recipe AP | kit P@n | recipe P@n | kit AUROC | recipe AUROC "
            "| kit flags P/R | recipe flags P/R | kit s | recipe s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for case, row in sets.items():
            if not isinstance(row, dict):
                continue
            k, r = row["kit"], row["recipe"]
            lines.append(
                f"| {case} | {row['moved']} | {_ms(k['ap'])} | {_ms(r['ap'])} "
                f"| {_ms(k['precision_at_n'])} | {_ms(r['precision_at_n'])} "
                f"| {_ms(k['auroc'])} | {_ms(r['auroc'])} "
                f"| {k['flag_precision'][0]:.2f}/{k['flag_recall'][0]:.2f} "
                f"| {r['flag_precision'][0]:.2f}/{r['flag_recall'][0]:.2f} "
                f"| {k['seconds']} | {r['seconds']} |"
            )
        lines.append("")
    if "quality" in results:
        q = results["quality"]
        lines += [
            f"| findings: image quality ({q['images']} images) | degraded | precision | recall "
            "| cleanvision recall | agreement with cleanvision |",
            "|---|---|---|---|---|---|",
        ]
        for issue, r in q["per_type"].items():
            lines.append(
                f"| {issue} | {r.get('degraded', '-')} | {r.get('precision', '-')} "
                f"| {r.get('recall', '-')} | {r.get('cleanvision_recall', '-')} "
                f"| {r['agreement_with_cleanvision']} |"
            )
        lines += ["", "| quality statistics cost | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in q["cost"].items()]
        lines.append("")
    if results.get("cost"):
        lines += [
            "| label_issues cost: images | dim | classes | neighbours s | label issues s |",
            "|---|---|---|---|---|",
        ]
        for r in results["cost"]:
            lines.append(
                f"| {r['images']} | {r['dim']} | {r['classes']} | {r['seconds_neighbours']} "
                f"| {r['seconds_label_issues']} |"
            )
    return "\n".join(lines) + "\n"


def _ms(pair: list[float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


DEGRADATIONS = {
    # what was done -> the quality type that should flag it
    "blurred": ("blurry", lambda im: im.filter(ImageFilter.GaussianBlur(max(im.size) / 25))),
    "darkened": ("dark", lambda im: ImageEnhance.Brightness(im).enhance(0.15)),
    "brightened": ("light", lambda im: Image.blend(im, Image.new("RGB", im.size, "white"), 0.9)),
    "flattened": ("low_information", lambda im: ImageEnhance.Contrast(im).enhance(0.01)),
    "greyed": ("grayscale", lambda im: im.convert("L")),
}


def degraded_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` real photos (crops of scikit-learn's two sample photos, 320-480 pixels wide) in
    ``original/`` and a degraded copy of each in one folder per :data:`DEGRADATIONS`."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for i in range(n):
        photo = photos[i % 2]
        w = int(rng.integers(320, 481))
        h = int(w * rng.uniform(0.6, 0.9))
        y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        im = Image.fromarray(photo[y : y + h, x : x + w])
        (folder / "original").mkdir(parents=True, exist_ok=True)
        im.save(folder / "original" / f"photo{i:03d}.jpg", quality=92)
        for kind, (_, change) in DEGRADATIONS.items():
            (folder / kind).mkdir(exist_ok=True)
            change(im).save(folder / kind / f"photo{i:03d}.png")
    return folder


def quality_bench(work: Path, n: int = 40) -> dict:
    """Per quality type: precision and recall of the kit's flags against the degraded copies,
    agreement with cleanvision 0.3.7's flags on the same files, and the statistics' cost as a
    share of embedding time."""
    from cleanvision import Imagelab

    from embedscope.quality import quality_findings

    folder = degraded_folder(work / "degraded", n)
    layout = Layout("degraded", work / "data", work / "rep")
    manifest = ingest(str(folder), layout).reset_index(drop=True)
    ours = quality_findings(manifest)
    lab = Imagelab(data_path=str(folder))
    lab.find_issues(verbose=False)
    theirs = lab.issues.copy()
    theirs.index = [str(Path(p).relative_to(folder)) for p in theirs.index]
    theirs = theirs.reindex(manifest["path"]).reset_index(drop=True)
    kind = manifest["label"]
    out: dict = {"images": len(manifest), "per_type": {}}
    for done, (issue, _) in DEGRADATIONS.items():
        flagged, truth = ours[issue].to_numpy(), (kind == done).to_numpy()
        cv = theirs[f"is_{issue}_issue"].fillna(False).to_numpy(bool)
        out["per_type"][issue] = {
            "degraded": int(truth.sum()),
            "precision": round(float((flagged & truth).sum() / max(flagged.sum(), 1)), 3),
            "recall": round(float((flagged & truth).sum() / truth.sum()), 3),
            "cleanvision_recall": round(float((cv & truth).sum() / truth.sum()), 3),
            "agreement_with_cleanvision": round(float((flagged == cv).mean()), 3),
        }
    for issue in ("odd_aspect_ratio", "odd_size", "near_duplicate"):
        column = "is_near_duplicates_issue" if issue == "near_duplicate" else f"is_{issue}_issue"
        cv = theirs[column]
        out["per_type"][issue] = {
            "flagged": int(ours[issue].sum()),
            "agreement_with_cleanvision": round(
                float((ours[issue].to_numpy() == cv.fillna(False).to_numpy(bool)).mean()), 3
            ),
        }
    out["cost"] = stats_cost(work) | embedding_share(folder, manifest, layout)
    return out


def embedding_share(folder: Path, manifest, layout: Layout) -> dict:
    """The statistics' time on these images (decoding excluded: ingest decodes them anyway)
    as a share of the kit's time to embed them."""
    from embedscope.images import decode
    from embedscope.quality import image_stats

    seconds = 0.0
    for rel in manifest["path"]:
        im, _ = decode(folder / rel, draft=(256, 256))
        t0 = time.perf_counter()
        image_stats(im)
        seconds += time.perf_counter() - t0
    facts = embed(layout, "mobilenet_v2", precision="fp32", progress=False)
    return {
        "stats_seconds": round(seconds, 2),
        "embed_seconds": facts["seconds_embed"],
        "stats_share_of_embedding": round(seconds / facts["seconds_embed"], 3),
    }


def stats_cost(work: Path) -> dict:
    """Milliseconds of :func:`image_stats` per image on what ingest decodes (a sample emoji and a
    12-megapixel JPEG at its draft size) against the kit's embedding milliseconds per image."""
    from embedscope.images import decode
    from embedscope.quality import image_stats

    photo = work / "camera.jpg"
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC).save(photo, quality=90)
    emoji = sorted(Path("data/sample").rglob("*.webp"))[0]
    out = {}
    for name, path in (("emoji 256px", emoji), ("photo 12 MP", photo)):
        t0 = time.perf_counter()
        im, _ = decode(path, draft=(256, 256))
        decode_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        for _ in range(20):
            image_stats(im)
        out[name] = {
            "decode_ms": round(decode_ms, 2),
            "stats_ms": round((time.perf_counter() - t0) * 50, 2),
        }
    return out
