"""From image files to model input, split where it is cheapest.

Worker processes only decode (a JPEG at the smallest DCT scale still covering the model's input)
and bring each image to the model's input geometry as **uint8**; batches cross the worker
queues and the host-to-device copy at a quarter of float32's size (pinned and copied without
blocking on CUDA), and rescale + normalise run on the model's device, where they cost nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from embedscope.faults import fault_point
from embedscope.images import lasting, load_rgb, skip_reason
from embedscope.layout import os_path
from embedscope.machine import usable_cores


class FastPixels:
    """The usual image-processor recipe (resize, centre crop, rescale, normalise) split in two:
    :meth:`__call__` resizes and crops in PIL and returns the uint8 picture (H, W, C) — only
    the region that survives the crop is resized — and :meth:`to_model` rescales and normalises
    a batch of them on whatever device it lives on.

    Only used after :meth:`matches` confirmed it reproduces the processor on real images; any
    processor with another recipe (crop_pct, padding, …) keeps its own code path, whose float32
    (C, H, W) output :meth:`to_model` passes through unchanged.
    """

    def __init__(self, processor) -> None:
        self.processor = processor
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
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
            self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            self.resample = int(getattr(processor, "resample", None) or 2)
            # a crop larger than the resized image makes the processor pad: its own recipe
            short = size.get("shortest_edge")
            fits = (short, short) if short else (size["height"], size["width"])
            self.ok = not self.crop or (self.crop[0] <= fits[0] and self.crop[1] <= fits[1])

    @property
    def draft(self) -> tuple[int, int] | None:
        """The JPEG draft size that still covers the resize target in both orientations (EXIF
        rotation happens after decoding), so decoding at reduced scale never upsamples."""
        if not self.ok:
            return None
        size = self.processor.size
        side = size.get("shortest_edge") or max(size["height"], size["width"])
        return side, side

    def _size(self, w: int, h: int) -> tuple[int, int]:
        size = self.processor.size
        if size.get("shortest_edge"):
            s = size["shortest_edge"]
            return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        return size["width"], size["height"]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """uint8 (H, W, C) at the model's input geometry, or the processor's float32 pixels."""
        if not self.ok:
            return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        w, h = self._size(*image.size)
        if self.crop:
            ch, cw = self.crop
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
        return torch.from_numpy(np.asarray(im).copy())

    def to_model(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 (B, C, H, W) model input from a batch of :meth:`__call__` outputs, computed on
        the batch's device; uint8 batches come out in channels-last memory order for free."""
        if batch.dtype != torch.uint8:
            return batch.float()
        x = batch.permute(0, 3, 1, 2).float()
        if x.device not in self._on_device:  # copied once: a copy per batch would sync CUDA
            self._on_device[x.device] = self.mean.to(x.device), self.std.to(x.device)
        mean, std = self._on_device[x.device]
        return (x * self.scale - mean) / std

    def matches(self, images: list, atol: float = 0.025) -> bool:
        """True when this reproduces the processor's pixels on ``images`` to within one 8-bit
        intensity level (resizing only the cropped region rounds a few pixels differently)."""
        if not self.ok:
            return False
        for im in images:
            ref = self.processor(images=im, return_tensors="pt")["pixel_values"][0]
            mine = self.to_model(self(im)[None])[0]
            if mine.shape != ref.shape or (mine - ref).abs().max() > atol:
                return False
        return True


def checked_pixels(processor, probe: Path | None) -> FastPixels:
    """:class:`FastPixels` for ``processor``, switched to the processor's own code unless it
    reproduces the processor on ``probe`` (a real image of the dataset, decoded at the draft
    scale the workers will decode it at: a 12 MP photo decoded and resized whole by the
    processor took 0.25 s of CPU) and on odd-sized noise."""
    fast = FastPixels(processor)
    fast.ok = fast.matches([_probe_image(probe, fast.draft), _probe_image(None)])
    return fast


def _probe_image(path: Path | None, draft: tuple[int, int] | None = None) -> Image.Image:
    """A real image of the dataset when readable, else (and also) odd-sized noise."""
    if path is not None:
        try:
            return load_rgb(path, draft=draft)
        except ValueError:
            pass
    noise = np.random.default_rng(0).integers(0, 256, (207, 301, 3), dtype=np.uint8)
    return Image.fromarray(noise)


def decode(path: Path, pixels: FastPixels, stamp: tuple[int, int] | None = None):
    """One file as the model's input picture (uint8 at its geometry, see :class:`FastPixels`)
    and ``""``, or None and the reason it is skipped: every engine decodes through here, so
    this is the one place where a file's decoded picture exists.

    ``stamp`` (size, mtime_ns) is what the manifest recorded when it hashed the file; a file
    that no longer matches is not decoded (see :func:`_as_ingested`).
    """
    fault_point("embed:decode")
    try:
        changed = _as_ingested(path, stamp)
        picture = None if changed else pixels(load_rgb(path, draft=pixels.draft))
        changed = changed or _as_ingested(path, stamp)  # changed while being decoded
    except Exception as exc:  # any failure must skip the file, not end the run
        # a file that vanished between the check and the read is not broken: never cache it
        return None, _as_ingested(path, stamp) or skip_reason(exc)
    return (None, changed) if changed else (picture, "")


