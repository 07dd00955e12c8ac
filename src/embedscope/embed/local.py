"""The local engine: images decoded in DataLoader worker processes (to uint8, see
:mod:`embedscope.embed.pixels`) while the model runs in this process, vectors written in
shards as they come."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import make_loader
from embedscope.embed.plan import finish, plan, resolve_device
from embedscope.embed.stream import choose_workers, embedded, thread_options, write_shards
from embedscope.layout import Layout


def embed_local(
    layout: Layout,
    model: str = "mobilenet_v2",
    *,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    pooling: str = "auto",
    num_workers: int | None = None,
    shard_size: int = 512,
    calibration_images: int | None = None,
    precision_race: str = "remembered",
    progress: bool = True,
) -> dict:
    """:func:`embedscope.embed.embed` on this machine; returns the run facts."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    job = plan(
        layout,
        model,
        dev,
        precision=precision,
        pooling=pooling,
        batch_size=batch_size,
        num_workers=num_workers,
        calibration_images=calibration_images,
        precision_race=precision_race,
    )
    t_load = time.perf_counter() - t0 - job.seconds_check
    t1 = time.perf_counter()
    new, new_failed, workers, costs = {}, {}, 0, None
    if job.todo:
        encoder = job.encoder()
        workers, costs = choose_workers(
            num_workers,
            job.root,
            job.paths,
            job.batch_size,
            encoder,
            decode=job.decode_seconds,
            identity=job.identity,
        )
        loader = make_loader(
            job.root,
            job.paths,
            job.pixels,
            batch_size=job.batch_size,
            num_workers=workers,
            device=dev,
            stamps=job.stamps,
            ramp=True,
        )
        threads = thread_options(encoder.device, workers, measured=costs is not None)
        new, new_failed = _run(
            encoder,
            loader,
            job.todo,
            job.shard_dir,
            threads=threads,
            shard_size=shard_size,
            progress=progress,
        )
    t_stream = time.perf_counter() - t1
    return finish(
        layout,
        job,
        new,
        new_failed,
        seconds_load=t_load,
        seconds_embed=job.seconds_check + t_stream,
        engine="local",
        num_workers=workers,
        ms_decode_per_image=round(costs[0] * 1000, 2) if costs else None,
        ms_model_per_image=round(costs[1] * 1000, 2) if costs else None,
        images_per_second_streaming=round(len(job.todo) / t_stream, 2) if job.todo else None,
    )


def _run(
    encoder: Encoder,
    loader: Iterable,
    shas: list[str],
    shard_dir: Path,
    *,
    threads: list[int],
    shard_size: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The streaming loop: workers decode, the main process runs the model (the next batch
    launched before the last one's vectors are fetched; on ``threads``, see
    :func:`~embedscope.embed.stream.thread_options`) and writes shards; returns what it wrote
    (vectors and failures by sha256)."""
    batches = (
        ([shas[i] for i in ids], vecs, {shas[i]: reason for i, reason in bad})
        for ids, vecs, bad in embedded(loader, encoder, threads=threads)
    )
    return write_shards(
        batches, shard_dir, total=len(shas), shard_size=shard_size, progress=progress
    )
