"""Ingest accounts for every file: the manifest row of each odd case, and nothing modified."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
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
    decode_cost,
    default_name,
    discover,
    ingest,
    load_manifest,
    read_labels,
    resolve_source,
    summarize,
    summary_text,
)
from embedscope.layout import Layout


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    return make_messy(tmp_path / "messy")


@pytest.mark.faults
def test_every_file_is_accounted_for_and_nothing_changes(messy: Path, tmp_path: Path) -> None:
    (messy / ".cache").mkdir()
    (messy / ".cache" / "seen.png").write_bytes(png_bytes(colour=5))
    (messy / "__MACOSX" / "odd").mkdir(parents=True)
    (messy / "__MACOSX" / "odd" / "._tiny.bmp").write_bytes(b"\0\5")
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
    assert skipped == SKIPPED_IN_MESSY | {".cache/seen.png"}
    # hidden files, in hidden folders too, are listed as skipped; OS litter and the symlink
    # loop are not candidates
    hidden = {".hidden.png", "odd/._resource.png", ".cache/seen.png"}
    assert {p for p in m.index if p.startswith(".") or "/." in p} == hidden
    assert (m.loc[sorted(hidden), "reason"] == "hidden file").all()
    assert m.loc[".hidden.png", "label"] == UNLABELLED
    assert not any(p.startswith("loop/") or "__MACOSX" in p for p in m.index)
    assert "odd/Thumbs.db" not in m.index and "odd/.DS_Store" not in m.index
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
    assert m["sha256"].notna().sum() == len(m) - 1 - len(hidden)  # hidden ones are not read
    summary = summarize(m.reset_index())
    assert summary["skipped"] == 4 + len(hidden) and summary["duplicates"] == 1
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
        ingest_mod,
        "inspect_file",
        lambda r, rel, mp, **kw: calls.append(rel) or real(r, rel, mp, **kw),
    )
    (messy / "green" / "new.png").write_bytes(png_bytes(colour=77))
    os.utime(messy / "red" / "red_1.jpg", ns=(1, 1))
    second = ingest(str(messy), layout, workers=1)
    assert sorted(calls) == ["green/new.png", "red/red_1.jpg"]
    assert len(second) == len(first) + 1


def test_ingest_records_the_decode_cost_of_its_own_pass(tmp_path: Path) -> None:
    """Before: the embed stage decoded files again to learn what decoding costs. After: ingest,
    which decodes every file, records the median CPU seconds of its draft-scale decodes; a
    re-run that decodes only a file or two keeps the record of the pass that decoded them all,
    and cleanvision's full-size decodes record none (not what the embed stage's workers do)."""
    images = make_classes(tmp_path / "images", per_class=4)
    layout = Layout("costs", tmp_path / "data", tmp_path / "reports")
    ingest(str(images), layout, workers=1)
    record = json.loads(layout.source_file.read_text())["decode"]
    assert record["images"] == 12 and record["seconds"] > 0
    assert decode_cost(layout) == record["seconds"]
    (images / "red" / "extra.png").write_bytes(png_bytes(colour=77))
    ingest(str(images), layout, workers=1)  # one file decoded: the pass over 12 stands
    assert json.loads(layout.source_file.read_text())["decode"] == record
    full = Layout("full", tmp_path / "data", tmp_path / "reports")
    ingest(str(images), full, workers=1, quality_thresholds="cleanvision")
    assert decode_cost(full) is None


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
    assert m.loc["animals/birds/a.png", "label"] == "birds"  # not named: its folder's label


def test_a_labels_file_relabels_what_it_names_and_reports_what_the_dataset_lacks(
    tmp_path: Path,
) -> None:
    """Before, a labels file naming 6 of 67 images left the other 61 `(unlabelled)`, and the
    paths it named that the dataset lacks vanished without a word."""
    root = make_classes(tmp_path / "set", per_class=2)
    (root / "loose.png").write_bytes(png_bytes(colour=7))
    table = tmp_path / "labels.csv"
    table.write_text("path,label\nred/red_0.png,crimson\nloose.png,red\nnope/gone.png,x\n")
    layout = Layout("set", tmp_path / "data", tmp_path / "reports")
    m = ingest(str(root), layout, labels=table)
    label = m.set_index("path")["label"]
    assert (label["red/red_0.png"], label["loose.png"]) == ("crimson", "red")
    assert label["red/red_1.jpg"] == "red" and label["blue/blue_0.png"] == "blue"
    summary = summarize(m, labels=table)
    assert summary["labels_file"] == {
        "file": str(table),
        "applied": 2,
        "unknown_paths": ["nope/gone.png"],
    }
    assert "labels_file" not in summarize(m)
    text = summary_text("set", summary).splitlines()
    assert text[0] == "set: 7 images in 4 labels, 0 files skipped, 0 exact duplicates"
    assert text[1] == (
        f"labels file {table}: labelled 2 files, the others keep their folder's label; "
        "1 path not in the dataset"
    )
    assert text[2:] == ["unknown path (nothing changed): 'nope/gone.png'"]
    one = {**summary, "images": 1, "labels": {"red": 1}, "skipped": 1, "duplicates": 1}
    assert summary_text("one", {k: v for k, v in one.items() if k != "labels_file"}) == (
        "one: 1 image in 1 label, 1 file skipped, 1 exact duplicate"
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        (b"file,label\nred/red_0.png,x\n", "needs the columns path,label; found file,label"),
        (b"path,label\nred/red_0.png,\n", "a row without a path or a label: row 1 of 1"),
        (b"path,label\nred/caf\xe9.png,x\n", "cannot be read as a UTF-8 CSV or parquet file"),
    ],
)
def test_a_bad_labels_file_is_refused_in_one_line(tmp_path: Path, content, says) -> None:
    table = tmp_path / "labels.csv"
    if content is not None:
        table.write_bytes(content)
    with pytest.raises(SourceError) as err:
        read_labels(table)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"labels file {table} ")


@pytest.mark.faults
def test_archives_unpack_and_path_traversal_is_refused(tmp_path: Path) -> None:
    layout = Layout("pack", tmp_path / "data", tmp_path / "reports")
    good = tmp_path / "pack.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("pack/cats/a.png", png_bytes())  # the one top-level folder is stripped
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
    evil_raw = tmp_path / "evil-raw.zip"  # a name Info-ZIP's way (raw UTF-8, no flag)
    with zipfile.ZipFile(evil_raw, "w") as zf:
        zf.writestr(_InfoZipName("../../escaped ü.png"), png_bytes())
    with pytest.raises(SourceError, match="outside"):
        resolve_source(str(evil_raw), Layout("evil3", tmp_path / "data", tmp_path / "reports"))
    assert not list(tmp_path.rglob("escaped*.png"))


class _InfoZipName(zipfile.ZipInfo):
    """A member named as Info-ZIP's ``zip`` (the Linux tool) names it: the raw bytes of the
    file system's name and no UTF-8 flag (bit 11), so zipfile reads it as cp437. zipfile
    itself sets the flag on every non-ASCII name. Checked by hand against ``zip -r``: zipfile
    reads the same names and flag bits from both."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("utf-8", "surrogateescape"), self.flag_bits & ~0x800


