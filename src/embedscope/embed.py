"""Stage 2 — embed: one pooled vector per manifest image, streamed to disk and cached.

Images are decoded (to uint8, see :mod:`embedscope.pixels`) in DataLoader worker processes
while the model runs.
Vectors are written in shards as they come, keyed by the image's sha256, under a folder named
after the model identity, so re-running embeds nothing, adding images embeds only those, and a
killed run resumes from its last complete shard. The final output is two files anyone can open:

* ``vectors.npy`` — float32 array (n_images, dim), ``numpy.load(path)``;
* ``rows.parquet`` — the manifest rows those vectors belong to, in the same order
  (``row`` = manifest row number, ``path``, ``label``, ``sha256``), ``pandas.read_parquet(path)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedscope.ingest import load_manifest
from embedscope.layout import (
    Damaged,
    Layout,
    load_checked,
    os_path,
    read_embedding_files,
    read_json,
    set_aside,
    slug,
    write_json,
    write_npy,
    write_npz,
    write_parquet,
)
from embedscope.models import load_model
from embedscope.pixels import (
    NOT_AS_INGESTED,
    FastPixels,
    checked_pixels,
    decode_seconds,
    make_loader,
    resolve_workers,
)
from embedscope.precision import (
    PRECISIONS,
    PrecisionRace,
    autocast,
    candidates,
    check_precision,
    for_precision,
    is_convolutional,
    synchronize,
)

POOLINGS = ("auto", "pooler", "cls", "mean", "image_features")
#: Model types pooled by their CLS token: the ViT family's ``pooler_output`` is an extra dense
#: layer absent from most checkpoints; DINOv2 has no pooler and its own kNN evaluation uses CLS.
_CLS_MODEL_TYPES = {"vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers"}


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


def resolve_pooling(model: torch.nn.Module, pooling: str = "auto") -> str:
    """Pick the pooled vector per architecture: CLIP-like models' projected image features,
    the CLS token for ViT-family and DINOv2 models, else the model's own pooler, else the
    token mean."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if pooling != "auto":
        return pooling
    if hasattr(model, "get_image_features"):
        return "image_features"
    if getattr(model.config, "model_type", "") in _CLS_MODEL_TYPES:
        return "cls"
    if getattr(model, "pooler", None) is not None or hasattr(model.config, "depth_multiplier"):
        return "pooler"
    return "mean"


