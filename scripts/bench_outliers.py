"""`make bench` section `outliers`: the kit's ``outlier_score`` and ``outlier`` flag against
cleanlab's ``OutOfDistribution`` (features) on the same vectors, where the outliers are known.

Two sources of real images, each embedded once by the kit (MobileNetV2, float32):

- the sample (360 emoji in 9 classes), with foreign images from a pool of photo crops
  (scikit-learn's sample photos) and Fashion-MNIST test images;
- Fashion-MNIST's first ``--outlier-images`` training images (10 classes), with foreign images
  from a pool of emoji and photo crops.

Settings, per seed (>= 5):

- far: ``foreign`` images of the pool slipped into random classes;
- near: one class (chosen by the seed) held out: ``foreign`` of its images spread over the
  other classes, the rest of it left out.

Both scores rank the same set: AUROC and average precision against the slipped-in images, mean
and standard deviation over seeds, and precision/recall of the ``outlier`` flag (the far-out
fence, :data:`embedscope.findings.outliers.FENCE`). Beside them, the class-aware scores of the
same images filed under random classes (far) or spread over the other classes (near): the kit's
:func:`~embedscope.findings.outliers.class_outlier_score` against cleanlab's
``OutOfDistribution`` on the probe's out-of-fold probabilities with those labels, and "either"
(the larger rank of the plain and the class-aware score).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from bench_findings import FASHION, _idx, fashion_folder, vectors_of
from bench_markdown import markdown_table
from PIL import Image

from embedscope.findings.outliers import class_outlier_score, outlier_flags
from embedscope.knn import neighbors
from embedscope.layout import Layout

ROOT = Path(__file__).resolve().parents[1]


def _photo_crops(folder: Path, n: int) -> None:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(7)
    for i in range(n):
        photo = load_sample_images().images[i % 2]
        w = int(rng.integers(120, 240))
        y, x = rng.integers(0, photo.shape[0] - w), rng.integers(0, photo.shape[1] - w)
        Image.fromarray(photo[y : y + w, x : x + w]).save(folder / f"photo-{i:03d}.png")


def with_pool(work: Path, base: str, n_pool: int = 60) -> Path:
    """A folder of the base set's class folders (copied) plus ``_foreign/`` (the pool)."""
    folder = work / f"{base}-with-pool"
    pool = folder / "_foreign"
    if pool.is_dir():
        return folder
    pool.mkdir(parents=True)
    _photo_crops(pool, n_pool // 2)
    if base == "sample":
        source = ROOT / "data" / "sample"
        images = _idx(FASHION / "t10k-images-idx3-ubyte.gz")[: n_pool // 2]
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(pool / f"fashion-{i:03d}.png")
    else:
        source = Path(base)
        emoji = sorted((ROOT / "data" / "sample").rglob("*.webp"))[:: 360 // (n_pool // 2)]
        for i, path in enumerate(emoji[: n_pool // 2]):
            Image.open(path).save(pool / f"emoji-{i:03d}.png")
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        shutil.copytree(cls, folder / cls.name)
    return folder


def scores(x: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(kit outlier_score, cleanlab OutOfDistribution score turned round: higher = outlier)."""
    from cleanlab.outlier import OutOfDistribution

    _, sim = neighbors(x, k)
    kit = 1.0 - sim.astype(np.float64).mean(axis=1)
    theirs = OutOfDistribution(params={"k": k}).fit_score(features=x.astype(np.float64))
    return kit, 1.0 - theirs


def class_scores(x: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(the kit's class-aware score, cleanlab's class-aware ``OutOfDistribution`` on the probe's
    out-of-fold probabilities with the given labels, turned round: higher = outlier)."""
    from cleanlab.outlier import OutOfDistribution

    from embedscope.label_issues import probe_probabilities

    classes, codes = np.unique(labels, return_inverse=True)
    probs, _ = probe_probabilities(x, codes, len(classes))
    theirs = OutOfDistribution().fit_score(pred_probs=probs, labels=codes)
    return class_outlier_score(x, labels, k), 1.0 - theirs


def _measure(x: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> dict:
    """The measures of one setting; ``labels``: the classes the images are filed under."""
    from scipy.stats import rankdata
    from sklearn.metrics import average_precision_score, roc_auc_score

    kit, theirs = scores(x)
    own, theirs_own = class_scores(x, labels)
    both = np.maximum(rankdata(kit), rankdata(own))  # far from everything, or from its class
    flags, threshold = outlier_flags(kit)
    hit = int((flags & truth).sum())
    return {
        "kit_auroc": roc_auc_score(truth, kit),
        "kit_ap": average_precision_score(truth, kit),
        "cleanlab_auroc": roc_auc_score(truth, theirs),
        "cleanlab_ap": average_precision_score(truth, theirs),
        "flag_precision": hit / max(int(flags.sum()), 1),
        "flag_recall": hit / int(truth.sum()),
        "flagged": int(flags.sum()),
        "class_auroc": roc_auc_score(truth, own),
        "class_ap": average_precision_score(truth, own),
        "cleanlab_class_auroc": roc_auc_score(truth, theirs_own),
        "cleanlab_class_ap": average_precision_score(truth, theirs_own),
        "either_auroc": roc_auc_score(truth, both),
        "either_ap": average_precision_score(truth, both),
    }


def settings(x: np.ndarray, labels: np.ndarray, foreign: int, seeds: int) -> dict:
    """far and near, each over ``seeds`` seeds: mean and standard deviation of each measure."""
    pool = labels == "_foreign"
    base = np.flatnonzero(~pool)
    classes = sorted(set(labels[base]))
    out: dict = {"clean_flagged": int(outlier_flags(scores(x[base])[0])[0].sum())}
    runs: dict[str, list[dict]] = {"far": [], "near": []}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        files = np.random.default_rng(1000 + seed)  # the classes they are filed under
        slipped = rng.choice(np.flatnonzero(pool), min(foreign, int(pool.sum())), replace=False)
        rows = np.concatenate([base, slipped])
        truth = np.r_[np.zeros(len(base), bool), np.ones(len(slipped), bool)]
        filed = np.r_[labels[base], files.choice(classes, len(slipped))]  # random classes
        runs["far"].append(_measure(x[rows], truth, filed))
        held = classes[seed % len(classes)]
        kept = base[labels[base] != held]
        spread = rng.choice(base[labels[base] == held], foreign, replace=False)
        rows = np.concatenate([kept, spread])
        truth = np.r_[np.zeros(len(kept), bool), np.ones(len(spread), bool)]
        others = [c for c in classes if c != held]
        filed = np.r_[labels[kept], files.choice(others, len(spread))]  # spread over the others
        runs["near"].append(_measure(x[rows], truth, filed))
    for name, found in runs.items():
        out[name] = {
            key: [round(float(np.mean([r[key] for r in found])), 4),
                  round(float(np.std([r[key] for r in found])), 4)]
            for key in found[0]
        }  # fmt: skip
    return out


def outliers_bench(work: Path, *, fashion_images: int = 2000, seeds: int = 5) -> dict:
    results = {}
    fashion = fashion_folder(work / f"fashion-train-{fashion_images}", "train", fashion_images)
    for name, base, foreign in (("sample", "sample", 24), ("fashion-mnist", str(fashion), 30)):
        folder = with_pool(work, "sample" if base == "sample" else base)
        x, labels = vectors_of(folder, Layout(f"outliers-{name}", work / "data", work / "rep"))
        print(f"[bench] outliers: {name} ({len(x)} images with the pool)", flush=True)
        results[name] = {"images": int((labels != "_foreign").sum()), "foreign": foreign}
        results[name] |= settings(x, labels, foreign, seeds)
        results[name]["confused"] = confused(x[labels != "_foreign"], labels[labels != "_foreign"])
    return results


def confused(x: np.ndarray, labels: np.ndarray) -> dict:
    """The kit's confused pairs and class label quality (label_issues' facts) of a clean set."""
    from embedscope.label_issues import label_issues

    idx, sim = neighbors(x, 10)
    facts = label_issues(x, labels, idx, sim).facts
    return {k: facts[k] for k in ("confused_pairs", "class_label_quality")}


def confused_table(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines += [
            f"| confused pairs: {name} | A as B | B as A | share | cleanlab joint probability "
            "| cleanlab overlapping |",
            "|---|---|---|---|---|---|",
        ]
        for p in r["confused"]["confused_pairs"][:5]:
            lines.append(
                f"| {p['class_a']} / {p['class_b']} | {p['a_as_b']} | {p['b_as_a']} "
                f"| {p['share']:.3f} | {p['joint_probability']:.4f} | {p['cleanlab_overlapping']} |"
            )
        ranked = r["confused"]["class_label_quality"]
        lines += [
            "",
            f"{name}, class label quality, worst first: "
            + ", ".join(f"{c['class']} {c['label_quality']:.3f}" for c in ranked),
            "",
        ]
    return "\n".join(lines) + "\n"


def outliers_table(results: dict) -> str:
    plain = ["outliers: set", "setting", "kit AUROC", "cleanlab AUROC", "kit AP", "cleanlab AP",
             "flag P/R", "flagged", "flagged with none slipped in"]  # fmt: skip
    aware = ["class-aware: set", "setting", "kit class AUROC", "cleanlab class AUROC",
             "kit class AP", "cleanlab class AP", "either AUROC", "either AP"]  # fmt: skip
    cells = [
        (name, r, setting, r[setting]) for name, r in results.items() for setting in ("far", "near")
    ]
    lines = markdown_table(plain, (
        [f"{name} ({r['images']} + {r['foreign']})", setting, _ms(m["kit_auroc"]),
         _ms(m["cleanlab_auroc"]), _ms(m["kit_ap"]), _ms(m["cleanlab_ap"]),
         f"{m['flag_precision'][0]:.2f}/{m['flag_recall'][0]:.2f}", f"{m['flagged'][0]:.1f}",
         r["clean_flagged"]]
        for name, r, setting, m in cells
    ))  # fmt: skip
    lines += ["", *markdown_table(aware, (
        [name, setting, *(_ms(m[k]) for k in ("class_auroc", "cleanlab_class_auroc", "class_ap",
                                              "cleanlab_class_ap", "either_auroc", "either_ap"))]
        for name, r, setting, m in cells if "class_auroc" in m
    ))]  # fmt: skip
    return "\n".join(lines) + "\n" + "\n" + confused_table(results)


def _ms(pair: list[float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="reports/bench/outliers-work")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(
        outliers_table(
            outliers_bench(Path(args.work), fashion_images=args.images, seeds=args.seeds)
        )
    )
