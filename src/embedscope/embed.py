"""Stage 2 — embed: one pooled vector per manifest image, streamed to disk and cached.

Images are decoded and preprocessed in DataLoader worker processes while the model runs.
Vectors are written in shards as they come, keyed by the image's sha256, under a folder named
after the model identity, so re-running embeds nothing, adding images embeds only those, and a
killed run resumes from its last complete shard. The final output is two files anyone can open:

* ``vectors.npy`` — float32 array (n_images, dim), ``numpy.load(path)``;
* ``rows.parquet`` — the manifest rows those vectors belong to, in the same order
  (``row`` = manifest row number, ``path``, ``label``, ``sha256``), ``pandas.read_parquet(path)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from embedscope.images import load_rgb
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

POOLINGS = ("auto", "pooler", "cls", "mean", "image_features")
#: Model types whose ``pooler_output`` is an extra dense layer absent from most checkpoints.
_CLS_MODEL_TYPES = {"vit", "deit", "beit", "data2vec-vision"}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_precision(
    precision: str, device: torch.device, model: torch.nn.Module | None = None
) -> torch.dtype | None:
    """Autocast dtype, or None for float32.

    ``auto`` picks bfloat16 for attention models on CUDA and on CPUs with native bf16
    (AVX-512-BF16/AMX), where ViT-B/16 runs 2.2x float32 (make bench) and per-image cosine to
    the float32 vector stays above 0.9999 (random weights, sample images). Convolutional models
    stay float32 (channels-last): on the built-in sample, bf16 MobileNetV2 vectors fall to
    cosine 0.970 on flat images (14 of 360 below 0.99), too far to call faithful.
    """
    if precision == "fp32":
        return None
    if precision in ("bf16", "fp16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if model is not None and _is_convolutional(model):
        return None
    if device.type == "cuda" or (device.type == "cpu" and _cpu_has_bf16()):
        return torch.bfloat16
    return None


def resolve_batch_size(batch_size: int | None, device: torch.device, model: torch.nn.Module) -> int:
    """Small batches for convolutional models on CPU: their activations then stay in cache
    (MobileNetV2 measured 54-76 images/s at batch 4-8 against 50 at 32 on 2 cores); larger
    batches for attention models and GPUs, where the matrix products want them."""
    if batch_size:
        return int(batch_size)
    if device.type != "cpu":
        return 64
    return 8 if _is_convolutional(model) else 16


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype else "float32"


def _is_convolutional(model: torch.nn.Module) -> bool:
    return any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size != m.stride for m in model.modules()
    )


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_pooling(model: torch.nn.Module, pooling: str = "auto") -> str:
    """Pick the pooled vector per architecture: CLIP-like models' projected image features,
    the CLS token for ViT-family models, else the model's own pooler, else the token mean."""
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


class FastPixels:
    """The usual image-processor recipe (resize, centre crop, rescale, normalise) done directly
    in PIL and numpy: only the region that survives the crop is resized, and rescale+normalise
    is a lookup table. Several times cheaper than a transformers processor call, which matters
    on small CPUs where preprocessing competes with the model for the same cores.

    Only used after :meth:`matches` confirmed it reproduces the processor on real images; any
    processor with another recipe (crop_pct, padding, …) keeps its own code path.
    """

    def __init__(self, processor) -> None:
        self.processor = processor
        size = getattr(processor, "size", None)
        self.ok = bool(
            size is not None
            and getattr(processor, "do_resize", False)
            and (size.get("shortest_edge") or (size.get("height") and size.get("width")))
            and not size.get("longest_edge")
            and not getattr(processor, "do_pad", False)
        )
        if self.ok:
            crop = getattr(processor, "crop_size", None) if processor.do_center_crop else None
            self.crop = (crop["height"], crop["width"]) if crop else None
            self.scale = float(processor.rescale_factor) if processor.do_rescale else 1.0
            norm = processor.do_normalize
            mean = np.broadcast_to(np.asarray(processor.image_mean if norm else 0.0), 3)
            std = np.broadcast_to(np.asarray(processor.image_std if norm else 1.0), 3)
            levels = np.arange(256, dtype=np.float32)[:, None] * np.float32(self.scale)
            # 8-bit input: rescale + normalise is a 256-entry lookup per channel
            self.lut = ((levels - mean.astype(np.float32)) / std.astype(np.float32)).T.copy()
            self.resample = int(getattr(processor, "resample", None) or 2)

    def _size(self, w: int, h: int) -> tuple[int, int]:
        size = self.processor.size
        if size.get("shortest_edge"):
            s = size["shortest_edge"]
            return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        return size["width"], size["height"]

    def __call__(self, image) -> torch.Tensor:
        if not self.ok:
            return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        w, h = self._size(*image.size)
        if self.crop:
            ch, cw = self.crop
            if h < ch or w < cw:  # the processor pads here: let it
                return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
            top, left = (h - ch) // 2, (w - cw) // 2
            if self.resample == Image.Resampling.BILINEAR:
                # resize only the source region that survives the crop (same sampling grid)
                sx, sy = image.width / w, image.height / h
                box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
                im = image.resize((cw, ch), self.resample, box=box)
            else:  # wider kernels (bicubic) round differently at the box edge
                im = image.resize((w, h), self.resample).crop((left, top, left + cw, top + ch))
        else:
            im = image.resize((w, h), self.resample)
        arr = np.asarray(im).transpose(2, 0, 1)
        out = np.empty(arr.shape, np.float32)
        for c in range(3):
            np.take(self.lut[c], arr[c], out=out[c])
        return torch.from_numpy(out)

    def matches(self, images: list, atol: float = 0.025) -> bool:
        """True when this reproduces the processor's pixels on ``images`` to within one 8-bit
        intensity level (resizing only the cropped region rounds a few pixels differently)."""
        if not self.ok:
            return False
        for im in images:
            ref = self.processor(images=im, return_tensors="pt")["pixel_values"][0]
            mine = self(im)
            if mine.shape != ref.shape or (mine - ref).abs().max() > atol:
                return False
        return True


