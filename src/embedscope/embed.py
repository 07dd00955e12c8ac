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
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from embedscope.images import load_rgb
from embedscope.ingest import load_manifest
from embedscope.layout import (
    Layout,
    read_json,
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
    """Decode + preprocess in worker processes; a bad file yields its reason, not an error."""

    def __init__(self, root: Path, paths: list[str], processor) -> None:
        self.root, self.paths, self.processor = root, paths, processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.processor(load_rgb(self.root / self.paths[i])), ""
        except Exception as exc:  # any decoder error must skip the file, not end the run
            return i, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _collate(items):
    good = [(i, p) for i, p, _ in items if p is not None]
    bad = [(i, r) for i, p, r in items if p is None]
    ids = [i for i, _ in good]
    pixels = torch.stack([p for _, p in good]) if good else None
    return ids, pixels, bad


def _read_shards(shard_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Vectors by sha256 and failures by sha256 from every complete shard."""
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for shard in sorted(shard_dir.glob("*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            vectors.update(zip(z["sha256"].tolist(), z["vectors"], strict=True))
            failed.update(
                zip(z["failed_sha256"].tolist(), z["failed_reason"].tolist(), strict=True)
            )
    return vectors, failed


def _write_shard(shard_dir: Path, shas: list[str], vecs: list[np.ndarray], failed: dict) -> None:
    dim = vecs[0].shape[-1] if vecs else 0
    arrays = {
        "sha256": np.array(shas, dtype="U64"),
        "vectors": np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32),
        "failed_sha256": np.array(list(failed), dtype="U64"),
        "failed_reason": np.array(list(failed.values()), dtype=str),
    }
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
) -> dict:
    """Embed every ok manifest image not yet cached for this model; return run facts."""
    t0 = time.perf_counter()
    manifest, root = load_manifest(layout)
    ok = manifest[manifest["status"] == "ok"]
    dev = resolve_device(device)
    net, processor, identity = load_model(model, device=str(dev))
    pooling = resolve_pooling(net, pooling)
    dtype = resolve_precision(precision, dev, net)
    batch_size = resolve_batch_size(batch_size, dev, net)
    precision_name = str(dtype).removeprefix("torch.") if dtype else "float32"
    key = model_key(model, identity, pooling, precision_name)
    out_dir = layout.embeddings_dir(key)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    done, failed = _read_shards(shard_dir)
    first_path = ok.drop_duplicates("sha256").set_index("sha256")["path"]
    todo = [sha for sha in first_path.index if sha not in done and sha not in failed]
    t_load = time.perf_counter() - t0

    t1 = time.perf_counter()
    if todo:
        paths = [first_path[s] for s in todo]
        loader = _loader(root, paths, processor, batch_size, num_workers)
        new, new_failed = _run(
            net,
            loader,
            todo,
            shard_dir,
            dev=dev,
            dtype=dtype,
            pooling=pooling,
            shard_size=shard_size,
            progress=progress,
        )
        done |= new
        failed |= new_failed
    t_embed = time.perf_counter() - t1

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
    rows_path = out_dir / "rows.parquet"
    if todo or not rows_path.exists() or not pd.read_parquet(rows_path).equals(rows):
        write_npy(out_dir / "vectors.npy", vectors)  # else unchanged: a re-run writes nothing
        write_parquet(rows_path, rows)
    skipped = ok[ok["sha256"].isin(failed.keys())]
    facts = {
        "model": model,
        "model_key": key,
        "identity": identity,
        "pooling": pooling,
        "text_tower": hasattr(net, "get_text_features"),  # text search and prompts can work
        "device": str(dev),
        "precision": precision_name,
        "batch_size": batch_size,
        "dim": int(vectors.shape[1]) if vectors.size else 0,
        "images": int(len(rows)),
        "embedded_now": int(len(todo)) - int(len(skipped)),
        "from_cache": int(len(ok) - len(todo)),
        "skipped_files": [
            {"path": p, "reason": failed[s]}
            for p, s in zip(skipped["path"], skipped["sha256"], strict=True)
        ],
        "seconds_load_model": round(t_load, 3),
        "seconds_embed": round(t_embed, 3),
        "images_per_second": round(len(todo) / t_embed, 2) if todo and t_embed else None,
    }
    write_json(out_dir / "embed.json", facts)
    index_path = layout.data_dir / "embeddings" / "index.json"
    index = read_json(index_path, default={"latest": None, "by_model": {}})
    index["latest"], index["by_model"][model] = key, key
    write_json(index_path, index)
    return facts


def _loader(root: Path, paths: list[str], processor, batch_size: int, num_workers: int | None):
    """Batches of preprocessed pixels, decoded in worker processes; preprocessing runs as
    :class:`FastPixels` when that reproduces the processor on this dataset's first image."""
    if num_workers is None:
        num_workers = 0 if len(paths) <= batch_size else max(1, min(4, (os.cpu_count() or 2) - 1))
    fast = FastPixels(processor)
    fast.ok = fast.matches([_probe_image(root / paths[0]), _probe_image(None)])
    return DataLoader(
        _Images(root, paths, fast),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


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
    from tqdm.auto import tqdm

    channels_last = _is_convolutional(net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
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

    bar = tqdm(total=len(shas), unit="img", disable=not progress, desc="embedding")
    with torch.inference_mode(), autocast:
        for ids, pixels, bad in loader:
            if pixels is not None:
                pixels = pixels.to(dev)
                if channels_last:
                    pixels = pixels.contiguous(memory_format=torch.channels_last)
                vecs = pool(net, pixels, pooling).float().cpu().numpy()
                buf_sha += [shas[i] for i in ids]
                buf_vec += list(vecs)
            buf_fail.update({shas[i]: reason for i, reason in bad})
            bar.update(len(ids) + len(bad))
            if len(buf_sha) + len(buf_fail) >= shard_size:
                flush()
    if buf_sha or buf_fail:
        flush()
    bar.close()
    return vectors, failed
