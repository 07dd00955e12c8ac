"""How batches flow through the model: decoding workers, model threads, the pipelined forward
loop and the shard writer. Every engine's vectors pass through :func:`write_shards`."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import cacheable, decode_seconds, resolve_workers
from embedscope.embed.precision import hardware
from embedscope.images import decoder_identity
from embedscope.layout import read_json, update_json
from embedscope.machine import runnable_elsewhere, usable_cores
from embedscope.models import cache_root
from embedscope.store import write_shard

#: The model's one-thread seconds per image, by model, pooling, precision and hardware, kept in
#: the kit's cache beside the precision races: like a race, it holds for every dataset.
FORWARD_COSTS = "forward-costs.json"


def choose_workers(
    num_workers: int | None,
    root: Path,
    paths: list[str],
    batch_size: int,
    encoder: Encoder,
    *,
    decode: float | None = None,
    identity: str | None = None,
) -> tuple[int, tuple[float, float] | None]:
    """Decoding workers for ``paths``, and the costs that decide (seconds per image to decode
    and to run ``encoder``, each on one core), found only where they decide: a CPU host, no
    count asked for, more than one batch. Neither is measured again where it is known:
    ``decode``, the decode cost ingest's pass recorded (:func:`~embedscope.ingest.decode_cost`)
    or this run measured already; the model's cost is remembered for the model ``identity`` on
    this hardware (:data:`FORWARD_COSTS`; CPU time on one thread, so a busy machine measures
    the same), and measured only the first time. Both known, no file is decoded here: the
    workers start at once (on 48 camera photos the four decodes of the old re-measure ran
    before the first batch, alone on one core)."""
    costs = None
    if num_workers is None and encoder.device.type == "cpu" and len(paths) > batch_size:
        forward = remembered_forward(encoder, identity)
        if decode is None or forward is None:  # pictures to time what is not known
            files = paths[:4] if forward is None else paths[:1]  # a forward on 4, as remembered
            measured, pictures = decode_seconds(root, files, encoder.pixels)
            decode = measured if decode is None else decode
            if pictures and forward is None:
                forward = _forward_seconds(encoder, pictures)
                _remember_forward(encoder, identity, forward)
        if decode is not None and forward is not None:
            costs = decode, forward
    return resolve_workers(num_workers, len(paths), batch_size, encoder.device, costs), costs


def _forward_key(encoder: Encoder, identity: str) -> str:
    return f"{identity}|{encoder.pooling}|{encoder.precision}|{hardware(encoder.device)}"


def remembered_forward(encoder: Encoder, identity: str | None) -> float | None:
    """The model's one-thread seconds per image as :data:`FORWARD_COSTS` remembers it for
    ``encoder`` on this hardware, or None (never measured here; or no ``identity``)."""
    if identity is None:
        return None
    known = (read_json(cache_root() / FORWARD_COSTS, default={}) or {}).get(
        _forward_key(encoder, identity)
    )
    return float(known) if isinstance(known, int | float) and known > 0 else None


def _remember_forward(encoder: Encoder, identity: str | None, seconds: float) -> None:
    """Keep ``seconds`` for every later run of this model on this hardware (merged under a
    lock: other runs share the file)."""
    if identity is not None:
        key = _forward_key(encoder, identity)
        update_json(cache_root() / FORWARD_COSTS, lambda costs: costs.__setitem__(key, seconds))


def _forward_seconds(encoder: Encoder, pictures: list[torch.Tensor]) -> float:
    """CPU seconds per image of ``encoder``'s forward on one thread, on a small batch of
    ``pictures`` (the second call is timed: the first one picks kernels). One thread measures
    the model's own work, the same on an idle machine as on a busy one, where threads waiting
    for each other at every layer made all-core timings 2-8x too slow (2 shared cores)."""
    batch = torch.stack(pictures)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(2):
                t0 = time.process_time()
                encoder(batch)
    finally:
        torch.set_num_threads(threads)
    return (time.process_time() - t0) / len(pictures)


def embedded(
    loader: Iterable, encoder, *, threads: Sequence[int] = ()
) -> Iterator[tuple[list[int], np.ndarray | None, list]]:
    """``(ids, vectors, failures)`` per loader batch. A batch's vectors are fetched from the
    device only once the next batch has been launched, so a GPU never idles while the host
    copies results back. ``threads``: CPU thread counts to try for the model (see
    :func:`thread_options`); the fastest measured is kept for the rest of the loop, until the
    workers have decoded every file (a loader of :func:`~embedscope.embed.pixels.make_loader`
    with ``ramp``): the model then takes the cores they left (:func:`tail_threads`)."""
    pending = None
    trial = _ThreadTrial(threads)
    dataset = getattr(loader, "dataset", None)
    widen = bool(threads) and callable(getattr(dataset, "all_decoded", None))
    try:
        with torch.inference_mode():
            for ids, pixels, bad in loader:
                out = encoder(pixels) if pixels is not None else None
                if pending is not None:
                    yield _fetched(*pending)
                pending = ids, out, bad
                trial.tick(len(ids) + len(bad))
                if widen and trial.settled and dataset.all_decoded():
                    more = tail_threads()  # a worker still handing its last batch over counts
                    widen = more <= torch.get_num_threads()  # as busy: tried again next batch
                    torch.set_num_threads(max(torch.get_num_threads(), more))
            if pending is not None:
                yield _fetched(*pending)
    finally:
        trial.restore()


def tail_threads() -> int:
    """The model's threads once the decoding workers are done: every core nothing else runs
    on. Until then they share the cores (:func:`thread_options`); after, a model left on the
    cores the workers had left it idled the rest (on 48 camera photos with 2 workers, the
    last half of the images ran on one of 2 cores)."""
    others = runnable_elsewhere()
    return max(1, usable_cores() - others) if others is not None else 1


def thread_options(device: torch.device, workers: int, measured: bool = False) -> list[int]:
    """On a CPU host, decoding workers and the model's threads share the cores: all threads
    win when decoding is cheap (the workers mostly wait), the cores the workers leave free win
    when it is not (camera JPEGs; or a busy machine), measured 2.5x apart here. Both are tried,
    unless the workers were ``measured`` to be needed (see
    :func:`~embedscope.embed.pixels.resolve_workers`): decoding is then costly and the free
    cores are the model's from the start (trying all threads first ran 48 camera photos at
    6.9-9.9 images/s, against 18.7-20.8 on 2 shared cores)."""
    if device.type != "cpu" or not workers:
        return []
    now, free = torch.get_num_threads(), max(1, usable_cores() - workers)
    if free >= now:
        return []
    return [free] if measured else [now, free]


class _ThreadTrial:
    """Times ``span`` batches at each thread count (after ``warmup`` batches, which include
    worker start-up) and keeps the one with the most images per second; a single count is
    simply used throughout."""

    def __init__(self, options: Sequence[int], warmup: int = 1, span: int = 2) -> None:
        self.options, self.warmup, self.span = list(options), warmup, span
        self.original = torch.get_num_threads()
        if self.options:
            torch.set_num_threads(self.options[0])
        self.rates: list[float] = []
        self.batches = self.images = 0
        self.start = 0.0

    @property
    def settled(self) -> bool:
        """Whether the thread count is decided (a single option, or every one timed)."""
        return len(self.options) < 2 or len(self.rates) == len(self.options)

    def tick(self, images: int) -> None:
        if self.settled:
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


def write_shards(
    batches: Iterable[tuple[list[str], np.ndarray | None, dict[str, str]]],
    shard_dir: Path,
    *,
    total: int,
    shard_size: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Write ``(hashes, vectors, failures by hash)`` batches, as any engine yields them, into
    shards of about ``shard_size`` images; return the vectors and every failure (those that
    are not facts about the image are reported, never stored: see :func:`cacheable`)."""
    from tqdm.auto import tqdm

    buf_sha: list[str] = []
    buf_vec: list[np.ndarray] = []
    buf_fail: dict[str, str] = {}
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}

    def flush() -> None:
        write_shard(shard_dir, buf_sha, buf_vec, cacheable(buf_fail), decoder_identity())
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
