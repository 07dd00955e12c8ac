"""The fault matrix (docs/faults.md, "Faults survived"): each test provokes one fault for real — odd
file names, damaged caches, SIGKILL mid-stage, a full disk, files changing under a run — and
checks the kit's promise: a clear line or a recorded skip, nothing lost, re-runs equal.

Faults in a running stage land at named fault points (:mod:`embedscope.faults`) the stage
passes, never after a guessed sleep: a stage armed with ``kill`` dies exactly there; one armed
with ``wait`` stops there until the test, having seen it arrive, opens its :class:`Gate`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Gate, make_classes, png_bytes, tiny_vit

from embedscope.analyse import analyse
from embedscope.embed import embed
from embedscope.embed.pixels import NOT_AS_INGESTED
from embedscope.explore import write_explorer
from embedscope.faults import ENV as FAULT
from embedscope.faults import POINTS, fault_point
from embedscope.images import NOT_NOW, decoder_identity
from embedscope.ingest import SourceError, ingest, load_manifest
from embedscope.layout import Layout, load_checked, os_path, update_metrics, write_json
from embedscope.reduce import project
from embedscope.store import load_embeddings, shard_digest
from embedscope.tables import image_table
from embedscope.thumbs import ThumbnailCache, read_thumbnails, thumbnail_cell, thumbnail_facts

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_vit(tmp_path_factory.mktemp("model") / "vit"))


def _dataset(tmp_path: Path, name: str = "tiny", per_class: int = 4, size: int = 48) -> Layout:
    images = tmp_path / "images"
    if not images.exists():
        make_classes(images, per_class=per_class, size=size)
    layout = Layout(name, tmp_path / "data", tmp_path / "reports")
    ingest(str(images), layout)
    return layout


def _embed(layout: Layout, model: str, **kw) -> dict:
    """float32 everywhere, so in-process and subprocess runs share one model folder; shards
    of 4 images, so a dataset has several."""
    kw = {"batch_size": 4, "shard_size": 4, **kw}
    return embed(layout, model, precision="fp32", progress=False, **kw)


def _shards(layout: Layout) -> list[Path]:
    return sorted((layout.data_dir / "embeddings").rglob("shards/*.npz"))


def _set_aside(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.damaged-*"))


def _litter(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


Stage = Callable[..., subprocess.Popen]


@pytest.fixture()
def stage() -> Iterator[Stage]:
    """``stage(script, *args, fault=None, **popen)``: a stage in a new Python process, in its own
    process group (a SIGKILL of the group takes any worker it started), with ``fault`` as its
    ``EMBEDSCOPE_FAULT``; any still running when the test ends is killed."""
    started: list[subprocess.Popen] = []

    def start(script: str, *args: object, fault: str | None = None, **popen) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != FAULT}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            start_new_session=True,
            env=env | {FAULT: fault} if fault else env,
            **popen,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it had finished already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _killed_at_its_point(proc: subprocess.Popen) -> None:
    """The stage SIGKILLed itself at its armed point (nothing else here sends SIGKILL)."""
    assert proc.wait(timeout=300) == -signal.SIGKILL, "the stage never reached its fault point"


def test_the_matrix_names_points_the_stages_pass_and_tests_make_test_faults_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = (ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    matrix = page.split("## Faults survived", 1)[1].split("\n## ", 1)[0]
    rows = [r.split(" | ") for r in matrix.splitlines() if r.startswith("| ") and "---" not in r]
    assert rows[0][:3] == ["| fault", "fault point", "what the kit does"], rows[0]
    named = {p for row in rows[1:] for p in re.findall(r"`([a-z]+:[a-z]+)(?:@\d+)?`", row[1])}
    assert named == set(POINTS)
    source = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "src" / "embedscope").rglob("*.py")
        if p.name != "faults.py"
    )
    # each passed by a stage, directly or by an atomic write, and no stage passes another
    assert set(re.findall(r"(?:fault_point\(|point=)\"([a-z]+:[a-z]+)\"", source)) == set(POINTS)
    for row in rows[1:]:  # each row's tests exist and carry the mark `make test-faults` selects
        tests = re.findall(r"`(?:(test_\w+\.py)::)?(test_\w+)`", row[-1])
        assert tests, row[0]
        for file, name in tests:
            text = (ROOT / "tests" / (file or "test_faults.py")).read_text(encoding="utf-8")
            before, found, _ = text.partition(f"\ndef {name}(")
            assert found, f"{file or 'test_faults.py'}::{name} does not exist"
            decorators = before.rsplit("\n\n\n", 1)[-1]
            marked = "\npytestmark = pytest.mark.faults\n" in text
            assert marked or "@pytest.mark.faults" in decorators.splitlines(), f"{name} unmarked"
    monkeypatch.setenv(FAULT, "projection:fits=kill")  # a typo: one line, at the first point
    with pytest.raises(ValueError, match=r"^EMBEDSCOPE_FAULT='projection:fits=kill' is not .*"):
        fault_point("explorer:write")


# --- file names the OS can hold ---------------------------------------------------------------

ODD_NAMES = {  # bytes on disk -> the manifest's text
    b"odd/\xff\xfe.png": "odd/\\xff\\xfe.png",
    b"odd/new\nline.png": "odd/new\\x0aline.png",
    b"odd/-rf.png": "odd/-rf.png",
    b"odd/--help.png": "odd/--help.png",
    b"odd/" + b"n" * 251 + b".png": "odd/" + "n" * 251 + ".png",
    b"odd/back\\slash.png": "odd/back\\\\slash.png",
    b"cl\xe9s/latin1.png": "cl\\xe9s/latin1.png",
}


def test_any_file_name_is_embedded_and_shown_as_text(tmp_path: Path, vit: str) -> None:
    """Crash 1 of issue 14: a name with the bytes \\xff\\xfe ended 01_download (ingest) with
    UnicodeEncodeError. Every name the OS can hold now goes through as escaped text."""
    images = make_classes(tmp_path / "images", per_class=2)
    for k, name in enumerate(ODD_NAMES):
        path = os.path.join(os.fsencode(images), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(png_bytes(colour=(k * 30, 255 - k * 30, 7)))
    layout = Layout("odd", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(images), layout)
    odd = manifest[~manifest["label"].isin(["red", "green", "blue"])]
    assert set(odd["path"]) == set(ODD_NAMES.values())
    assert (odd["status"] == "ok").all(), odd[["path", "reason"]]
    assert "cl\\xe9s" in set(odd["label"])
    for text, raw in zip(ODD_NAMES.values(), ODD_NAMES, strict=True):
        assert os.fsencode(os_path(images, text)) == os.path.join(os.fsencode(images), raw)

    facts = _embed(layout, vit)
    assert facts["images"] == len(manifest) and facts["skipped_files"] == []
    points, _ = project(layout, "pca", 2)
    out = write_explorer(points, images, layout.explorer)
    page = out.read_text(encoding="utf-8")
    assert json.dumps("odd/\\xff\\xfe.png") in page and "\n" not in "".join(points["path"])
    table = image_table(points[points["path"].isin(ODD_NAMES.values())], images)._repr_html_()
    assert "unreadable" not in table and table.count("<img") == len(ODD_NAMES)


def test_a_named_pipe_among_the_images_is_skipped_not_waited_on(tmp_path: Path) -> None:
    images = make_classes(tmp_path / "images", per_class=2)
    os.mkfifo(images / "red" / "pipe.png")
    manifest = ingest(str(images), Layout("pipe", tmp_path / "data", tmp_path / "reports"))
    row = manifest.set_index("path").loc["red/pipe.png"]
    assert (row["status"], row["reason"]) == (
        "skipped",
        "not a regular file (named pipe, device or socket)",
    )
    assert (manifest["status"] == "ok").sum() == 6


# --- damaged caches ----------------------------------------------------------------------------


def test_truncated_shard_is_set_aside_and_its_images_embedded_again(
    tmp_path: Path, vit: str, capfd: pytest.CaptureFixture
) -> None:
    """Crash 2 of issue 14: a truncated shard made every later 02_embed end with BadZipFile."""
    layout = _dataset(tmp_path)
    _embed(layout, vit)
    before = np.array(load_embeddings(layout).vectors)
    victim = _shards(layout)[1]
    with np.load(victim) as shard:
        lost = len(shard["sha256"])
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    again = _embed(layout, vit)
    said = [line for line in capfd.readouterr().err.splitlines() if "damaged" in line]
    assert len(said) == 1 and victim.name in said[0] and "set aside" in said[0]
    assert again["embedded_now"] == lost and again["images"] == 12
    (kept,) = _set_aside(victim.parent)
    assert kept.read_bytes() == data[: len(data) // 2]  # renamed, never deleted
    np.testing.assert_allclose(load_embeddings(layout).vectors, before, atol=1e-6)


def _rewrite(path: Path, change: Callable[[dict], None], *, redigest: bool) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    if redigest:  # a shard whose digest agrees with contents that are still wrong
        arrays["digest"] = np.array(shard_digest(arrays))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


TAMPERING = {
    "vectors edited": (lambda a: a["vectors"].__setitem__((0, 0), 9.0), False),
    "a hash dropped": (lambda a: a.update(sha256=a["sha256"][:-1]), True),
    "other dimension": (lambda a: a.update(vectors=a["vectors"][:, :-1].copy()), True),
    "another model's": (lambda a: a.update(model_key=np.array("other-123456789abc")), True),
    "not a sha256": (lambda a: a["sha256"].__setitem__(0, "z" * 64), True),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_a_shard_that_does_not_hold_what_it_claims_is_refused(
    tmp_path: Path, vit: str, how: str
) -> None:
    layout = _dataset(tmp_path)
    _embed(layout, vit)
    before = np.array(load_embeddings(layout).vectors)
    change, redigest = TAMPERING[how]
    shard = _shards(layout)[0]
    with np.load(shard) as held:  # a shard's size follows the stream's batches (1 to 7 here)
        images = len(held["sha256"])
    _rewrite(shard, change, redigest=redigest)
    again = _embed(layout, vit)
    assert again["embedded_now"] == images and len(_set_aside(layout.data_dir)) == 1
    np.testing.assert_allclose(load_embeddings(layout).vectors, before, atol=1e-6)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 7)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rerun(layout: Layout, vit: str, first: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The stages again from notebook ``first`` ("01" or "03"), as ``make run-all`` would."""
    if first == "01":
        ingest(str(layout.data_root.parent / "images"), layout)
        assert _embed(layout, vit)["embedded_now"] == 0  # shards still good
    coords, _ = project(layout, "pca", 3)
    near = analyse(layout, k=3).neighbors
    update_metrics(layout.metrics, "faults", {"ok": True})
    return coords, near