def _zip_tree(archive: Path, base: Path, info_zip: bool) -> None:
    """``cd base && zip -r archive .`` in Python: folders and files, sorted."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(base.rglob("*")):
            name = path.relative_to(base).as_posix() + ("/" if path.is_dir() else "")
            info = (_InfoZipName if info_zip else zipfile.ZipInfo)(name)
            zf.writestr(info, b"" if path.is_dir() else path.read_bytes())


def _make_archive(kind: str, base: Path, out: Path) -> Path:
    if kind in ("info-zip", "zipfile"):
        _zip_tree(archive := out / "mydata.zip", base, info_zip=kind == "info-zip")
    elif kind == "tar-binary":  # GNU tar: raw name bytes, gnu format
        archive = out / "mydata.tgz"
        subprocess.run(["tar", "-czf", str(archive), "-C", str(base), "."], check=True)
    else:  # tarfile: pax format, UTF-8 names
        archive = out / f"mydata.{kind}"
        with tarfile.open(archive, {"tar": "w", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[kind]) as tf:
            for path in sorted(base.iterdir()):
                tf.add(path, path.name)
    return archive


def _rows(m: pd.DataFrame) -> list[tuple]:
    return sorted(m[["path", "label", "status", "reason", "sha256"]].itertuples(index=False))


@pytest.mark.parametrize("kind", ["info-zip", "zipfile", "tar-binary", "tar", "tar.bz2", "tar.xz"])
def test_an_archive_gives_the_manifest_of_its_folder(tmp_path: Path, kind: str) -> None:
    """A zip or tar reads as the folder it unpacks to: names decoded as UTF-8 whatever the
    zip's flag says, one top-level folder stripped (macOS litter beside it or not), hidden
    files listed as skipped; a loose root image keeps the folder, as a folder would."""
    unpacked = tmp_path / "unpacked"
    mydata = unpacked / "mydata"
    files = {
        "Ünïcode dir/crème brûlée 🍮.png": png_bytes(colour=1),
        "cats/a.png": png_bytes(colour=2),
        "loose.png": png_bytes(colour=3),
        ".hidden.png": png_bytes(colour=4),
        ".DS_Store": b"\0\0",
        "notes.jpg": b"not an image",
    }
    for rel, data in files.items():
        (mydata / rel).parent.mkdir(parents=True, exist_ok=True)
        (mydata / rel).write_bytes(data)
    (unpacked / "__MACOSX" / "mydata").mkdir(parents=True)  # what macOS's Compress adds
    (unpacked / "__MACOSX" / "mydata" / "._loose.png").write_bytes(b"\0\5")
    (unpacked / ".DS_Store").write_bytes(b"\0\0")
    for loose, folder in [(False, mydata), (True, unpacked)]:
        if loose:
            (unpacked / "top.png").write_bytes(png_bytes(colour=5))
        out = tmp_path / f"archives-{loose}"
        out.mkdir()
        archive = _make_archive(kind, unpacked, out)
        data, reports = tmp_path / "data", tmp_path / "reports"
        want = ingest(str(folder), Layout(f"folder-{int(loose)}", data, reports))
        got = ingest(str(archive), Layout(f"archive-{int(loose)}", data, reports))
        assert _rows(got) == _rows(want)
        m = got.set_index("path")
        prefix = "mydata/" if loose else ""
        assert m.loc[f"{prefix}Ünïcode dir/crème brûlée 🍮.png", "label"] == "Ünïcode dir"
        assert m.loc[f"{prefix}loose.png", "label"] == ("mydata" if loose else UNLABELLED)
        assert m.loc[f"{prefix}.hidden.png", "reason"] == "hidden file"
        assert not any(p.endswith(".DS_Store") or "__MACOSX" in p for p in m.index)
        if loose:
            assert m.loc["top.png", "label"] == UNLABELLED
        assert (m["status"] == "ok").sum() == 3 + loose


def test_a_zip_name_that_is_not_utf8_is_read_as_the_archive_says(tmp_path: Path) -> None:
    """Raw bytes that are not UTF-8 (an old DOS zip) keep zipfile's cp437 reading."""
    archive = tmp_path / "dos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(_InfoZipName("M\udc81SLI/K\udc84SE.PNG"), png_bytes())  # cp437 ü, ä
    m = ingest(str(archive), Layout("dos", tmp_path / "data", tmp_path / "reports"))
    assert list(m["path"]) == ["KäSE.PNG"] and m["status"].tolist() == ["ok"]


