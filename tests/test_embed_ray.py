"""The Ray Data engine on one local Ray (2 CPUs, started once for the module): same vectors as
the local engine, same cache, same skips, and a killed driver resumes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from helpers import killed_at, make_classes, tiny_vit

from embedscope.embed import embed, start_local_ray
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.store import load_embeddings


@pytest.fixture(scope="module")
def local_ray(builtin_cache: Path) -> Iterator[str]:
    """One local Ray for the module; its workers inherit the test model cache. Yields the
    address another driver process attaches to."""
    start_local_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_without_ray_installed_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout("x", tmp_path / "data", tmp_path / "reports")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    with pytest.raises(
        ImportError,
        match=r"^engine='ray' needs Ray.*`make ray`.*constraints\.txt -e '\.\[ray\]'\)$",
    ):
        embed(layout, engine="ray")
    with pytest.raises(ValueError, match="engine must be local or ray"):
        embed(layout, engine="spark")


def test_ray_auto_precision_is_decided_on_the_driver_and_applied_by_the_actors(
    tmp_path: Path, local_ray: str
) -> None:
    """A calibration sample smaller than the dataset: the actors embed the rest at the
    precision the driver chose, giving the local engine's vectors."""
    images = make_classes(tmp_path / "images", per_class=6)
    vit = str(tiny_vit(tmp_path / "vit"))
    local = Layout("local", tmp_path / "local" / "data", tmp_path / "local" / "reports")
    on_ray = Layout("on-ray", tmp_path / "ray" / "data", tmp_path / "ray" / "reports")
    ingest(str(images), local)
    ingest(str(images), on_ray)
    mine = embed(local, vit, progress=False, calibration_images=6)
    facts = embed(on_ray, vit, progress=False, calibration_images=6, engine="ray", concurrency=1)
    assert facts["precision"] == mine["precision"]
    # the same check but for the machine's load when each run's (single-batch) race ran
    same = lambda check: {k: v for k, v in check.items() if k != "race_load_per_core"}  # noqa: E731
    assert same(facts["precision_check"]) == same(mine["precision_check"])
    assert facts["embedded_now"] == 18 and facts["from_cache"] == 0
    a, b = load_embeddings(local), load_embeddings(on_ray)
    assert list(a.rows["sha256"]) == list(b.rows["sha256"])
    np.testing.assert_allclose(np.asarray(b.vectors), np.asarray(a.vectors), atol=1e-5)


def test_ray_vectors_equal_local_ones_skips_are_recorded_and_reruns_embed_nothing(
    tmp_path: Path, local_ray: str
) -> None:
    images = make_classes(tmp_path / "images", per_class=4)
    local = Layout("local", tmp_path / "data", tmp_path / "reports")
    on_ray = Layout("on-ray", tmp_path / "data", tmp_path / "reports")
    ingest(str(images), local)
    ingest(str(images), on_ray)
    victim = images / "green" / "green_1.jpg"
    # broken after the manifest said ok, keeping size and mtime (bit rot): the decoder, not the
    # changed-file check, must turn it into a recorded skip
    before, good = victim.stat(), victim.read_bytes()
    victim.write_bytes(good[:60] + bytes(len(good) - 60))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    mine = embed(local, progress=False, precision="fp32")
    facts = embed(on_ray, progress=False, precision="fp32", engine="ray", concurrency=1)
    assert facts["engine"] == "ray" and facts["ray_version"] == ray.__version__
    assert facts["model_key"] == mine["model_key"] and facts["precision"] == "fp32"
    assert facts["images"] == 11 and facts["embedded_now"] == 11
    assert facts["skipped_files"] == mine["skipped_files"]
    assert [s["path"] for s in facts["skipped_files"]] == ["green/green_1.jpg"]
    assert facts["skipped_files"][0]["reason"]  # the decoder's one-line reason
    a, b = load_embeddings(local), load_embeddings(on_ray)
    assert list(a.rows["sha256"]) == list(b.rows["sha256"]) and b.vectors.shape == (11, 1280)
    assert _cosine(np.asarray(a.vectors), np.asarray(b.vectors)).min() >= 0.9999
    vectors_file = on_ray.embeddings_dir(facts["model_key"]) / "vectors.npy"
    stamp = vectors_file.stat().st_mtime_ns
    again = embed(on_ray, progress=False, precision="fp32", engine="ray")
    assert again["embedded_now"] == 0 and again["from_cache"] == 12
    assert again["skipped_files"] == facts["skipped_files"]
    assert vectors_file.stat().st_mtime_ns == stamp  # nothing rewritten


_DRIVER = """
import sys
from embedscope.embed import embed, start_local_ray
from embedscope.layout import Layout
embed(Layout("big", sys.argv[1], sys.argv[2]), batch_size=4, shard_size=8, progress=False,
      precision="fp32", engine="ray", concurrency=1)
"""


@pytest.mark.faults
def test_a_killed_driver_resumes_to_the_uninterrupted_result(
    tmp_path: Path, local_ray: str
) -> None:
    images = make_classes(tmp_path / "big", per_class=20, size=64)
    data, reports = tmp_path / "data", tmp_path / "reports"
    layout = Layout("big", data, reports)
    ingest(str(images), layout)
    env = {**os.environ, "RAY_ADDRESS": local_ray}  # a second driver on the module's Ray
    # the one actor stops before its ninth batch: the driver gets at most eight (32 images, 4
    # shards; Ray hands them over a little later), and is killed once a shard is written
    partial = killed_at(_DRIVER, data, reports, "ray:embed@9", env, 1)
    assert 1 <= partial <= 4
    resumed = embed(layout, progress=False, precision="fp32", engine="ray", concurrency=1)
    assert resumed["from_cache"] == 8 * partial and resumed["images"] == 60
    assert resumed["embedded_now"] == 60 - resumed["from_cache"]
    fresh = Layout("fresh", data, reports)
    ingest(str(images), fresh)
    embed(fresh, progress=False, precision="fp32")
    a, b = load_embeddings(layout), load_embeddings(fresh)
    assert list(a.rows["sha256"]) == list(b.rows["sha256"])
    assert _cosine(np.asarray(a.vectors), np.asarray(b.vectors)).min() >= 0.9999