CACHE_FILES = {  # file -> how it is damaged, and which notebook the re-run starts from
    "manifest.parquet": (_garbage, "01"),
    "source.json": (_truncate, "01"),
    "embeddings/index.json": (_truncate, "01"),
    "embeddings/*/vectors.npy": (_truncate, "01"),
    "embeddings/*/rows.parquet": (_garbage, "03"),  # rebuilt from shards, no model needed
    "projections/*/*.parquet": (_garbage, "03"),
    "projections/*/*.json": (_truncate, "03"),
    "analysis/*/neighbors.npz": (_truncate, "03"),
    "metrics.json": (_truncate, "03"),
}


@pytest.mark.parametrize("pattern", CACHE_FILES)
def test_a_damaged_cache_file_is_set_aside_and_rebuilt(
    tmp_path: Path, vit: str, pattern: str, capfd: pytest.CaptureFixture
) -> None:
    layout = _dataset(tmp_path)
    _embed(layout, vit)
    coords, near = _rerun(layout, vit, "03")
    folder = layout.reports_dir if pattern == "metrics.json" else layout.data_dir
    (victim,) = folder.glob(pattern)
    damage, first = CACHE_FILES[pattern]
    damage(victim)
    capfd.readouterr()
    coords2, near2 = _rerun(layout, vit, first)
    said = [line for line in capfd.readouterr().err.splitlines() if "damaged" in line]
    assert len(said) == 1 and str(victim) in said[0], said
    assert len(_set_aside(folder)) == 1 and victim.exists()
    pd.testing.assert_frame_equal(coords2, coords)
    np.testing.assert_array_equal(near2, near)