def test_an_archive_unpacked_by_older_code_is_unpacked_again(tmp_path: Path) -> None:
    """Old unpacks kept cp437-garbled names and the top folder: their marker is not reused."""
    archive = tmp_path / "mydata.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(_InfoZipName("mydata/Ünïcode dir/a.png"), png_bytes())
    layout = Layout("mydata", tmp_path / "data", tmp_path / "reports")
    root = resolve_source(str(archive), layout)
    st = archive.stat()
    old = {"archive": str(archive.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    shutil.rmtree(root)
    garbled = root / "mydata" / "├£n├»code dir"
    garbled.mkdir(parents=True)
    (garbled / "a.png").write_bytes(png_bytes())
    (root / ".embedscope-archive.json").write_text(json.dumps(old))
    assert resolve_source(str(archive), layout) == root
    assert (root / "Ünïcode dir" / "a.png").is_file() and not (root / "mydata").exists()


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


POOL = (
    "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
    "/v1/datasets.DatasetApiService/GetDataset (Caused by NameResolutionError(...))"
)


@pytest.mark.parametrize(
    ("failure", "credentials", "says"),
    [
        ("offline", True, "kaggle.com cannot be reached (offline or behind a firewall)"),
        ("offline", False, "cannot be reached (offline or behind a firewall); no Kaggle "
         "credentials were found either: put kaggle.json in ~/.kaggle/ or set KAGGLE_USERNAME"),
        (401, False, "no Kaggle credentials were found: put kaggle.json in ~/.kaggle/"),
        (403, True, "Kaggle refused your credentials for it"),
        (404, True, "Kaggle has no such dataset (check the owner and the dataset's name)"),
    ],
)  # fmt: skip
def test_a_failed_kaggle_download_says_why_in_one_sentence(
    tmp_path: Path, monkeypatch, failure, credentials: bool, says: str
) -> None:
    """Before, an offline machine got kagglehub's several sentences of HTTPSConnectionPool
    internals; now one sentence a person can act on (Kaggle's servers cannot be reached from
    here: only the download call is replaced, raising what kagglehub raises)."""
    import kagglehub
    import requests
    from kagglehub.exceptions import KaggleApiHTTPError

    def download(handle):
        if failure == "offline":
            raise requests.exceptions.ConnectionError(POOL)
        response = requests.Response()
        response.status_code = failure
        raise KaggleApiHTTPError(f"{failure} Client Error.\n\nResource at URL ...", response)

    monkeypatch.setattr(kagglehub, "dataset_download", download)
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        if credentials:
            monkeypatch.setenv(key, "someone")
        else:
            monkeypatch.delenv(key, raising=False)
    layout = Layout("x", tmp_path / "data", tmp_path / "reports")
    with pytest.raises(SourceError) as err:
        resolve_source("kaggle:o/diamonds", layout)
    message = str(err.value)
    assert message.startswith("could not download Kaggle dataset 'o/diamonds': ")
    assert says in message, message
    assert "\n" not in message and "HTTPSConnectionPool" not in message and "URL" not in message


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
    (sample / ".manifest.parquet.123.x1y2.tmp").write_bytes(b"PAR1")  # a write in flight
    second = ingest("sample", layout)
    assert len(first) == len(second) == 6 and (second["status"] == "ok").all()
    other = Layout("sample", tmp_path / "elsewhere", tmp_path / "reports")
    assert len(ingest("sample", other)) == 6  # another data root still finds the sample
