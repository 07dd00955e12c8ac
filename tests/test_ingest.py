"""Ingest accounts for every file: the manifest row of each odd case, and nothing modified."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SKIPPED_IN_MESSY, make_classes, make_messy, png_bytes, tree_digest

from embedscope.images import load_rgb
from embedscope.ingest import (
    UNLABELLED,
    SourceError,
    build_manifest,
    default_name,
    discover,
    ingest,
    load_manifest,
    resolve_source,
    summarize,
)
from embedscope.layout import Layout


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    return make_messy(tmp_path / "messy")


@pytest.mark.faults
def test_every_file_is_accounted_for_and_nothing_changes(messy: Path, tmp_path: Path) -> None:
    before = tree_digest(messy)
    layout = Layout("messy", tmp_path / "data", tmp_path / "reports")
    m = ingest(str(messy), layout, max_pixels=1_000_000).set_index("path")
    assert tree_digest(messy) == before, "ingest must never modify the source folder"
    reason = m["reason"].to_dict()
    assert reason["odd/empty.jpg"] == "empty file (0 bytes)"
    assert reason["odd/notes.jpg"].startswith("not an image")
    assert reason["odd/truncated.jpg"].startswith("truncated or corrupt")
    assert reason["odd/bomb.png"].startswith("too many pixels")
    skipped = set(m.index[m["status"] == "skipped"])
    assert skipped == SKIPPED_IN_MESSY
    # hidden files, OS litter and the symlink loop are not candidates
    assert not any(p.startswith((".", "loop/")) or "/." in p for p in m.index)
    assert "odd/Thumbs.db" not in m.index
    assert m.loc["odd/png_named.JPG", "format"] == "PNG"
    assert m.loc["odd/anim.gif", "status"] == "ok"
    assert m.loc["odd/<img src=x onerror=alert(1)>.png", "status"] == "ok"
    assert m.loc["odd/naïve ünïcode 名前.png", "label"] == "odd"
    assert m.loc["top-level.png", "label"] == UNLABELLED
    # the later file in walk order points at the first one with the same bytes
    assert m.loc["red/red_0.png", "duplicate_of"] == "odd/dup of red.png"
    assert pd.isna(m.loc["odd/dup of red.png", "duplicate_of"])
    row = m.loc["odd/panorama.webp"]
    assert (row["width"], row["height"], row["format"]) == (4000, 20, "WEBP")
    assert m["sha256"].notna().sum() == len(m) - 1  # all but the empty file
    summary = summarize(m.reset_index())
    assert summary["skipped"] == 4 and summary["duplicates"] == 1
    assert {s["path"] for s in summary["skipped_files"]} == skipped
    loaded, root = load_manifest(layout)
    assert root == messy.resolve() and len(loaded) == len(m)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mode_L.png", (9, 9, 9)),
        ("mode_LA.png", (132, 132, 132)),  # 50% alpha grey 9 over white
        ("mode_RGBA.png", (255, 255, 255)),  # fully transparent red -> white, not black
        ("mode_1.png", (255, 255, 255)),
        ("mode_I16.tif", (233, 233, 233)),  # 16-bit 60000 scaled, not clipped to white
        ("mode_CMYK.jpg", (255, 255, 255)),
        ("anim.gif", (255, 0, 0)),  # first frame
    ],
)
def test_every_mode_loads_as_the_rgb_a_person_sees(messy: Path, name: str, expected) -> None:
    im = load_rgb(messy / "odd" / name)
    assert im.mode == "RGB"
    assert np.allclose(np.asarray(im)[1, 1], expected, atol=3)


def test_exif_orientation_is_applied(messy: Path) -> None:
    assert load_rgb(messy / "odd" / "exif.jpg").size == (10, 30)


def test_rerun_reuses_rows_of_unchanged_files(messy: Path, tmp_path: Path, monkeypatch) -> None:
    layout = Layout("messy", tmp_path / "data", tmp_path / "reports")
    first = ingest(str(messy), layout)
    calls: list[str] = []
    import embedscope.ingest as ingest_mod

    real = ingest_mod.inspect_file
    monkeypatch.setattr(
        ingest_mod, "inspect_file", lambda r, rel, mp: calls.append(rel) or real(r, rel, mp)
    )
    (messy / "green" / "new.png").write_bytes(png_bytes(colour=77))
    os.utime(messy / "red" / "red_1.jpg", ns=(1, 1))
    second = ingest(str(messy), layout, workers=1)
    assert sorted(calls) == ["green/new.png", "red/red_1.jpg"]
    assert len(second) == len(first) + 1


def test_exclude_and_label_depth_and_labels_file(tmp_path: Path) -> None:
    root = tmp_path / "nested"
    for rel in ["animals/birds/a.png", "animals/cats/b.png", "web_scraped/round/c.png",
                "web_scraped/oval/d.png"]:  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(colour=len(rel)))
    assert discover(root, ["web_scraped/round"]) == [
        "animals/birds/a.png", "animals/cats/b.png", "web_scraped/oval/d.png"]  # fmt: skip
    m = build_manifest(root, label_depth=1).set_index("path")
    assert m.loc["animals/birds/a.png", "label"] == "animals"
    assert build_manifest(root).set_index("path").loc["animals/birds/a.png", "label"] == "birds"
    table = tmp_path / "labels.csv"
    pd.DataFrame({"path": ["animals/cats/b.png"], "label": ["feline"]}).to_csv(table, index=False)
    m = build_manifest(root, labels=table).set_index("path")
    assert m.loc["animals/cats/b.png", "label"] == "feline"
    assert m.loc["animals/birds/a.png", "label"] == UNLABELLED


@pytest.mark.faults
def test_archives_unpack_and_path_traversal_is_refused(tmp_path: Path) -> None:
    layout = Layout("pack", tmp_path / "data", tmp_path / "reports")
    good = tmp_path / "pack.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("cats/a.png", png_bytes())
    root = resolve_source(str(good), layout)
    assert (root / "cats" / "a.png").exists() and root.is_relative_to(layout.data_dir)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.png", png_bytes())
    with pytest.raises(SourceError, match="outside"):
        resolve_source(str(evil), Layout("evil", tmp_path / "data", tmp_path / "reports"))
    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        info = tarfile.TarInfo("../escaped.png")
        data = png_bytes()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="unsafe"):
        resolve_source(str(evil_tar), Layout("evil2", tmp_path / "data", tmp_path / "reports"))
    assert not list(tmp_path.rglob("escaped.png"))


def test_source_errors_are_one_sentence(tmp_path: Path, monkeypatch) -> None:
    layout = Layout("x", tmp_path / "data", tmp_path / "reports")
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"), layout)
    import embedscope.ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "SAMPLE_DIR", tmp_path / "no-sample")
    with pytest.raises(SourceError, match="built-in sample is missing"):
        resolve_source("sample", layout)
    import kagglehub  # Kaggle's servers cannot exist here: fake only the download call

    def offline(handle):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SourceError) as err:
        resolve_source("kaggle:aayushpurswani/diamond-images-dataset", layout)
    message = str(err.value)
    assert "\n" not in message and "KAGGLE_USERNAME" in message and "diamond" in message
    with pytest.raises(SourceError, match="kaggle:<owner>/<dataset>"):
        resolve_source("kaggle:justone", layout)


def test_kaggle_download_path_is_used_in_place(tmp_path: Path, monkeypatch) -> None:
    import kagglehub

    cached = make_classes(tmp_path / "kagglecache", per_class=2)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(cached))
    layout = Layout(default_name("kaggle:o/diamond-images"), tmp_path / "data", tmp_path / "r")
    assert layout.name == "diamond-images"
    m = ingest("kaggle:o/diamond-images", layout)
    assert (m["status"] == "ok").sum() == 6


def test_default_names() -> None:
    assert default_name("sample") == "sample"
    assert default_name("/x/My Photos/") == "my-photos"
    assert default_name("/x/pets.tar.gz") == "pets"


def test_sample_outputs_beside_its_images_are_not_ingested(tmp_path: Path, monkeypatch) -> None:
    """data/sample holds the vendored images and is also dataset "sample"'s output folder."""
    import embedscope.ingest as ingest_mod

    sample = make_classes(tmp_path / "data" / "sample", per_class=2)
    (sample / "LICENSE.md").write_text("MIT")
    monkeypatch.setattr(ingest_mod, "SAMPLE_DIR", sample)
    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    first = ingest("sample", layout)
    (layout.embeddings_dir("m") / "shards").mkdir(parents=True)
    (layout.embeddings_dir("m") / "vectors.npy").write_bytes(b"\x93NUMPY")
    second = ingest("sample", layout)
    assert len(first) == len(second) == 6 and (second["status"] == "ok").all()
    other = Layout("sample", tmp_path / "elsewhere", tmp_path / "reports")
    assert len(ingest("sample", other)) == 6  # another data root still finds the sample