def test_a_damaged_manifest_stops_a_later_stage_with_one_sentence(tmp_path: Path, vit: str) -> None:
    layout = _dataset(tmp_path)
    _garbage(layout.manifest)
    with pytest.raises(SourceError, match=r"^no usable manifest at .*: run 01_download for"):
        _embed(layout, vit)
    assert len(_set_aside(layout.data_dir)) == 1


def test_a_damaged_thumbnail_chunk_is_set_aside_and_its_cells_made_again(tmp_path: Path) -> None:
    layout = _dataset(tmp_path)
    images = tmp_path / "images"
    manifest, _ = load_manifest(layout)
    ok = manifest[manifest["status"] == "ok"].reset_index(drop=True)
    points = pd.DataFrame({"x": np.arange(len(ok), dtype=float), "y": 0.0})
    points = points.assign(path=ok["path"], sha256=ok["sha256"])
    want = [thumbnail_cell(os_path(images, p), 64) for p in ok["path"]]
    (chunk,) = layout.thumbs.glob("*.cells")
    flipped = bytearray(chunk.read_bytes())
    flipped[-5] ^= 0xFF  # inside the last cell: the index still reads, the cell's CRC fails
    chunk.write_bytes(bytes(flipped))
    for damage in ("a changed cell", "a truncated chunk"):
        page = write_explorer(
            points, images, tmp_path / "e.html", thumbnails=ThumbnailCache(layout)
        )
        assert _page_thumbs(page) == list(range(len(ok))), damage
        assert len(_set_aside(layout.thumbs)) == 1 + (damage == "a truncated chunk"), damage
        facts = thumbnail_facts(layout)
        assert facts["cells"] == facts["from_originals"] == len(ok), damage
        for got, cell in zip(read_thumbnails(layout, ok["sha256"].tolist()), want, strict=True):
            assert np.abs(np.asarray(got, float) - np.asarray(cell, float)).mean() < 12
        (chunk,) = layout.thumbs.glob("*.cells")
        _truncate(chunk)