class Images(Dataset):
    """``(i, picture, reason)`` per file, decoded (:func:`decode`) in worker processes; a bad
    file yields its reason, not an error. ``stamps``: see :func:`decode`. ``counted``: the
    files decoded are counted in memory the workers share, so that the process running the
    model knows when they are all decoded (:meth:`all_decoded`)."""

    def __init__(
        self, root: Path, paths: list[str], pixels: FastPixels, stamps=None, counted=False
    ) -> None:
        self.root, self.paths, self.pixels, self.stamps = root, paths, pixels, stamps
        self.decoded = torch.multiprocessing.Value("i", 0) if counted else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        stamp = self.stamps[i] if self.stamps is not None else None
        item = (i, *decode(os_path(self.root, self.paths[i]), self.pixels, stamp))
        if self.decoded is not None:
            with self.decoded.get_lock():
                self.decoded.value += 1
        return item

    def all_decoded(self) -> bool:
        """Whether every file was decoded (False when not counted)."""
        return self.decoded is not None and self.decoded.value >= len(self.paths)


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


def cacheable(failed: dict[str, str]) -> dict[str, str]:
    """The failures that are facts about the image, worth storing in a shard: not those of
    files that were not as ingested, nor environmental or unexpected ones (see
    :func:`~embedscope.images.skip_reason`), which the next run tries again."""
    return {s: r for s, r in failed.items() if lasting(r) and not r.startswith(NOT_AS_INGESTED)}


def stamps_of(images) -> list[tuple[int, int]]:
    """The (size, mtime_ns) the manifest recorded for each of ``images`` (manifest rows)."""
    return images[["bytes", "mtime_ns"]].to_numpy(dtype=np.int64).tolist()


def collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """One batch from :class:`Images` items: the ids and stacked pictures of the decoded
    files, and ``(id, reason)`` of the others."""
    good = [(i, p) for i, p, _ in items if p is not None]
    bad = [(i, r) for i, p, r in items if p is None]
    ids = [i for i, _ in good]
    # default_collate stacks straight into shared memory inside a worker: one copy fewer
    pixels = default_collate([p for _, p in good]) if good else None
    return ids, pixels, bad


def decode_seconds(
    root: Path, paths: list[str], pixels: FastPixels
) -> tuple[float | None, list[torch.Tensor]]:
    """Median CPU seconds to decode one of ``paths`` and fit it to the model's geometry, timed
    here (what a worker spends per image, whatever else the machine runs: like the model's
    cost, see :func:`resolve_workers`), and the pictures made; None when none was readable."""
    times, pictures = [], []
    for rel in paths:
        t0 = time.thread_time()
        picture, _ = decode(os_path(root, rel), pixels)
        if picture is None:  # an unreadable file is the loader's to report, not this estimate's
            continue
        times.append(time.thread_time() - t0)
        pictures.append(picture)
    return (float(np.median(times)) if times else None), pictures


def resolve_workers(
    num_workers: int | None,
    images: int,
    batch_size: int,
    device,
    costs: tuple[float, float] | None = None,
) -> int:
    """Decoding processes. None for a single batch (starting workers costs more); on an
    accelerator host every core but the one feeding the device. On a CPU host the decoders and
    the model share the cores, so ``costs`` — seconds per image to decode and to run the
    model, each on one core, as measured here — say how many cores' worth of decoding keeps
    every core busy: under half a core, decoding in the main process beats shipping pictures
    between processes (1.08x on the sample); else that many workers, rounded up (two workers
    ran 4000x3000 JPEGs 1.09x one on 2 cores). Unmeasured: half the cores."""
    if num_workers is not None:
        return int(num_workers)
    if images <= batch_size:
        return 0
    cores = usable_cores()
    if torch.device(device).type != "cpu":
        return max(1, cores - 1)
    if not costs:
        return max(1, cores // 2)
    decode, forward = costs
    share = cores * decode / (decode + forward)  # cores' worth of decoding needed
    return 0 if share < 0.5 else min(cores, math.ceil(share))


def ramped_batches(n: int, batch_size: int, workers: int) -> list[list[int]]:
    """Index batches of ``batch_size``, the first round (one batch per worker) a quarter of it
    and the second half of it, so the model starts after a few images are decoded, not a whole
    batch per worker: on 48 camera photos the first full batch alone took 15% of the run."""
    sizes = [max(1, batch_size // 4)] * workers + [max(1, batch_size // 2)] * workers
    out, at = [], 0
    for size in sizes:
        if at >= n:
            return out
        out.append(list(range(at, min(n, at + size))))
        at += size
    out += [list(range(i, min(n, i + batch_size))) for i in range(at, n, batch_size)]
    return out


def make_loader(
    root: Path,
    paths: list[str],
    pixels: FastPixels,
    *,
    batch_size: int,
    num_workers: int,
    device,
    stamps: list[tuple[int, int]] | None = None,
    ramp: bool = False,
) -> DataLoader:
    """Batches ``(ids, pixels, failures)``: uint8 pixels decoded in worker processes, pinned
    for an asynchronous copy when the model lives on CUDA. ``ramp``: smaller first batches
    (:func:`ramped_batches`; not for the precision race, whose batches must be alike), and
    decoded files counted (:meth:`Images.all_decoded`). About
    eight batches wait in the queues whatever the worker count (at least two per worker): with
    15 workers and batch 256, four each would hold 2.3 GB of shared memory, more than many
    containers' /dev/shm."""
    return DataLoader(
        Images(root, paths, pixels, stamps, counted=ramp and num_workers > 0),
        batch_sampler=ramped_batches(len(paths), batch_size, num_workers if ramp else 0),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
        prefetch_factor=max(2, 8 // num_workers) if num_workers else None,
    )