def pool(model: torch.nn.Module, pixel_values: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per image, never the flattened token grid."""
    if pooling == "image_features":
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixel_values)
    if pooling == "pooler" and getattr(out, "pooler_output", None) is not None:
        return out.pooler_output.flatten(1)
    hidden = out.last_hidden_state
    if hidden.ndim == 4:  # convolutional feature map (B, C, H, W)
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.mean(dim=1)


def model_key(spec: str, identity: str, pooling: str, precision: str = "float32") -> str:
    """Folder name for one model's vectors: readable prefix plus a hash of what defines them
    (weights, pooling and precision: bf16 vectors are close to float32 ones, not equal)."""
    digest = hashlib.sha256(f"{identity}\n{pooling}\n{precision}".encode()).hexdigest()[:12]
    return f"{slug(Path(spec.rstrip('/')).name)}-{digest}"


_SHA256 = re.compile("[0-9a-f]{64}")
_SHARD_KEYS = {"sha256", "vectors", "failed_sha256", "failed_reason", "model_key", "digest"}


def _read_shards(shard_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Vectors by sha256 and failures by sha256 from every shard that passes its checks; a
    damaged or foreign shard is set aside (one line), so its images are embedded again."""
    key = shard_dir.parent.name
    shards = sorted(shard_dir.glob("*.npz"))
    loaded = {p: load_checked(p, lambda p: _load_shard(p, key)) for p in shards}
    loaded = {p: a for p, a in loaded.items() if a is not None}
    dims = Counter(a["vectors"].shape[1] for a in loaded.values() if len(a["vectors"]))
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for path, arrays in loaded.items():
        dim = arrays["vectors"].shape[1]
        if len(arrays["vectors"]) and dim != dims.most_common(1)[0][0]:
            set_aside(path, f"vectors of dimension {dim}, the other shards' differ")
            continue
        vectors.update(zip(arrays["sha256"].tolist(), arrays["vectors"], strict=True))
        failed.update(
            zip(arrays["failed_sha256"].tolist(), arrays["failed_reason"].tolist(), strict=True)
        )
    return vectors, failed


def _load_shard(path: Path, key: str) -> dict[str, np.ndarray]:
    """A shard's arrays, refused (:class:`Damaged`) unless they are what the shard claims:
    this model's, one 64-hex content hash per vector, a 2-D float32 block, the same digest."""
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != _SHARD_KEYS:
            raise Damaged(f"arrays {sorted(z.files)} are not a shard's")
        arrays = {k: z[k] for k in z.files}
    vecs, shas = arrays["vectors"], arrays["sha256"]
    if str(arrays["model_key"]) != key:
        raise Damaged(f"written for model {arrays['model_key']}, not {key}")
    if vecs.ndim != 2 or vecs.dtype != np.float32 or len(vecs) != len(shas):
        raise Damaged(f"{len(shas)} hashes for vectors of shape {vecs.shape}")
    hashes = np.concatenate([shas, arrays["failed_sha256"]]).astype(str)
    if not all(_SHA256.fullmatch(h) for h in hashes.tolist()):
        raise Damaged("a content hash is not a sha256")
    if str(arrays["digest"]) != _shard_digest(arrays):
        raise Damaged("contents differ from the digest written with them")
    return arrays


def _shard_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over everything a shard holds but its digest."""
    h = hashlib.sha256()
    for name in sorted(_SHARD_KEYS - {"digest"}):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write_shard(shard_dir: Path, shas: list[str], vecs: list[np.ndarray], failed: dict) -> None:
    """One shard of the model whose folder holds ``shard_dir``, with its digest; failures
    that say the file was not as ingested are left out (they are not facts about the image)."""
    dim = vecs[0].shape[-1] if vecs else 0
    failed = {s: r for s, r in failed.items() if not r.startswith(NOT_AS_INGESTED)}
    arrays = {
        "sha256": np.array(shas, dtype="U64"),
        "vectors": np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32),
        "failed_sha256": np.array(list(failed), dtype="U64"),
        "failed_reason": np.array(list(failed.values()), dtype=str),
        "model_key": np.array(shard_dir.parent.name),
    }
    arrays["digest"] = np.array(_shard_digest(arrays))
    write_npz(shard_dir / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz", **arrays)


def embed(
    layout: Layout,
    model: str = "mobilenet_v2",
    *,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    pooling: str = "auto",
    num_workers: int | None = None,
    shard_size: int = 512,
    calibration_images: int = 128,
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    concurrency: int | None = None,
) -> dict:
    """Embed every ok manifest image not yet cached for this model; return run facts.

    ``precision="auto"`` embeds ``calibration_images`` images (spread over the dataset) in
    float32 and in the reduced precisions the hardware offers, keeps the fastest of those only
    if it is measured faster and the analysis sees the same neighbours
    (:mod:`embedscope.precision`); the decision, its speed-ups and agreement figures are
    remembered per dataset, model and hardware, and reported as ``precision_check``.

    ``engine="ray"`` runs the same step on Ray Data (see :mod:`embedscope.embed_ray`;
    ``ray_address`` and ``concurrency`` apply to it only; ``num_workers`` to local only).
    """
    if engine == "ray":
        from embedscope.embed_ray import embed_ray

        return embed_ray(
            layout,
            model,
            batch_size=batch_size,
            device=device,
            precision=precision,
            pooling=pooling,
            shard_size=shard_size,
            calibration_images=calibration_images,
            progress=progress,
            ray_address=ray_address,
            concurrency=concurrency,
        )
    if engine != "local":
        raise ValueError(f"engine must be local or ray, not {engine!r}")
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
    )
    t_load = time.perf_counter() - t0 - job.seconds_check
    t1 = time.perf_counter()
    new, new_failed, workers, costs = {}, {}, 0, None
    if job.todo:
        encoder = job.encoder()
        workers, costs = choose_workers(num_workers, job.root, job.paths, job.batch_size, encoder)
        loader = make_loader(
            job.root,
            job.paths,
            job.pixels,
            batch_size=job.batch_size,
            num_workers=workers,
            device=dev,
            stamps=job.stamps,
        )
        new, new_failed = _run(
            encoder, loader, job.todo, job.shard_dir, shard_size=shard_size, progress=progress
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


# --- pieces shared by the engines (local here, Ray in embed_ray): plan, preprocess, forward,
# --- shard writing, final assembly. An engine only turns job.todo into vectors and failures.


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

    @property
    def precision_name(self) -> str:
        return PRECISIONS[self.precision]

    @property
    def shard_dir(self) -> Path:
        return self.out_dir / "shards"

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
    calibration_images: int = 128,
) -> Job:
    """Load the model, settle pooling/precision/batch size for ``device`` (where the model
    will run, which for Ray may be another machine's GPU) and list the hashes not cached yet.

    ``precision="auto"`` is decided here, on this machine (see :func:`_auto_precision`); when
    ``device`` is a GPU this machine lacks (a Ray driver without one) float32 is kept."""
    check_precision(precision)
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
    check, calibrated, failed_now, kept = None, {}, {}, None
    if precision == "auto" and not here:
        check = {"candidate": None, "kept": False, "reason": f"no {device.type} here to judge"}
    if precision == "auto" and here:
        reference = Encoder(net, pooling, device, pixels, "fp32")
        sample = _calibration_sample(first, calibration_images)
        paths = sample["path"].tolist()

        def calibration_loader() -> Iterable:  # made only when no decision is remembered
            workers, _ = choose_workers(num_workers, root, paths, batch_size, reference)
            return make_loader(
                root,
                paths,
                pixels,
                batch_size=batch_size,
                num_workers=workers,
                device=device,
                stamps=_stamps(sample),
            )

        kept, check, calibrated, failed_now = _auto_precision(
            layout, reference, identity, calibration_loader, sample
        )
        precision = kept.precision
    precision = "fp32" if precision == "auto" else precision
    seconds_check = time.perf_counter() - t0

    out_dir = layout.embeddings_dir(model_key(model, identity, pooling, PRECISIONS[precision]))
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    done, failed = _read_shards(shard_dir)
    new_vecs = {s: v for s, v in calibrated.items() if s not in done}
    new_failed = {s: r for s, r in failed_now.items() if s not in failed and s not in done}
    if new_vecs or new_failed:  # the calibration batch at the chosen precision: kept, not redone
        _write_shard(shard_dir, list(new_vecs), list(new_vecs.values()), new_failed)
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
        stamps=_stamps(rest),
        calibrated=new_vecs,
        calibration_failed=new_failed,
        seconds_check=seconds_check,
        kept=kept,
    )


def choose_workers(
    num_workers: int | None, root: Path, paths: list[str], batch_size: int, encoder: Encoder
) -> tuple[int, tuple[float, float] | None]:
    """Decoding workers for ``paths``, and the costs measured to decide (seconds per image to
    decode, on one core, and to run ``encoder``, on all), measured only where they decide: a
    CPU host, no count asked for, more than one batch."""
    costs = None
    if num_workers is None and encoder.device.type == "cpu" and len(paths) > batch_size:
        decode, pictures = decode_seconds(root, paths[:4], encoder.pixels)
        if pictures:
            costs = decode, _forward_seconds(encoder, pictures)
    return resolve_workers(num_workers, len(paths), batch_size, encoder.device, costs), costs


def _forward_seconds(encoder: Encoder, pictures: list[torch.Tensor]) -> float:
    """Seconds per image of ``encoder``'s forward on a small batch of ``pictures`` (the second
    call is timed: the first one picks kernels)."""
    batch = torch.stack(pictures)
    with torch.inference_mode():
        for _ in range(2):
            synchronize(encoder.device)
            t0 = time.perf_counter()
            encoder(batch)
            synchronize(encoder.device)
    return (time.perf_counter() - t0) / len(pictures)


def _stamps(images: pd.DataFrame) -> list[tuple[int, int]]:
    return images[["bytes", "mtime_ns"]].to_numpy(dtype=np.int64).tolist()


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
    rows, vectors = _write_outputs(ok, done, out_dir, force=bool(embedded_now))
    skipped = ok[ok["sha256"].isin(failed.keys())]
    facts = {
        "model": job.model,
        "model_key": job.key,
        "identity": job.identity,
        "pooling": job.pooling,
        "text_tower": hasattr(job.net, "get_text_features"),  # text search and prompts can work
        "device": str(job.device),
        "precision": job.precision_name,
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
    write_json(out_dir / "embed.json", facts)
    index_path = layout.data_dir / "embeddings" / "index.json"
    index = read_json(index_path, default={"latest": None, "by_model": {}})
    index["latest"], index["by_model"][job.model] = job.key, job.key
    write_json(index_path, index)
    return facts


def _write_outputs(
    ok: pd.DataFrame, done: dict[str, np.ndarray], out_dir: Path, *, force: bool
) -> tuple[pd.DataFrame, np.ndarray]:
    """``rows.parquet`` and ``vectors.npy`` of the ok images with vectors; written when
    ``force``d or when what is on disk is missing, damaged or other (else a no-op re-run
    rewrites nothing)."""
    kept = ok[ok["sha256"].isin(done.keys())]
    rows = pd.DataFrame(
        {
            "row": kept.index.to_numpy(),
            "path": kept["path"].to_numpy(),
            "label": kept["label"].to_numpy(),
            "sha256": kept["sha256"].to_numpy(),
        }
    )
    vectors = np.stack([done[s] for s in rows["sha256"]]) if len(rows) else np.zeros((0, 0))
    stored = None if force else read_embedding_files(out_dir)
    if stored is None or not stored[1].equals(rows):
        write_npy(out_dir / "vectors.npy", vectors)
        write_parquet(out_dir / "rows.parquet", rows)
    return rows, vectors


def rebuild_outputs(layout: Layout, key: str) -> None:
    """Write ``vectors.npy``/``rows.parquet`` of model folder ``key`` again from its shards
    and the manifest (no model needed): how a damaged output file is rebuilt."""
    manifest, _ = load_manifest(layout)
    out_dir = layout.embeddings_dir(key)
    done, _ = _read_shards(out_dir / "shards")
    _write_outputs(manifest[manifest["status"] == "ok"], done, out_dir, force=True)


def _run(
    encoder: Encoder,
    loader: Iterable,
    shas: list[str],
    shard_dir: Path,
    *,
    shard_size: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The streaming loop: workers decode, the main process runs the model (the next batch
    launched before the last one's vectors are fetched) and writes shards; returns what it
    wrote (vectors and failures by sha256)."""
    threads = thread_options(encoder.device, getattr(loader, "num_workers", 0))
    batches = (
        ([shas[i] for i in ids], vecs, {shas[i]: reason for i, reason in bad})
        for ids, vecs, bad in embedded(loader, encoder, threads=threads)
    )
    return write_shards(
        batches, shard_dir, total=len(shas), shard_size=shard_size, progress=progress
    )


class Encoder:
    """A model ready to turn loader batches into pooled vectors at one precision: input
    normalised on the model's device, channels-last for CNNs, autocast or int8 weights."""

    def __init__(
        self,
        net: torch.nn.Module,
        pooling: str,
        device: torch.device,
        pixels: FastPixels,
        precision: str = "fp32",
    ) -> None:
        self.precision, self.pooling, self.device, self.pixels = precision, pooling, device, pixels
        self.channels_last = is_convolutional(net)
        self.net = for_precision(net, precision, device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled vectors, left on the device: the copy back can wait for the next batch."""
        x = self.pixels.to_model(batch.to(self.device, non_blocking=True))
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        with autocast(self.precision, self.device):
            return pool(self.net, x.contiguous(memory_format=layout), self.pooling)


def embedded(
    loader: Iterable, encoder, *, threads: Sequence[int] = ()
) -> Iterator[tuple[list[int], np.ndarray | None, list]]:
    """``(ids, vectors, failures)`` per loader batch. A batch's vectors are fetched from the
    device only once the next batch has been launched, so a GPU never idles while the host
    copies results back. ``threads``: CPU thread counts to try for the model (see
    :func:`thread_options`); the fastest measured is kept for the rest of the loop."""
    pending = None
    trial = _ThreadTrial(threads)
    try:
        with torch.inference_mode():
            for ids, pixels, bad in loader:
                out = encoder(pixels) if pixels is not None else None
                if pending is not None:
                    yield _fetched(*pending)
                pending = ids, out, bad
                trial.tick(len(ids) + len(bad))
            if pending is not None:
                yield _fetched(*pending)
    finally:
        trial.restore()


def thread_options(device: torch.device, workers: int) -> list[int]:
    """On a CPU host, decoding workers and the model's threads share the cores: all threads
    win when decoding is cheap (the workers mostly wait), the cores the workers leave free win
    when it is not (camera JPEGs; or a busy machine), measured 2.5x apart here. Both are tried."""
    if device.type != "cpu" or not workers:
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now, free = torch.get_num_threads(), max(1, (cores or 2) - workers)
    return [now, free] if free < now else []


class _ThreadTrial:
    """Times ``span`` batches at each thread count (after ``warmup`` batches, which include
    worker start-up) and keeps the one with the most images per second."""

    def __init__(self, options: Sequence[int], warmup: int = 1, span: int = 2) -> None:
        self.options, self.warmup, self.span = list(options), warmup, span
        self.original = torch.get_num_threads()
        self.rates: list[float] = []
        self.batches = self.images = 0
        self.start = 0.0

    def tick(self, images: int) -> None:
        if len(self.options) < 2 or len(self.rates) == len(self.options):
            return
        self.batches += 1
        if self.batches > self.warmup:
            self.images += images
        if self.batches < self.warmup or (self.batches - self.warmup) % self.span:
            return
        now = time.perf_counter()
        if self.batches > self.warmup:
            self.rates.append(self.images / max(now - self.start, 1e-9))
        done = len(self.rates) == len(self.options)
        best = self.options[int(np.argmax(self.rates))] if done else None
        torch.set_num_threads(best or self.options[len(self.rates)])
        self.images, self.start = 0, now

    def restore(self) -> None:
        torch.set_num_threads(self.original)


def release_freed_memory() -> None:
    """Hand memory freed by the decoders and the model's threads back to the OS. glibc keeps
    it in per-thread arenas: on 5,000 images the resident size climbed from 0.6 to 1.15 GB
    with nothing held (flat at 0.6 GB with one arena). A no-op where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _fetched(ids: list[int], out: torch.Tensor | None, bad: list):
    return ids, (out.float().cpu().numpy() if out is not None else None), bad


def _calibration_sample(images: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` images spread evenly over the (path-ordered) dataset, so every class
    tends to be there, not only the first folder's."""
    pick = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    return images.iloc[pick] if len(images) else images


def _auto_precision(
    layout: Layout,
    reference: Encoder,
    identity: str,
    calibration_loader: Callable[[], Iterable],
    sample: pd.DataFrame,
) -> tuple[Encoder, dict, dict[str, np.ndarray], dict[str, str]]:
    """The encoder ``precision="auto"`` keeps, the check that decided, and the calibration
    batch's vectors at the kept precision (and its unreadable files) by sha256.

    A decision already taken for this dataset, model, pooling and hardware is reused as is.
    """
    dev = reference.device
    names = candidates(dev, reference.net)
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    cache = layout.data_dir / "embeddings" / "precision.json"
    decisions = read_json(cache, default={}) or {}
    cache_key = f"{identity}|{reference.pooling}|{hardware}|{'+'.join(names)}"
    if not names:
        check = {"candidate": None, "kept": False, "reason": "no faster precision here"}
        return reference, check, {}, {}
    low = lambda name: Encoder(reference.net, reference.pooling, dev, reference.pixels, name)  # noqa: E731
    if cache_key in decisions:
        check = decisions[cache_key]
        return (low(check["candidate"]) if check["kept"] else reference), check, {}, {}
    race = PrecisionRace(reference, {name: low(name) for name in names}, dev)
    shas, ref, failed = [], [], {}
    loader = calibration_loader()
    threads = thread_options(dev, getattr(loader, "num_workers", 0))
    for ids, vecs, bad in embedded(loader, race, threads=threads):
        failed.update({sample.index[i]: reason for i, reason in bad})  # one decode, all forwards
        if vecs is not None:
            shas += [sample.index[i] for i in ids]
            ref.append(vecs)
    if len(shas) < 3:
        check = {"candidate": names[0], "kept": False, "reason": "too few readable images to judge"}
        return reference, check, {}, failed
    ref_all = np.concatenate(ref)
    check, kept_vectors = race.verdict(ref_all, sample.loc[shas, "label"].to_numpy())
    decisions[cache_key] = check
    write_json(cache, decisions)
    kept = race.lows[check["candidate"]] if check["kept"] else reference
    vectors = ref_all if kept_vectors is None else kept_vectors
    return kept, check, dict(zip(shas, vectors, strict=True)), failed


def write_shards(
    batches: Iterable[tuple[list[str], np.ndarray | None, dict[str, str]]],
    shard_dir: Path,
    *,
    total: int,
    shard_size: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Write ``(hashes, vectors, failures by hash)`` batches, as any engine yields them, into
    shards of about ``shard_size`` images; return everything written."""
    from tqdm.auto import tqdm

    buf_sha: list[str] = []
    buf_vec: list[np.ndarray] = []
    buf_fail: dict[str, str] = {}
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}

    def flush() -> None:
        _write_shard(shard_dir, buf_sha, buf_vec, buf_fail)
        vectors.update(zip(buf_sha, buf_vec, strict=True))
        failed.update(buf_fail)
        buf_sha.clear()
        buf_vec.clear()
        buf_fail.clear()
        release_freed_memory()

    bar = tqdm(total=total, unit="img", disable=not progress, desc="embedding")
    for shas, vecs, bad in batches:
        if vecs is not None:
            buf_sha += shas
            buf_vec += list(vecs)
        buf_fail.update(bad)
        bar.update(len(shas) + len(bad))
        if len(buf_sha) + len(buf_fail) >= shard_size:
            flush()
    if buf_sha or buf_fail:
        flush()
    bar.close()
    return vectors, failed
