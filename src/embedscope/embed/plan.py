"""What one embedding run must do, settled before any image still to embed is read, and
what it leaves behind: :func:`plan` loads the model, settles device, batch size, pooling and
precision and lists the images not cached yet; :func:`finish` assembles the outputs from the
cached and the new vectors. An engine (:mod:`~embedscope.embed.local`,
:mod:`~embedscope.embed.ray_engine`) only turns ``job.todo`` into vectors and failures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedscope.embed.calibrate import auto_precision
from embedscope.embed.encoder import Encoder, resolve_pooling
from embedscope.embed.pixels import FastPixels, cacheable, checked_pixels, stamps_of
from embedscope.embed.precision import PRECISIONS, check_precision, is_convolutional
from embedscope.images import decoder_identity
from embedscope.ingest import INGEST_DRAFT, decode_cost, load_manifest
from embedscope.layout import EmbeddingFiles, Layout, os_path, write_json
from embedscope.models import load_model
from embedscope.store import mark_latest, model_key, read_shards, write_outputs, write_shard


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_batch_size(batch_size: int | None, device: torch.device, model: torch.nn.Module) -> int:
    """Small batches for convolutional models on CPU: their activations then stay in cache
    (MobileNetV2 measured 54-76 images/s at batch 4-8 against 50 at 32 on 2 cores); larger
    batches for attention models; on a GPU as large as its memory comfortably holds (on an
    H200, batch 256 ran 1.5x batch 64 once the loader kept up)."""
    if batch_size:
        return int(batch_size)
    if device.type == "cuda":
        gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        return 256 if gib >= 40 else 128 if gib >= 16 else 64
    if device.type != "cpu":
        return 64
    return 8 if is_convolutional(model) else 16


@dataclass
class Job:
    """What one embedding run must do, decided before the images still to embed are read."""

    model: str
    net: torch.nn.Module
    pixels: FastPixels
    identity: str
    device: torch.device
    pooling: str
    precision: str  # a key of PRECISIONS
    precision_check: dict | None
    batch_size: int
    key: str
    out_dir: Path
    root: Path
    ok: pd.DataFrame
    done: dict[str, np.ndarray]
    failed: dict[str, str]
    todo: list[str]  # content hashes still to embed
    paths: list[str]  # their paths relative to root (as text, see layout.os_path)
    stamps: list[tuple[int, int]]  # their (size, mtime_ns) when the manifest hashed them
    calibrated: dict[str, np.ndarray]  # vectors of the precision check (already in a shard)
    calibration_failed: dict[str, str]  # and the files it could not read
    seconds_check: float
    kept: Encoder | None = None  # the encoder the precision check kept, when it ran here
    decode_seconds: float | None = None  # CPU s per image, as ingest or the check measured it

    @property
    def shard_dir(self) -> Path:
        return EmbeddingFiles(self.out_dir).shards

    def encoder(self) -> Encoder:
        """The encoder ``precision="auto"`` kept (an int8 copy is not quantised twice), or a
        new one at the precision asked for."""
        if self.kept is not None:
            return self.kept
        return Encoder(self.net, self.pooling, self.device, self.pixels, self.precision)


def plan(
    layout: Layout,
    model: str,
    device: torch.device,
    *,
    precision: str = "auto",
    pooling: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    calibration_images: int | None = None,
    precision_race: str = "remembered",
) -> Job:
    """Load the model, settle pooling/precision/batch size for ``device`` (where the model
    will run, which for Ray may be another machine's GPU) and list the hashes not cached yet.

    ``precision="auto"`` is decided here, on this machine (see
    :func:`~embedscope.embed.calibrate.auto_precision`); when ``device`` is a GPU this machine
    lacks (a Ray driver without one) float32 is kept."""
    precision = check_precision(precision)
    manifest, root = load_manifest(layout)
    ok = manifest[manifest["status"] == "ok"]
    here = device.type != "cuda" or torch.cuda.is_available()
    net, processor, identity = load_model(model, device=str(device) if here else "cpu")
    pooling = resolve_pooling(net, pooling)
    batch_size = resolve_batch_size(batch_size, device, net)
    first = ok.drop_duplicates("sha256").set_index("sha256")
    probe = os_path(root, first["path"].iloc[0]) if len(first) else None
    pixels = checked_pixels(processor, probe)

    t0 = time.perf_counter()
    check, calibrated, failed_now, kept, measured = None, {}, {}, None, {}
    # ingest decoded every file already: its cost is not timed again, where the workers decode
    # at its draft scale or coarser (a finer one, for a larger model input, costs more)
    coarse = pixels.draft is not None and max(pixels.draft) <= max(INGEST_DRAFT)
    ingested = decode_cost(layout) if coarse else None
    if ingested is not None:
        measured["decode"] = ingested
    if precision == "auto" and not here:
        check = {"candidate": None, "kept": False, "reason": f"no {device.type} here to judge"}
    if precision == "auto" and here:
        reference = Encoder(net, pooling, device, pixels, "fp32")
        kept, check, calibrated, failed_now = auto_precision(
            layout,
            reference,
            identity,
            root,
            first,
            batch_size=batch_size,
            num_workers=num_workers,
            calibration_images=calibration_images,
            race=precision_race,
            measured=measured,
        )
        precision = kept.precision
    precision = "fp32" if precision == "auto" else precision
    seconds_check = time.perf_counter() - t0

    out_dir = layout.embeddings_dir(model_key(model, identity, pooling, PRECISIONS[precision]))
    shard_dir = EmbeddingFiles(out_dir).shards
    shard_dir.mkdir(parents=True, exist_ok=True)
    decoder = decoder_identity()  # failures another decoder met are tried again
    done, failed = read_shards(shard_dir, decoder)
    new_vecs = {s: v for s, v in calibrated.items() if s not in done}
    new_failed = {s: r for s, r in failed_now.items() if s not in failed and s not in done}
    if new_vecs or new_failed:  # the calibration batch at the chosen precision: kept, not redone
        vecs = list(new_vecs.values())
        write_shard(shard_dir, list(new_vecs), vecs, cacheable(new_failed), decoder)
    todo = [
        sha
        for sha in first.index
        if not any(sha in d for d in (done, failed, new_vecs, new_failed))
    ]
    rest = first.loc[todo]
    return Job(
        model=model,
        net=net,
        pixels=pixels,
        identity=identity,
        device=device,
        pooling=pooling,
        precision=precision,
        precision_check=check,
        batch_size=batch_size,
        key=out_dir.name,
        out_dir=out_dir,
        root=root,
        ok=ok,
        done=done,
        failed=failed,
        todo=todo,
        paths=rest["path"].tolist(),
        stamps=stamps_of(rest),
        calibrated=new_vecs,
        calibration_failed=new_failed,
        seconds_check=seconds_check,
        kept=kept,
        decode_seconds=measured.get("decode"),
    )


def finish(
    layout: Layout,
    job: Job,
    new: dict[str, np.ndarray],
    new_failed: dict[str, str],
    *,
    seconds_load: float,
    seconds_embed: float,
    **extra,
) -> dict:
    """Write ``vectors.npy`` + ``rows.parquet`` (only when they change), ``embed.json`` and the
    model index from the cached and the new vectors; return the run facts (plus ``extra``)."""
    new, new_failed = job.calibrated | new, job.calibration_failed | new_failed
    done, failed = job.done | new, job.failed | new_failed
    ok, out_dir = job.ok, job.out_dir
    embedded_now = len(job.todo) + len(job.calibrated) + len(job.calibration_failed)
    rows, vectors = write_outputs(ok, done, out_dir, force=bool(embedded_now))
    skipped = ok[ok["sha256"].isin(failed.keys())]
    facts = {
        "model": job.model,
        "model_key": job.key,
        "identity": job.identity,
        "pooling": job.pooling,
        "text_tower": hasattr(job.net, "get_text_features"),  # text search and prompts can work
        "device": str(job.device),
        "precision": job.precision,  # the kit's one spelling (fp32, bf16, ...)
        "precision_check": job.precision_check,
        "batch_size": job.batch_size,
        "dim": int(vectors.shape[1]) if vectors.size else 0,
        "images": int(len(rows)),
        "embedded_now": len(new),
        "from_cache": int(len(ok) - embedded_now),
        "skipped_files": [
            {"path": p, "reason": failed[s]}
            for p, s in zip(skipped["path"], skipped["sha256"], strict=True)
        ],
        "seconds_load_model": round(seconds_load, 3),
        "seconds_precision_check": round(job.seconds_check, 3),
        "seconds_embed": round(seconds_embed, 3),
        "images_per_second": round(embedded_now / seconds_embed, 2)
        if embedded_now and seconds_embed
        else None,
        **extra,
    }
    write_json(EmbeddingFiles(out_dir).facts, facts)
    mark_latest(layout, job.model, job.key)
    return facts