def _page_thumbs(page: Path) -> list[int]:
    """Each point's cell number in a written page (a list, or a typed array in base64)."""
    text = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="es-data">(.*?)</script>', text, re.S).group(1))
    thumb = data["thumb"]
    if isinstance(thumb, dict):
        return np.frombuffer(base64.b64decode(thumb["b64"]), "<" + thumb["dtype"]).tolist()
    return thumb


# --- files that change or vanish under a run ---------------------------------------------------


def test_a_file_changed_after_ingest_is_never_cached_under_its_old_hash(
    tmp_path: Path, vit: str
) -> None:
    layout = _dataset(tmp_path)
    images = tmp_path / "images"
    changed, gone = images / "red" / "red_0.png", images / "green" / "green_0.png"
    old_sha = load_manifest(layout)[0].set_index("path").loc["red/red_0.png", "sha256"]
    changed.write_bytes(png_bytes(colour=(1, 2, 3)))  # a valid image, other bytes
    kept = gone.read_bytes(), gone.stat()
    gone.unlink()
    facts = _embed(layout, vit)
    reasons = {s["path"]: s["reason"] for s in facts["skipped_files"]}
    assert set(reasons) == {"red/red_0.png", "green/green_0.png"}
    assert all(r.startswith(NOT_AS_INGESTED) for r in reasons.values())
    for shard in _shards(layout):
        with np.load(shard) as z:
            assert old_sha not in z["sha256"] and old_sha not in z["failed_sha256"]
    gone.write_bytes(kept[0])  # the vanished file comes back as it was
    os.utime(gone, ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))
    assert _embed(layout, vit)["embedded_now"] == 1  # the skip was not cached
    ingest(str(images), layout)  # the changed file, hashed again
    facts = _embed(layout, vit)
    assert facts["embedded_now"] == 1 and facts["images"] == 12 and not facts["skipped_files"]


_EMBED = """
import sys
from embedscope.embed import embed
from embedscope.layout import DiskFull, Layout
try:
    embed(Layout(sys.argv[1], sys.argv[2], sys.argv[3]), sys.argv[4], batch_size=4,
          shard_size=int(sys.argv[5]), num_workers=0, progress=False, precision="fp32")
except DiskFull as exc:
    print(exc, flush=True)
    sys.exit(3)
"""


