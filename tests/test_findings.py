"""Image-quality findings on real degraded photos, and the findings table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from embedscope.findings import ISSUE_TYPES, findings_table, issue_counts, write_findings
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.quality import QUALITY_TYPES, image_stats, phash, quality_findings


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops of scikit-learn's two sample photos, and degraded copies of the first six."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    originals = []
    for i in range(12):
        photo = load_sample_images().images[i % 2]
        y, x = rng.integers(0, 100), rng.integers(0, 200)
        crop = Image.fromarray(photo[y : y + 300, x : x + 400])
        (root / "ok").mkdir(exist_ok=True)
        crop.save(root / "ok" / f"photo{i}.jpg", quality=92)
        originals.append(crop)
    degrade = {
        # strong enough to meet cleanvision's definitions (its thresholds are strict)
        "blurry": lambda im: im.filter(ImageFilter.GaussianBlur(25)),
        "dark": lambda im: ImageEnhance.Brightness(im).enhance(0.12),
        "light": lambda im: Image.blend(im, Image.new("RGB", im.size, "white"), 0.95),
        "low_information": lambda im: ImageEnhance.Contrast(im).enhance(0.004),
        "grayscale": lambda im: im.convert("L"),
    }
    for kind, change in degrade.items():
        (root / kind).mkdir()
        for i, im in enumerate(originals[:6]):
            change(im).save(root / kind / f"photo{i}.png")
    (root / "odd").mkdir()
    Image.fromarray(load_sample_images().images[0][:40, :400]).save(root / "odd" / "strip.png")
    return root


def test_degraded_photos_are_flagged_for_what_was_done_to_them(photos: Path, tmp_path) -> None:
    layout = Layout("photos", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(photos), layout)
    flags = quality_findings(manifest.reset_index(drop=True)).assign(folder=manifest["label"])
    by_folder = flags.groupby("folder")[list(QUALITY_TYPES)].sum()
    assert (by_folder.loc["ok", ["dark", "light", "blurry", "low_information"]] == 0).all()
    assert by_folder.loc["ok", "grayscale"] == 0
    for kind in ("dark", "light", "low_information", "grayscale"):
        assert by_folder.loc[kind, kind] == 6, by_folder
    # cleanvision's blur score keeps the unfiltered one-pixel border of its 64-pixel copy, so a
    # blurred photo with a bright border (the China crops) still reads as sharp: half of them
    assert by_folder.loc["blurry", "blurry"] >= 3
    assert flags.loc[manifest["label"] == "odd", "odd_aspect_ratio"].all()
    assert not flags.loc[manifest["label"] == "ok", "odd_aspect_ratio"].any()
    # a greyscale copy keeps the picture: it is a near duplicate of its original
    grey = manifest.index[manifest["path"] == "grayscale/photo0.png"][0]
    orig = manifest.index[manifest["path"] == "ok/photo0.jpg"][0]
    groups = flags["near_duplicate_group"]
    assert groups[grey] >= 0 and groups[grey] == groups[orig]


def test_statistics_are_cached_in_the_manifest_and_old_manifests_are_inspected_once(
    photos: Path, tmp_path
) -> None:
    layout = Layout("photos", tmp_path / "data", tmp_path / "reports")
    first = ingest(str(photos), layout)
    assert first.loc[first["status"] == "ok", "phash"].notna().all()
    old = first.drop(columns=["brightness_p99", "phash"])  # a manifest of an older kit
    old.to_parquet(layout.manifest)
    again = ingest(str(photos), layout)
    pd.testing.assert_series_equal(again["phash"], first["phash"])


def test_perceptual_hash_survives_a_resave_and_tells_different_photos_apart() -> None:
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    assert phash(china) == phash(china.resize((320, 240)))
    assert phash(china) != phash(flower)
    stats = image_stats(Image.new("RGB", (50, 50)))
    assert stats["brightness_p99"] == 0 and stats["colour_spread"] == 0


def _per_image(n: int, **columns) -> dict:
    base = {
        "mislabel_score": np.zeros(n, np.float32),
        "label_issue": np.zeros(n, bool),
        "suggested_label": np.array(["a"] * n, dtype=object),
        "suggested_share": np.ones(n, np.float32),
        "outlier_score": np.zeros(n, np.float32),
        "probe_label": np.array(["a"] * n, dtype=object),
        "probe_share": np.ones(n, np.float32),
        "neighbour_votes": np.full(n, 10),
        "k": 10,
    }
    return base | columns


def test_findings_table_sorts_explains_counts_and_honours_keep_tags(photos, tmp_path) -> None:
    layout = Layout("photos", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(photos), layout).reset_index(drop=True)
    rows = manifest[["path", "label"]]
    n = len(rows)
    wrong = int(np.flatnonzero(rows["path"] == "ok/photo9.jpg")[0])
    per_image = _per_image(
        n,
        mislabel_score=np.where(np.arange(n) == wrong, 0.93, 0.01).astype(np.float32),
        label_issue=np.arange(n) == wrong,
        suggested_label=np.where(np.arange(n) == wrong, "dark", "ok").astype(object),
        probe_label=np.where(np.arange(n) == wrong, "dark", "ok").astype(object),
        probe_share=np.where(np.arange(n) == wrong, 0.91, 0.99).astype(np.float32),
        neighbour_votes=np.where(np.arange(n) == wrong, 9, 10),
    )
    table = findings_table(rows, per_image, manifest)
    assert list(table["review_priority"]) == sorted(table["review_priority"], reverse=True)
    top = table.set_index("path")
    assert top.loc["ok/photo9.jpg", "issues"] == "mislabel"  # the label type, renamed
    assert top.loc["ok/photo9.jpg", "reason"] == "9 of 10 neighbours and the probe (0.91) say dark"
    assert top.loc["dark/photo0.png", "issues"].split(";")[0] == "dark"
    assert "looks the same as" in top.loc["grayscale/photo0.png", "reason"]
    counts = issue_counts(table)
    assert set(ISSUE_TYPES) <= set(counts) and counts["mislabel"] == 1 and counts["dark"] == 6
    flagged = table[table["issues"] != ""]
    assert (flagged["review_priority"] > 1).all()  # every flagged image before any other

    kept = manifest.copy()
    kept.loc[kept["path"] == "ok/photo9.jpg", "tags"] = "keep:label"
    kept.loc[kept["path"] == "dark/photo0.png", "tags"] = "reviewed;keep:dark"
    again = findings_table(rows, per_image, kept).set_index("path")
    assert again.loc["ok/photo9.jpg", "issues"] == ""
    assert not again.loc["ok/photo9.jpg", "label_issue"]
    assert "dark" not in again.loc["dark/photo0.png", "issues"].split(";")
    write_findings(table, layout)
    back = pd.read_csv(layout.findings, keep_default_na=False)
    assert list(back["path"]) == list(table["path"]) and "reason" in back
