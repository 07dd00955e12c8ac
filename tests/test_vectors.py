"""Your own vectors (VECTORS=): one sentence per bad file, and a run that embeds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import COLOURS, make_classes

from embedscope.cli import main
from embedscope.ingest import discover
from embedscope.points import SCHEMA
from embedscope.vectors import VectorsError, paths_file, read_vectors

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _class_vectors(paths: list[str], dim: int = 16, seed: int = 0) -> np.ndarray:
    """One tight cluster per class folder: what a good model's vectors look like."""
    rng = np.random.default_rng(seed)
    centres = {label: rng.normal(0, 1, dim) for label in COLOURS}
    return np.stack([centres[p.split("/")[0]] + rng.normal(0, 0.05, dim) for p in paths]).astype(
        np.float32
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_classes(tmp_path / "imgs", per_class=4)


def _parquet(path: Path, paths: list[str], vectors: list) -> Path:
    pd.DataFrame({"path": paths, "vector": vectors}).to_parquet(path)
    return path


def test_a_good_parquet_and_npy_pair_are_read_in_row_order(folder: Path, tmp_path: Path) -> None:
    paths = discover(folder)
    vecs = _class_vectors(paths)
    got = read_vectors(_parquet(tmp_path / "v.parquet", paths, list(vecs)), folder)
    assert got.paths == paths and got.dim == 16 and np.array_equal(got.vectors, vecs)
    np.save(tmp_path / "v.npy", vecs)
    paths_file(tmp_path / "v.npy").write_text("\n".join(paths) + "\n", encoding="utf-8")
    assert np.array_equal(read_vectors(tmp_path / "v.npy", folder).vectors, vecs)


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        ("dimension", "mixes dimensions: 1 vector of 15 values beside 16 ('blue/blue_1.jpg')"),
        ("nan", "has NaN or infinite values in 1 vector: 'blue/blue_2.png'"),
        ("inf", "has NaN or infinite values in 1 vector: 'blue/blue_2.png'"),
        ("duplicate", "names 1 path more than once: 'blue/blue_0.png'"),
        ("not in folder", "names 1 path that the folder lacks: 'blue/elsewhere.png'"),
        ("not in file", "has no vector for 1 image of the folder: 'red/red_3.jpg'"),
    ],
)
def test_each_bad_file_gets_one_sentence(
    folder: Path, tmp_path: Path, fault: str, sentence: str
) -> None:
    paths = discover(folder)
    vecs = list(_class_vectors(paths))
    if fault == "dimension":
        vecs[1] = vecs[1][:15]
    if fault in ("nan", "inf"):
        vecs[2] = vecs[2].copy()
        vecs[2][3] = np.nan if fault == "nan" else np.inf
    if fault == "duplicate":
        paths[1] = paths[0]
    if fault == "not in folder":
        paths[1] = "blue/elsewhere.png"
    if fault == "not in file":
        paths, vecs = paths[:-1], vecs[:-1]
    with pytest.raises(VectorsError) as caught:
        read_vectors(_parquet(tmp_path / "bad.parquet", paths, vecs), folder)
    assert str(caught.value) == f"vectors file 'bad.parquet' {sentence}"