def test_a_source_that_disappears_mid_run_is_skipped_then_resumed(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    layout = _dataset(tmp_path, "gone", per_class=20)
    images, away = tmp_path / "images", tmp_path / "moved-away"
    gate = Gate(tmp_path / "gate")  # no workers: the run decodes in order, in its own process
    proc = stage(
        _EMBED, "gone", layout.data_root, layout.reports_root, vit, 4,
        fault=gate.arm("embed:decode@5"),
    )  # fmt: skip
    gate.reached(proc)  # four images decoded, the fifth next
    images.rename(away)  # an unmounted share, a moved folder
    gate.open()
    assert proc.wait(timeout=300) == 0, "the run must finish, not crash"
    (facts_path,) = (layout.data_dir / "embeddings").glob("*/embed.json")
    skipped = json.loads(facts_path.read_text())["skipped_files"]
    assert len(skipped) == 56
    assert all(s["reason"].startswith(NOT_AS_INGESTED) for s in skipped)
    away.rename(images)
    facts = _embed(layout, vit)
    assert facts["embedded_now"] == len(skipped) and facts["images"] == 60


def test_concurrent_runs_both_finish_with_the_same_result(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    """Each run stops with its first shard in a temp file until both stand there: they
    provably overlap, and the later one's sweep of that folder kept the live writer's temp."""
    layout = _dataset(tmp_path, per_class=8)
    gates = [Gate(tmp_path / f"gate-{run}") for run in "ab"]
    args = "tiny", layout.data_root, layout.reports_root, vit, 2
    runs = [stage(_EMBED, *args, fault=gate.arm("shard:write")) for gate in gates]
    for gate, run in zip(gates, runs, strict=True):
        gate.reached(run)
    assert [run.poll() for run in runs] == [None, None] and len(_litter(layout.data_dir)) == 2
    for gate in gates:
        gate.open()
    assert [p.wait(timeout=300) for p in runs] == [0, 0]
    fresh = _dataset(tmp_path, "fresh", per_class=8)
    _embed(fresh, vit)
    a, b = load_embeddings(layout), load_embeddings(fresh)
    assert list(a.rows["sha256"]) == list(b.rows["sha256"])
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
    assert not _set_aside(tmp_path) and not _litter(tmp_path)


# --- failures that say nothing lasting about the file ------------------------------------------

_STAGE = """
import json, sys
from embedscope.embed import embed
from embedscope.ingest import ingest
from embedscope.layout import Layout
layout = Layout("perm", sys.argv[2], sys.argv[3])
if sys.argv[1] == "ingest":
    manifest = ingest(sys.argv[4], layout)
    print(json.dumps(dict(zip(manifest["path"], manifest["reason"]))))
else:
    facts = embed(layout, sys.argv[4], batch_size=4, shard_size=4, num_workers=0, progress=False)
    print(json.dumps({k: facts[k] for k in ("embedded_now", "images", "skipped_files")}))
"""


def _stage(*args: object) -> dict:
    """``_STAGE`` in a process where file permissions apply: as root, without the capabilities
    that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a file with mode
    000 really raises EACCES, as it does for any other user."""
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("as root this test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps]
    cmd = [*prefix, sys.executable, "-c", _STAGE, *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_an_image_without_read_permission_is_skipped_this_run_and_embedded_the_next(
    tmp_path: Path, vit: str
) -> None:
    """Permission denied (like an I/O error or a MemoryError) is not a fact about the image:
    neither the manifest nor the shards (calibration batch included) may keep it."""
    images = make_classes(tmp_path / "images", per_class=4)
    data, reports = tmp_path / "data", tmp_path / "reports"
    victim = images / "red" / "red_1.jpg"
    victim.chmod(0)
    reasons = _stage("ingest", data, reports, images)
    assert reasons["red/red_1.jpg"].startswith(NOT_NOW), reasons
    assert "Permission denied" in reasons["red/red_1.jpg"]
    victim.chmod(0o644)
    assert _stage("ingest", data, reports, images)["red/red_1.jpg"] == ""  # inspected again

    victim.chmod(0)  # readable when ingested, not when embedded (precision="auto" calibrates)
    facts = _stage("embed", data, reports, vit)
    (skipped,) = facts["skipped_files"]
    assert skipped["path"] == "red/red_1.jpg" and skipped["reason"].startswith(NOT_NOW)
    assert "Permission denied" in skipped["reason"] and facts["images"] == 11
    victim.chmod(0o644)
    facts = _stage("embed", data, reports, vit)
    assert facts["embedded_now"] == 1 and facts["images"] == 12 and not facts["skipped_files"]


def _corrupt_in_place(path: Path) -> None:
    """Bit rot: zeros over part of the image data, size and modification time unchanged."""
    st, data = path.stat(), bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 200] = bytes(200)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_corrupt_image_stays_cached_until_the_decoder_changes(tmp_path: Path, vit: str) -> None:
    images = make_classes(tmp_path / "images", per_class=4)
    truncated, rotten = images / "blue" / "blue_0.png", images / "red" / "red_2.png"
    _truncate(truncated)
    data, reports = tmp_path / "data", tmp_path / "reports"
    layout = Layout("perm", data, reports)
    reason = _stage("ingest", data, reports, images)["blue/blue_0.png"]
    assert reason.startswith("truncated or corrupt")
    truncated.chmod(0)  # were it read again, it would say "Permission denied"
    assert _stage("ingest", data, reports, images)["blue/blue_0.png"] == reason
    manifest = pd.read_parquet(layout.manifest)
    manifest["decoder"] = manifest["decoder"].str.replace("Pillow ", "Pillow 0.")
    manifest.to_parquet(layout.manifest)  # as an older Pillow judged it
    assert "Permission denied" in _stage("ingest", data, reports, images)["blue/blue_0.png"]
    truncated.chmod(0o644)
    _stage("ingest", data, reports, images)

    _corrupt_in_place(rotten)  # after ingest: the embedding stage finds it
    facts = _stage("embed", data, reports, vit)
    rotten_reason = {s["path"]: s["reason"] for s in facts["skipped_files"]}["red/red_2.png"]
    assert rotten_reason.startswith("truncated or corrupt") and facts["images"] == 10
    (holder,) = [p for p in _shards(layout) if len(np.load(p)["failed_sha256"])]
    assert str(np.load(holder)["decoder"]) == decoder_identity()
    rotten.chmod(0)
    facts = _stage("embed", data, reports, vit)  # cached: not read again
    assert facts["embedded_now"] == 0 and facts["skipped_files"][0]["reason"] == rotten_reason
    rotten.chmod(0o644)

    def format_1(arrays: dict) -> None:  # a shard written before failures named a decoder
        del arrays["decoder"]

    _rewrite(holder, format_1, redigest=True)
    shards = _shards(layout)
    facts = _stage("embed", data, reports, vit)  # its vectors kept, its failure tried again
    assert facts["embedded_now"] == 0 and facts["images"] == 10
    (new,) = set(_shards(layout)) - set(shards)
    assert list(np.load(new)["failed_reason"]) == [rotten_reason]
    _stage("embed", data, reports, vit)
    assert len(_shards(layout)) == len(shards) + 1  # tried once, then cached again


def test_a_loader_bug_is_raised_not_taken_for_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "vectors.npy"
    np.save(path, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError):  # an API change, say: the file is fine
        load_checked(path, lambda p: np.load(p, mmap_mode="r", no_such_option=1))
    assert path.exists() and not _set_aside(tmp_path)
    _truncate(path)
    assert load_checked(path, lambda p: np.load(p, mmap_mode="r")) is None
    assert len(_set_aside(tmp_path)) == 1


# --- SIGKILL at every stage --------------------------------------------------------------------

_INGEST = """
import sys
from embedscope.ingest import ingest
from embedscope.layout import Layout
ingest(sys.argv[1], Layout("scan", sys.argv[2], sys.argv[3]), workers=1)
"""


def _grown_folder(tmp_path: Path) -> tuple[Path, Layout, bytes]:
    """A folder with a manifest, then 9 more images in it: the re-scan inspects those 9."""
    images = make_classes(tmp_path / "images", per_class=4)
    layout = Layout("scan", tmp_path / "data", tmp_path / "reports")
    ingest(str(images), layout)
    make_classes(images / "more", per_class=3, seed=1)
    return images, layout, layout.manifest.read_bytes()


def test_killed_during_the_manifest_scan_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, stage: Stage
) -> None:
    images, layout, before = _grown_folder(tmp_path)
    proc = stage(
        _INGEST, images, layout.data_root, layout.reports_root, fault="ingest:inspect@4=kill"
    )
    _killed_at_its_point(proc)  # reading the 4th new image
    assert layout.manifest.read_bytes() == before and not _litter(tmp_path)
    rerun = ingest(str(images), layout)
    fresh = ingest(str(images), Layout("fresh", layout.data_root, layout.reports_root))
    assert len(fresh) == 21
    pd.testing.assert_frame_equal(rerun, fresh)
    assert not _litter(tmp_path)


_INGEST_CELLS = """
import sys
import embedscope.thumbs
from embedscope.ingest import ingest
from embedscope.layout import Layout
embedscope.thumbs.CHUNK_CELLS = 4  # several chunks from a few images
ingest(sys.argv[1], Layout("cells", sys.argv[2], sys.argv[3]), workers=1)
"""


def test_killed_during_the_thumbnail_cache_write_leaves_no_poisoned_cache(
    tmp_path: Path, stage: Stage
) -> None:
    images = make_classes(tmp_path / "images", per_class=4)
    layout = Layout("cells", tmp_path / "data", tmp_path / "reports")
    args = (images, layout.data_root, layout.reports_root)
    _killed_at_its_point(stage(_INGEST_CELLS, *args, fault="thumbs:write@2=kill"))
    assert len(list(layout.thumbs.glob("*.cells"))) == 1, "the first chunk, complete"
    assert len(_litter(layout.thumbs)) == 1 and not layout.manifest.exists()
    manifest = ingest(str(images), layout)
    assert not _litter(tmp_path)
    ok = manifest[manifest["status"] == "ok"]
    facts = thumbnail_facts(layout)
    assert facts["cells"] == len(ok) and facts["from_originals"] == 0, "each cell once"
    for path, got in zip(ok["path"], read_thumbnails(layout, ok["sha256"].tolist()), strict=True):
        want = np.asarray(thumbnail_cell(os_path(images, path), 64), float)
        assert np.abs(np.asarray(got, float) - want).mean() < 12, path


_PROJECT = """
import sys
from embedscope.layout import Layout
from embedscope.reduce import project
project(Layout("tiny", sys.argv[1], sys.argv[2]), "umap", 2)
"""


@pytest.mark.parametrize(
    "point, left",  # what the killed run left complete
    [("projection:fit", []), ("projection:write", []), ("projection:write@2", [".parquet"])],
)
def test_killed_during_a_projection_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, vit: str, stage: Stage, point: str, left: list[str]
) -> None:
    """Killed as UMAP starts its fit, with the coordinates complete in their temp file, or with
    the coordinates in place and their facts in a temp file: nothing is reused."""
    layout = _dataset(tmp_path)
    _embed(layout, vit)
    proc = stage(_PROJECT, layout.data_root, layout.reports_root, fault=f"{point}=kill")
    _killed_at_its_point(proc)
    written = [p for p in (layout.data_dir / "projections").rglob("*") if p.is_file()]
    assert len(_litter(layout.data_dir)) == (point != "projection:fit")  # the dead writer's
    assert sorted(p.suffix for p in written if p.suffix != ".tmp") == left
    rerun, facts = project(layout, "umap", 2)
    assert not facts["cached"]
    fresh = _dataset(tmp_path, "fresh")
    _embed(fresh, vit)
    uninterrupted, _ = project(fresh, "umap", 2)
    np.testing.assert_allclose(rerun[["x", "y"]], uninterrupted[["x", "y"]], atol=1e-4)
    assert not _litter(tmp_path)


_EXPLORE = """
import sys
import pandas as pd
from embedscope.explore import write_explorer
from embedscope.layout import DiskFull
limit = {"inline_limit": int(sys.argv[4])} if len(sys.argv) > 4 else {}
try:
    write_explorer(pd.read_parquet(sys.argv[1]), sys.argv[2], sys.argv[3], title="t", **limit)
except DiskFull as exc:
    print(exc, flush=True)
    sys.exit(3)
"""


def _explorer_case(tmp_path: Path, vit: str) -> tuple[Path, Path, Path]:
    """Projected points in a file a subprocess can read, their images, and an explorer.html
    that a previous run left."""
    layout = _dataset(tmp_path)
    _embed(layout, vit)
    coords, _ = project(layout, "pca", 3)
    points = layout.data_dir / "points.parquet"
    coords.to_parquet(points)
    out = layout.reports_dir / "explorer.html"
    out.parent.mkdir(parents=True)
    out.write_text("the previous explorer")
    return points, tmp_path / "images", out


_PANEL = """
import sys
import pandas as pd
from embedscope.explore.live import LiveExplorer
live = LiveExplorer(pd.read_parquet(sys.argv[1]), sys.argv[2], decisions_file=sys.argv[3])
live.decisions_csv = sys.argv[4]
"""


def test_a_kernel_killed_while_the_panel_writes_decisions_keeps_the_kept_file(
    tmp_path: Path, stage: Stage
) -> None:
    """The JupyterLab panel's kernel killed with the merged decisions complete in their temp
    file: the kept decisions.csv stays whole (the earlier rounds'), and the next change
    writes the merge an uninterrupted kernel writes."""
    images = make_classes(tmp_path / "images", per_class=2)
    rels = sorted(str(p.relative_to(images)) for p in images.rglob("*.png"))
    points = pd.DataFrame({"x": np.arange(len(rels), dtype=float), "y": 0.0, "path": rels})
    points.to_parquet(tmp_path / "points.parquet")
    kept = tmp_path / "data" / "decisions.csv"
    kept.parent.mkdir()
    before = "path,label,tags\nearlier.png,,drop\n"
    kept.write_text(before)
    change = f"path,label,tags\n{rels[0]},cat,\n{rels[1]},,drop\n"
    args = (tmp_path / "points.parquet", images, kept, change)
    _killed_at_its_point(stage(_PANEL, *args, fault="decisions:write=kill"))
    assert kept.read_text() == before  # never half a file
    assert len(_litter(kept.parent)) == 1  # the dead writer's complete temp file
    from embedscope.explore.live import LiveExplorer

    live = LiveExplorer(points, images, decisions_file=kept)
    live.decisions_csv = change
    merged = sorted(["earlier.png,,drop", f"{rels[0]},cat,", f"{rels[1]},,drop"])
    assert kept.read_text() == "path,label,tags\n" + "".join(f"{r}\n" for r in merged)
    assert not _litter(kept.parent)


def test_killed_during_the_explorer_write_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    points, images, out = _explorer_case(tmp_path, vit)
    proc = stage(_EXPLORE, points, images, out, fault="explorer:write=kill")
    _killed_at_its_point(proc)  # the new page complete in its temp file, not yet in place
    (temp,) = _litter(tmp_path)
    new_page = temp.read_bytes()
    assert out.read_text() == "the previous explorer"  # never half a page
    rerun = write_explorer(pd.read_parquet(points), images, out, title="t")
    fresh = write_explorer(pd.read_parquet(points), images, tmp_path / "fresh.html", title="t")
    assert new_page == fresh.read_bytes() == rerun.read_bytes()
    assert not _litter(tmp_path)


def _page_files(out: Path) -> dict[str, bytes]:
    """The files of ``out``'s -files folder that the page names (its sheets' stem)."""
    (stem,) = set(re.findall(r'"explorer-files/thumbs/([0-9a-f]{8}-)\d+\.webp"', out.read_text()))
    sheets = (out.parent / "explorer-files" / "thumbs").iterdir()
    return {p.name: p.read_bytes() for p in sheets if p.name.startswith(stem)}


def test_a_folder_page_killed_while_replaced_keeps_showing_its_own_pictures(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    """A page above inline_limit keeps its sheets beside it: the new page's sheets are named
    apart, so until the new page is in place the old one still finds its own pictures."""
    points, images, out = _explorer_case(tmp_path, vit)
    pts = pd.read_parquet(points)
    old = pts.iloc[::-1].reset_index(drop=True)  # other order: other sheets under the same names
    write_explorer(old, images, out, title="t", inline_limit=0)
    page, shown = out.read_bytes(), _page_files(out)
    proc = stage(_EXPLORE, points, images, out, 0, fault="explorer:write=kill")
    _killed_at_its_point(proc)
    assert out.read_bytes() == page and _page_files(out) == shown
    write_explorer(pts, images, out, title="t", inline_limit=0)
    folder = out.parent / "explorer-files"
    assert set(_page_files(out)) == {p.name for p in (folder / "thumbs").iterdir()}
    assert not _litter(tmp_path)
    write_explorer(pts, images, out, title="t")  # one file again: the folder goes
    assert not folder.exists()


def test_the_temp_file_of_a_writer_killed_mid_write_is_swept_by_the_next_write(
    tmp_path: Path, stage: Stage
) -> None:
    """Killed with the new manifest complete in its temp file: the old one is kept as it was;
    the temp, named after a dead writer, goes with the next write into that folder."""
    images, layout, before = _grown_folder(tmp_path)
    proc = stage(
        _INGEST, images, layout.data_root, layout.reports_root, fault="manifest:write=kill"
    )
    _killed_at_its_point(proc)
    (temp,) = _litter(tmp_path)
    assert temp.parent == layout.data_dir and layout.manifest.read_bytes() == before
    fresh = ingest(str(images), Layout("fresh", layout.data_root, layout.reports_root))
    pd.testing.assert_frame_equal(pd.read_parquet(temp), fresh)  # killed after the write
    write_json(layout.data_dir / "any.json", {})  # any later write in the folder
    assert not _litter(tmp_path) and layout.manifest.read_bytes() == before


# --- a full disk -------------------------------------------------------------------------------


def _file_size_limit(limit: int) -> Callable[[], None]:
    """Simulates a full disk with RLIMIT_FSIZE (no privileges needed, unlike a small tmpfs):
    with SIGXFSZ ignored, a write past ``limit`` bytes fails with EFBIG as ENOSPC would."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_embedding_says_where_and_how_much_then_resumes(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    fresh = _dataset(tmp_path, "fresh", per_class=14)
    _embed(fresh, vit)
    shard = max(p.stat().st_size for p in _shards(fresh))
    vectors = next((fresh.data_dir / "embeddings").glob("*/vectors.npy")).stat().st_size
    assert shard < vectors, "the limit must let shards through and stop vectors.npy"
    layout = _dataset(tmp_path, "full", per_class=14)
    proc = stage(
        _EMBED, "full", layout.data_root, layout.reports_root, vit, 4,
        stdout=subprocess.PIPE, text=True, preexec_fn=_file_size_limit((shard + vectors) // 2),
    )  # fmt: skip
    said, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3
    (out_dir,) = (layout.data_dir / "embeddings").glob("*-*")
    assert said.strip().splitlines() == [said.strip()]
    assert said.startswith(f"no room to write vectors.npy in {out_dir}: it needs about ")
    assert not (out_dir / "vectors.npy").exists() and not _litter(tmp_path)
    resumed = _embed(layout, vit)  # space freed
    assert resumed["embedded_now"] == 0 and resumed["from_cache"] == 42
    np.testing.assert_allclose(
        load_embeddings(layout).vectors, load_embeddings(fresh).vectors, atol=1e-6
    )


def test_a_full_disk_while_writing_the_explorer_keeps_the_old_page(
    tmp_path: Path, vit: str, stage: Stage
) -> None:
    points, images, out = _explorer_case(tmp_path, vit)
    proc = stage(
        _EXPLORE, points, images, out,
        stdout=subprocess.PIPE, text=True, preexec_fn=_file_size_limit(50_000),
    )  # fmt: skip
    said, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, said
    assert said.startswith(f"no room to write explorer.html in {out.parent}: it needs about ")
    assert out.read_text() == "the previous explorer" and not _litter(tmp_path)
    page = write_explorer(pd.read_parquet(points), images, out, title="t")
    assert page.stat().st_size > 50_000
