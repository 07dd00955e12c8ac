"""Image-quality findings on real degraded photos, and the findings table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from embedscope.findings import ISSUE_TYPES, findings_table, issue_counts, write_findings
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.quality import (
    QUALITY_TYPES,
    cleanvision_stats,
    image_stats,
    phash,
    quality_findings,
)


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
    manifest = ingest(str(photos), layout, quality_thresholds="cleanvision")
    manifest = manifest.reset_index(drop=True)
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
    # every type that applies is counted; the split types only where the dataset has splits
    applicable = {t for t in ISSUE_TYPES if t in table.columns}
    assert applicable <= set(counts) and counts["mislabel"] == 1
    assert {"leak", "conflicting_labels"}.isdisjoint(counts) and "split" not in table.columns
    assert counts["dark"] == table["dark"].sum()
    assert table.loc[table["path"].str.startswith("dark/"), "dark"].sum() == 6
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


def _degraded_set(photos: Path) -> pd.DataFrame:
    """Statistics of the sample photos' crops and of six emoji (clip art on white), of a copy of
    each at the weakest strength of the bench's grid per type, and of JPEG and noise copies (the
    distractors: no flag), as ingest takes them."""
    from embedscope.images import to_rgb

    def stops(im: Image.Image, s: float) -> Image.Image:
        linear = (np.asarray(im, np.float32) / 255) ** 2.2 * 2.0**s
        return Image.fromarray((np.clip(linear, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8))

    def jpeg(im: Image.Image) -> Image.Image:
        import io

        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=20)
        return Image.open(buffer).convert("RGB")

    def noise(im: Image.Image) -> Image.Image:
        a = np.asarray(im, np.float32) + np.random.default_rng(0).normal(
            0, 12, (im.height, im.width, 3)
        )
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    changes = {
        "blurry": lambda im: im.filter(ImageFilter.GaussianBlur(0.01 * max(im.size))),
        "dark": lambda im: stops(im, -2),
        "light": lambda im: Image.blend(im, Image.new("RGB", im.size, "white"), 0.7),
        "low_information": lambda im: ImageEnhance.Contrast(im).enhance(0.2),
        "grayscale": lambda im: ImageEnhance.Color(im).enhance(0.1),
        "jpeg": jpeg,
        "noise": noise,
    }
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    emoji = [to_rgb(Image.open(p)) for p in sorted(sample.rglob("*.webp"))[::60][:6]]
    photo = [Image.open(p).convert("RGB") for p in sorted((photos / "ok").glob("*.jpg"))]
    rows = []
    for im in photo + emoji:
        for kind, change in {"original": lambda im: im, **changes}.items():
            copy = change(im)
            rows.append(
                {
                    "kind": kind,
                    "width": copy.width,
                    "height": copy.height,
                    **image_stats(copy),
                    **cleanvision_stats(copy),
                }
            )
    return pd.DataFrame(rows)


def test_calibrated_thresholds_flag_moderate_degradations_and_not_jpeg_or_noise(photos) -> None:
    """Each type's weakest strength of the bench's grid is flagged on real photos and clip art;
    originals, JPEG and noise are not. cleanvision's thresholds miss most of these copies and
    stay available, flag for flag."""
    stats = _degraded_set(photos)
    types = ["blurry", "dark", "light", "low_information", "grayscale"]
    ours = quality_findings(stats)[types].assign(kind=stats["kind"]).groupby("kind").mean()
    for kind in types:
        assert ours.loc[kind, kind] == 1.0, ours
    assert (ours.loc[["original", "jpeg", "noise"]] == 0).all().all(), ours
    theirs = quality_findings(stats, "cleanvision")[types].assign(kind=stats["kind"])
    assert theirs.groupby("kind").mean().loc[types].to_numpy().diagonal().mean() < 0.5
    with pytest.raises(ValueError, match="calibrated, cleanvision"):
        quality_findings(stats, "strict")


def test_the_blur_score_ignores_a_bright_border(photos) -> None:
    """cleanvision's blur score keeps the unfiltered one-pixel border of its 64-pixel copy, so
    a blurred photo in a white frame reads as sharp; the calibrated blur effect leaves borders
    out."""
    from PIL import ImageOps

    im = Image.open(sorted((photos / "ok").glob("*.jpg"))[0]).convert("RGB")
    framed = ImageOps.expand(im.filter(ImageFilter.GaussianBlur(6)), border=4, fill="white")
    stats = pd.DataFrame(
        [{"width": 408, "height": 308, **image_stats(framed), **cleanvision_stats(framed)}]
    )
    assert quality_findings(stats)["blurry"].all()
    assert not quality_findings(stats, "cleanvision")["blurry"].any()


def test_statistics_of_another_version_are_taken_again(photos, tmp_path) -> None:
    """A manifest row whose statistics predate :data:`STATS_VERSION` is inspected again."""
    from embedscope.quality import STATS_VERSION

    layout = Layout("photos", tmp_path / "data", tmp_path / "reports")
    first = ingest(str(photos / "ok"), layout)
    assert (first["stats_version"] == STATS_VERSION).all()
    old = first.assign(stats_version=STATS_VERSION - 1, blur_effect=np.nan)
    old.to_parquet(layout.manifest)
    again = ingest(str(photos / "ok"), layout)
    assert again["blur_effect"].notna().all() and (again["stats_version"] == STATS_VERSION).all()


def test_findings_table_passes_the_quality_thresholds_through(photos, tmp_path) -> None:
    """``quality_thresholds`` (the 03_reduce parameter) reaches the quality family: the default
    explains its calibrated blur score, ``"cleanvision"`` flags as cleanvision does."""
    layout = Layout("photos", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(photos), layout, quality_thresholds="cleanvision")
    manifest = manifest.reset_index(drop=True)
    rows = manifest[["path", "label"]]
    per_image = _per_image(len(rows))
    ours = findings_table(rows, per_image, manifest).set_index("path")
    theirs = findings_table(rows, per_image, manifest, quality_thresholds="cleanvision")
    theirs = theirs.set_index("path")
    assert "blur effect" in ours.loc["blurry/photo0.png", "reason"]
    assert ours.filter(like="blurry/", axis=0)["blurry"].all()
    expected = quality_findings(manifest, "cleanvision").set_index(manifest["path"])
    for kind in ("dark", "light", "blurry", "low_information", "grayscale"):
        assert (theirs[kind] == expected.loc[theirs.index, kind]).all(), kind
    assert theirs.loc["grayscale/photo0.png", "grayscale"]  # stored in mode L


def test_cleanvision_mode_takes_its_statistics_at_full_size(tmp_path) -> None:
    """``quality_thresholds="cleanvision"`` reads a file as cleanvision does (full size, its own
    arithmetic): black with a white line every 30 rows has its brightest 1% white (not dark) and
    two grey levels (low information), while the 256-pixel copy blurs the lines to dim grey
    (dark, and more levels). A manifest taken without them is inspected again once."""
    root = tmp_path / "lines"
    root.mkdir()
    arr = np.zeros((1024, 1024, 3), np.uint8)
    arr[::30] = 255
    Image.fromarray(arr).save(root / "lines.png")
    layout = Layout("lines", tmp_path / "data", tmp_path / "reports")
    plain = ingest(str(root), layout)
    assert plain["cv_entropy"].isna().all()
    with pytest.raises(ValueError, match='run 01_download with quality_thresholds="cleanvision"'):
        quality_findings(plain, "cleanvision")  # refused, not approximated
    manifest = ingest(str(root), layout, quality_thresholds="cleanvision").reset_index(drop=True)
    white = 35 / 1024  # rows 0, 30, ..., 1020
    entropy = np.log2(3) - white * np.log2(white) - (1 - white) * np.log2(1 - white)
    assert manifest.loc[0, "cv_brightness_p99"] == 1.0
    assert manifest.loc[0, "cv_entropy"] == pytest.approx(entropy, abs=1e-6)
    flags = quality_findings(manifest, "cleanvision").loc[0]
    assert not flags["dark"] and flags["low_information"]
    # a mode cleanvision cannot read (LA) has no statistics of its, and is not read every run:
    # its bytes changed behind an unchanged size and date are never seen
    Image.new("LA", (64, 64), (90, 128)).save(root / "alpha.png")
    first = ingest(str(root), layout, quality_thresholds="cleanvision").set_index("path")
    assert first.loc["alpha.png", "status"] == "ok" and np.isnan(
        first.loc["alpha.png", "cv_entropy"]
    )
    st = (root / "alpha.png").stat()
    (root / "alpha.png").write_bytes(b"x" * st.st_size)
    os.utime(root / "alpha.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    again = ingest(str(root), layout, quality_thresholds="cleanvision").set_index("path")
    assert again.loc["alpha.png", "status"] == "ok"
    with pytest.raises(RuntimeError, match="calibrated, cleanvision"):
        ingest(str(root), layout, quality_thresholds="strict")
