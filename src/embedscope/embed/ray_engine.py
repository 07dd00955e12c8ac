"""Stage 2 on Ray Data: the same embedding step, spread over a Ray cluster (or a local Ray).

Only the engine changes. The cache check (:mod:`~embedscope.embed.plan`), the preprocessing
(:mod:`~embedscope.embed.pixels`), the pooled forward pass (:mod:`~embedscope.embed.encoder`),
the shards and the final ``vectors.npy`` + ``rows.parquet`` (:mod:`embedscope.store`) are the
local engine's, so every later stage, the cache and resume work unchanged:

* the images still to embed become a Ray Dataset of manifest rows (hash, path);
* decoding (draft-scale, to uint8 at the model's geometry) runs in Ray tasks (``map_batches``
  with a function); a file that fails to decode becomes a row carrying its reason, never an
  error;
* the model runs in an actor pool (``ActorPoolStrategy``) through the local engine's
  :class:`~embedscope.embed.encoder.Encoder` (normalised on the actor's device, at the precision
  ``plan`` chose on the driver): one model per actor, one GPU per actor when the cluster
  has GPUs. On a CPU-only Ray both steps ask for the same resources, so
  Ray Data fuses them into the actors (no pixels travel between processes);
* the driver streams the vectors back and writes them in shards as they come, so a killed
  driver resumes from its last complete shard.

Images (and a model given as a folder) must be readable at the same path on every node: shared
storage (NFS, a mounted bucket) in a cluster, nothing special on one machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import FastPixels, collate, decode
from embedscope.embed.plan import Job, finish, plan
from embedscope.embed.stream import write_shards
from embedscope.faults import armed, fault_point
from embedscope.layout import Layout, os_path
from embedscope.models import load_model

INSTALL_HINT = (
    "run `make ray` in the embedscope checkout "
    "(or there: pip install -c requirements/constraints.txt -e '.[ray]')"
)


def embed_ray(
    layout: Layout,
    model: str = "mobilenet_v2",
    *,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    pooling: str = "auto",
    shard_size: int = 512,
    calibration_images: int | None = None,
    precision_race: str = "remembered",
    progress: bool = True,
    ray_address: str | None = None,
    concurrency: int | None = None,
) -> dict:
    """:func:`embedscope.embed.embed` on Ray Data; returns the same run facts.

    ``ray_address`` (else ``$RAY_ADDRESS``) attaches to a running cluster; without either, a
    local Ray starts for this run and stops after it. A Ray already initialised in this process
    is used as it is. ``concurrency`` is the number of model actors (default: one per GPU of
    the cluster, else one per CPU). ``device="auto"`` runs the model on GPUs when the cluster
    has any.
    """
    ray = _import_ray()
    t0 = time.perf_counter()
    with _connected(ray, ray_address):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if device == "auto":
            device = "cuda" if gpus else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"the ray engine runs on cpu or cuda, not {device!r}")
        if device == "cuda" and not gpus:
            raise ValueError("device='cuda' but the Ray cluster has no GPU")
        job = plan(
            layout,
            model,
            torch.device(device),
            precision=precision,
            pooling=pooling,
            batch_size=batch_size,
            calibration_images=calibration_images,
            precision_race=precision_race,
        )
        if concurrency is None:
            concurrency = gpus if device == "cuda" else max(1, int(resources.get("CPU", 1)))
        t_load = time.perf_counter() - t0
        t1 = time.perf_counter()
        new, new_failed = {}, {}
        if job.todo:
            batches = _stream(ray, job, concurrency=concurrency)
            new, new_failed = write_shards(
                batches,
                job.shard_dir,
                total=len(job.todo),
                shard_size=shard_size,
                progress=progress,
            )
        t_embed = time.perf_counter() - t1
    return finish(
        layout,
        job,
        new,
        new_failed,
        seconds_load=t_load,
        seconds_embed=t_embed,
        engine="ray",
        ray_version=ray.__version__,
        concurrency=concurrency,
    )


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError(
            f"engine='ray' needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


@contextmanager
def _connected(ray, address: str | None) -> Iterator[None]:
    """Use this process's Ray if initialised; else attach to ``address``/``$RAY_ADDRESS`` or
    start a local Ray, and disconnect (stopping the local one) afterwards."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, runtime_env=armed())
    else:
        start_local_ray()
    try:
        yield
    finally:
        ray.shutdown()


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a quiet local Ray (no dashboard) in this process, trying twice: Ray 2.60's raylet
    gives its agents a fixed 15 s to start and exits when a loaded machine is slower
    (ray-project/ray#65983); a second start usually fits."""
    ray = _import_ray()
    for attempt in (1, 2):
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
                runtime_env=armed(),
            )
            return
        except Exception:  # Ray reports a failed start with a bare Exception
            ray.shutdown()
            if attempt == 2:
                raise