def _probe_image(path: Path | None) -> Image.Image:
    """A real image of the dataset when readable, else (and also) odd-sized noise."""
    if path is not None:
        try:
            return load_rgb(path)
        except ValueError:
            pass
    noise = np.random.default_rng(0).integers(0, 256, (207, 301, 3), dtype=np.uint8)
    return Image.fromarray(noise)


class _Images(Dataset):
    """Decode + preprocess in worker processes; a bad file yields its reason, not an error.

    ``stamps`` (size, mtime_ns) per path are what the manifest recorded when it hashed the
    file; a file that no longer matches is not decoded (see :func:`_as_ingested`).
    """

    def __init__(self, root: Path, paths: list[str], processor, stamps=None) -> None:
        self.root, self.paths, self.processor, self.stamps = root, paths, processor, stamps

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = os_path(self.root, self.paths[i])
        stamp = self.stamps[i] if self.stamps is not None else None
        try:
            changed = _as_ingested(path, stamp)
            pixels = None if changed else self.processor(load_rgb(path))
            changed = changed or _as_ingested(path, stamp)  # changed while being decoded
        except Exception as exc:  # any decoder error must skip the file, not end the run
            return i, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (i, None, changed) if changed else (i, pixels, "")


#: Start of the reason given to files that are not as the manifest hashed them; such a skip
#: is reported but never stored in a shard (the file may come back as it was).
NOT_AS_INGESTED = "changed since 01_download"


def _as_ingested(path: Path, stamp: tuple[int, int] | None) -> str:
    """'' when ``path`` still has the size and mtime the manifest recorded with its sha256,
    else the skip reason: vectors must never be cached under a hash of other bytes."""
    if stamp is None:
        return ""
    try:
        st = path.stat()
    except OSError as exc:
        return f"{NOT_AS_INGESTED}: {exc.strerror or 'gone'}; run 01_download again"
    if (st.st_size, st.st_mtime_ns) != tuple(stamp):
        return f"{NOT_AS_INGESTED} (size or modification time differ); run 01_download again"
    return ""