def test_an_npy_without_its_paths_file_is_refused(folder: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(VectorsError, match="needs its paths, one per line in row order"):
        read_vectors(tmp_path / "v.npy", folder)


def _run_all(source: Path, data: Path, reports: Path, vectors: Path) -> int:
    return main(
        [
            "run-all",
            "--source",
            str(source),
            "--notebooks-dir",
            str(NOTEBOOK_DIR),
            "--data-root",
            str(data),
            "--reports-root",
            str(reports),
            "--vectors",
            str(vectors),
        ]
    )


def test_a_bad_vectors_file_stops_run_all_before_any_notebook(
    folder: Path, tmp_path: Path, capfd
) -> None:
    paths = discover(folder)
    vecs = list(_class_vectors(paths))
    vecs[0] = vecs[0] * np.inf
    (tmp_path / "own").mkdir()
    bad = _parquet(tmp_path / "own" / "bad.parquet", paths, vecs)
    rc = _run_all(folder, tmp_path / "d", tmp_path / "r", bad)
    err = capfd.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0, err
    assert err.startswith("embedscope: error: vectors file 'bad.parquet' has NaN or infinite")
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()  # nothing written


def test_run_all_with_own_vectors_embeds_nothing_and_reports_as_usual(
    tmp_path: Path, capfd
) -> None:
    source = make_classes(tmp_path / "tiny set", per_class=12)  # > k=10 neighbours per class
    paths = discover(source)
    (tmp_path / "mine").mkdir()
    vectors = _parquet(tmp_path / "mine" / "own.parquet", paths, list(_class_vectors(paths)))
    data, reports = tmp_path / "data", tmp_path / "reports"
    rc = _run_all(source, data, reports, vectors)
    printed = capfd.readouterr()
    assert rc == 0, printed.err
    assert "[embedscope] 36 images with vectors from a file" in printed.out
    out = reports / "tiny-set"
    metrics = json.loads((out / "metrics.json").read_text())
    embed = metrics["embed"]
    assert embed["model"] == "[vectors]" and embed["vectors_file"] == "[vectors]"
    assert embed["dim"] == 16 and embed["images"] == 36 and embed["embedded_now"] == 0
    assert metrics["ingest"]["images"] == 36  # the images were still read (quality, thumbnails)
    assert metrics["knn_accuracy"] == 1.0  # the file's classes, not a model's
    points = pd.read_parquet(out / "points-pca-3d.parquet")
    assert list(points.columns) == list(SCHEMA) and len(points) == 36
    assert (out / "explorer.html").stat().st_size > 10_000
    assert any((data / "tiny-set" / "thumbs").rglob("*")), "thumbnails made by ingest"
    for path in out.rglob("*"):  # no machine directory, the vectors file's folder included
        if path.is_file():
            blob = path.read_bytes()
            assert str(tmp_path).encode() not in blob, path.name
    executed = (out / "02_embed.ipynb").read_text(encoding="utf-8")
    assert "[vectors]/own.parquet" in executed


def test_the_same_file_stored_again_adds_no_shard_and_excluded_images_need_no_vector(
    folder: Path, tmp_path: Path
) -> None:
    """Stored like an embedding run's: one shard, reused by a re-run; what ingest leaves out
    (``exclude``) needs no vector, before the run and in 02_embed."""
    from embedscope.ingest import ingest
    from embedscope.layout import Layout
    from embedscope.store import load_embeddings
    from embedscope.vectors import store_vectors

    kept = [p for p in discover(folder) if not p.startswith("red/")]
    vectors = _parquet(tmp_path / "v.parquet", kept, list(_class_vectors(kept)))
    with pytest.raises(VectorsError, match="has no vector for 4 images"):
        read_vectors(vectors, folder)
    read_vectors(vectors, folder, exclude=["red/*"])
    layout = Layout("mine", tmp_path / "data", tmp_path / "reports")
    ingest(str(folder), layout, exclude=["red/*"])
    for _ in range(2):
        facts = store_vectors(layout, vectors)
    shards = sorted((layout.data_dir / "embeddings").rglob("shards/*.npz"))
    assert len(shards) == 1 and facts["images"] == len(kept)
    assert load_embeddings(layout).rows["path"].tolist() == kept


def test_a_large_npy_is_stored_a_block_at_a_time_never_whole(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1M x 1,280 the vectors are 5 GB: storing them (shards, ``vectors.npy``) reads the
    memory-mapped file a block at a time; stacking them held two or three copies at once."""
    import tracemalloc

    from embedscope import store, vectors
    from embedscope.ingest import ingest
    from embedscope.layout import Layout
    from embedscope.store import load_embeddings, read_shards

    paths = discover(folder)
    vecs = _class_vectors(paths, dim=200_000)  # 12 images: 9.6 MB, the blocks one row each
    np.save(tmp_path / "v.npy", vecs)
    paths_file(tmp_path / "v.npy").write_text("\n".join(paths) + "\n", encoding="utf-8")
    layout = Layout("big", tmp_path / "data", tmp_path / "reports")
    ingest(str(folder), layout)
    for name, at in ((vectors, "CHECK_ROWS"), (vectors, "SHARD_ROWS"), (store, "COPY_BLOCK")):
        monkeypatch.setattr(name, at, 1, raising=False)  # (new) block sizes
    tracemalloc.start()
    try:
        facts = vectors.store_vectors(layout, tmp_path / "v.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < vecs.nbytes / 2, f"peak {peak / 1e6:.1f} MB for {vecs.nbytes / 1e6:.1f} MB"
    got = load_embeddings(layout)
    assert facts["images"] == len(paths) and isinstance(got.vectors, np.memmap)
    order = [paths.index(p) for p in got.rows["path"]]
    assert np.array_equal(np.asarray(got.vectors), vecs[order])
    shards = sorted((layout.data_dir / "embeddings").rglob("shards"))[0]
    stored, _ = read_shards(shards)
    assert len(list(shards.glob("*.npz"))) == len(paths) == len(stored)
    for sha, p in zip(got.rows["sha256"], got.rows["path"], strict=True):
        assert np.array_equal(stored[sha], vecs[paths.index(p)])