def _stream(
    ray, job: Job, *, concurrency: int
) -> Iterator[tuple[list[str], np.ndarray | None, dict[str, str]]]:
    """``(hashes, vectors, failures)`` per batch, in the order Ray finishes them."""
    todo = pd.DataFrame({"sha256": job.todo, "path": job.paths, "stamp": job.stamps})
    # one block per batch, split here (Ray 2.60's own split fails on pandas 3 frames)
    step = job.batch_size
    rows = ray.data.from_pandas([todo.iloc[i : i + step] for i in range(0, len(todo), step)])
    pixels = rows.map_batches(
        _decode,
        batch_size=job.batch_size,
        batch_format="pandas",
        fn_kwargs={
            "root": str(job.root),
            "pixels": job.pixels,
        },
    )
    gpu = job.device.type == "cuda"
    vectors = pixels.map_batches(
        _Embedder,
        batch_size=job.batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=1 if gpu else 0,
        fn_constructor_kwargs={
            "model": job.model,
            "identity": job.identity,
            "device": job.device.type,
            "precision": job.precision,
            "pixels": job.pixels,
            "pooling": job.pooling,
        },
    )
    with _quiet(ray):
        yield from _unpack(vectors.iter_batches(batch_size=None, batch_format="pandas"))


def _unpack(batches: Iterator[pd.DataFrame]):
    for batch in batches:
        good = batch[batch["reason"] == ""]
        bad = batch[batch["reason"] != ""]
        vecs = np.stack(good["vector"].to_list()) if len(good) else None
        yield good["sha256"].tolist(), vecs, dict(zip(bad["sha256"], bad["reason"], strict=True))


@contextmanager
def _quiet(ray) -> Iterator[None]:
    """Ray Data's own progress bars and per-run log lines off while it runs: the shard writer's
    progress bar already counts images."""
    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, level = ctx.enable_progress_bars, logger.level
    ctx.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        logger.setLevel(level)


def _decode(batch: pd.DataFrame, root: str, pixels: FastPixels) -> pd.DataFrame:
    """A Ray task: decode one batch to uint8 at the model's geometry (normalised on the
    actor's device); an unreadable file gets its reason."""
    items = [
        decode(os_path(root, path), pixels, stamp)
        for path, stamp in zip(batch["path"], batch["stamp"], strict=True)
    ]
    return pd.DataFrame(
        {
            "sha256": batch["sha256"].to_numpy(),
            "pixels": [None if px is None else px.numpy() for px, _ in items],
            "reason": [reason for _, reason in items],
        }
    )


class _Embedder:
    """A Ray actor holding one model; refuses to start on weights other than the driver's."""

    def __init__(
        self,
        model: str,
        identity: str,
        device: str,
        precision: str,
        pixels: FastPixels,
        pooling: str,
    ) -> None:
        net, _, found = load_model(model, device=device)
        if found != identity:
            raise RuntimeError(
                f"model {model!r} is {found} on this Ray node but {identity} on the driver: "
                "give every node the same weights (a folder on shared storage or the same hub "
                "revision)"
            )
        self.encoder = Encoder(net, pooling, torch.device(device), pixels, precision)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        fault_point("ray:embed")
        items = [
            (i, None if px is None else torch.from_numpy(px), reason)
            for i, (px, reason) in enumerate(zip(batch["pixels"], batch["reason"], strict=True))
        ]
        ids, pixels, _ = collate(items)
        vectors: list[np.ndarray | None] = [None] * len(batch)
        if pixels is not None:
            with torch.inference_mode():
                out = self.encoder(pixels).float().cpu().numpy()
            for i, vec in zip(ids, out, strict=True):
                vectors[i] = vec
        return pd.DataFrame(
            {"sha256": batch["sha256"].to_numpy(), "vector": vectors, "reason": batch["reason"]}
        )