def _collate(items):
    good = [(i, p) for i, p, _ in items if p is not None]
    bad = [(i, r) for i, p, r in items if p is None]
    ids = [i for i, _ in good]
    pixels = torch.stack([p for _, p in good]) if good else None
    return ids, pixels, bad


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
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    concurrency: int | None = None,
) -> dict:
    """Embed every ok manifest image not yet cached for this model; return run facts.

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
            progress=progress,
            ray_address=ray_address,
            concurrency=concurrency,
        )
    if engine != "local":
        raise ValueError(f"engine must be local or ray, not {engine!r}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    job = plan(layout, model, dev, precision=precision, pooling=pooling, batch_size=batch_size)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    new, new_failed = {}, {}
    if job.todo:
        loader = _loader(
            job.root, job.paths, job.processor, job.batch_size, num_workers, job.stamps
        )
        new, new_failed = _run(
            job.net.to(dev),
            loader,
            job.todo,
            job.shard_dir,
            dev=dev,
            dtype=job.dtype,
            pooling=job.pooling,
            shard_size=shard_size,
            progress=progress,
        )
    t_embed = time.perf_counter() - t1
    return finish(
        layout, job, new, new_failed, seconds_load=t_load, seconds_embed=t_embed, engine="local"
    )


# --- pieces shared by the engines (local here, Ray in embed_ray): plan, preprocess, forward,
# --- shard writing, final assembly. An engine only turns job.todo into vectors and failures.


@dataclass
class Job:
    """What one embedding run must do, decided before any image is read."""

    model: str
    net: torch.nn.Module
    processor: object
    identity: str
    device: torch.device
    pooling: str
    dtype: torch.dtype | None
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

    @property
    def precision_name(self) -> str:
        return _dtype_name(self.dtype)

    @property
    def shard_dir(self) -> Path:
        return self.out_dir / "shards"


def plan(
    layout: Layout,
    model: str,
    device: torch.device,
    *,
    precision: str = "auto",
    pooling: str = "auto",
    batch_size: int | None = None,
) -> Job:
    """Load the model, settle pooling/precision/batch size for ``device`` (where the model
    will run, which for Ray may be another machine's GPU) and list the hashes not cached yet."""
    manifest, root = load_manifest(layout)
    ok = manifest[manifest["status"] == "ok"]
    net, processor, identity = load_model(model, device="cpu")  # engines move it where it runs
    pooling = resolve_pooling(net, pooling)
    dtype = resolve_precision(precision, device, net)
    batch_size = resolve_batch_size(batch_size, device, net)
    precision_name = _dtype_name(dtype)
    out_dir = layout.embeddings_dir(model_key(model, identity, pooling, precision_name))
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    done, failed = _read_shards(out_dir / "shards")
    first = ok.drop_duplicates("sha256").set_index("sha256")
    todo = [sha for sha in first.index if sha not in done and sha not in failed]
    return Job(
        model=model,
        net=net,
        processor=processor,
        identity=identity,
        device=device,
        pooling=pooling,
        dtype=dtype,
        batch_size=batch_size,
        key=out_dir.name,
        out_dir=out_dir,
        root=root,
        ok=ok,
        done=done,
        failed=failed,
        todo=todo,
        paths=first.loc[todo, "path"].tolist(),
        stamps=first.loc[todo, ["bytes", "mtime_ns"]].to_numpy(dtype=np.int64).tolist(),
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
    done, failed = job.done | new, job.failed | new_failed
    ok, todo, out_dir = job.ok, job.todo, job.out_dir
    rows, vectors = _write_outputs(ok, done, out_dir, force=bool(todo))
    skipped = ok[ok["sha256"].isin(failed.keys())]
    facts = {
        "model": job.model,
        "model_key": job.key,
        "identity": job.identity,
        "pooling": job.pooling,
        "text_tower": hasattr(job.net, "get_text_features"),  # text search and prompts can work
        "device": str(job.device),
        "precision": job.precision_name,
        "batch_size": job.batch_size,
        "dim": int(vectors.shape[1]) if vectors.size else 0,
        "images": int(len(rows)),
        "embedded_now": len(new),
        "from_cache": int(len(ok) - len(todo)),
        "skipped_files": [
            {"path": p, "reason": failed[s]}
            for p, s in zip(skipped["path"], skipped["sha256"], strict=True)
        ],
        "seconds_load_model": round(seconds_load, 3),
        "seconds_embed": round(seconds_embed, 3),
        "images_per_second": round(len(todo) / seconds_embed, 2)
        if todo and seconds_embed
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


def _loader(
    root: Path,
    paths: list[str],
    processor,
    batch_size: int,
    num_workers: int | None,
    stamps: list[tuple[int, int]] | None = None,
):
    """Batches of preprocessed pixels, decoded in worker processes."""
    if num_workers is None:
        num_workers = 0 if len(paths) <= batch_size else max(1, min(4, (os.cpu_count() or 2) - 1))
    return DataLoader(
        _Images(root, paths, preprocessor(processor, os_path(root, paths[0])), stamps),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


def preprocessor(processor, probe: Path) -> FastPixels:
    """The processor's recipe as :class:`FastPixels` when that reproduces it on ``probe`` (an
    image of the dataset) and on odd-sized noise; else the processor itself does the work."""
    fast = FastPixels(processor)
    fast.ok = fast.matches([_probe_image(probe), _probe_image(None)])
    return fast


class Forward:
    """The model on its device: channels-last for CNNs, autocast at ``dtype`` (None: float32);
    call it on a batch of pixels for float32 numpy vectors."""

    def __init__(self, net: torch.nn.Module, dev: torch.device, dtype, pooling: str) -> None:
        self.channels_last = _is_convolutional(net)
        self.net = net.to(memory_format=torch.channels_last) if self.channels_last else net
        self.dev, self.dtype, self.pooling = dev, dtype, pooling

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        autocast = torch.autocast(self.dev.type, dtype=self.dtype) if self.dtype else nullcontext()
        with torch.inference_mode(), autocast:
            pixels = pixels.to(self.dev)
            if self.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            return pool(self.net, pixels, self.pooling).float().cpu().numpy()


def _run(
    net: torch.nn.Module,
    loader: DataLoader,
    shas: list[str],
    shard_dir: Path,
    *,
    dev: torch.device,
    dtype: torch.dtype | None,
    pooling: str,
    shard_size: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The streaming loop: workers decode, the main process runs the model and writes shards;
    returns what it wrote (vectors and failures by sha256)."""
    forward = Forward(net, dev, dtype, pooling)

    def batches() -> Iterator[tuple[list[str], np.ndarray | None, dict[str, str]]]:
        for ids, pixels, bad in loader:
            vecs = forward(pixels) if pixels is not None else None
            yield [shas[i] for i in ids], vecs, {shas[i]: reason for i, reason in bad}

    return write_shards(
        batches(), shard_dir, total=len(shas), shard_size=shard_size, progress=progress
    )


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
