"""The embed path's decoding: camera-sized JPEGs decoded at reduced DCT scale, uint8 out of
the workers, and still the model processor's pixels and vectors."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedscope.embed import pool
from embedscope.embed.pixels import (
    FastPixels,
    Images,
    decode_seconds,
    make_loader,
    ramped_batches,
    resolve_workers,
)
from embedscope.images import decode, load_rgb
from embedscope.models import load_model


def _photo(path: Path, size: tuple[int, int] = (2000, 1500)) -> Path:
    """A photo-like JPEG: smooth shapes plus sensor-like noise, quality 90."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), np.int16)
    arr = arr + rng.integers(-8, 9, arr.shape, dtype=np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_camera_jpegs_decode_at_draft_scale_and_embed_like_full_decodes(
    tmp_path: Path, builtin_cache: Path
) -> None:
    net, processor, _ = load_model("mobilenet_v2")
    fast = FastPixels(processor)
    assert fast.draft == (256, 256)  # the short side the processor resizes to
    photo = _photo(tmp_path / "photo.jpg")
    Image.open(photo).save(tmp_path / "photo.png")
    im, header = decode(photo, draft=fast.draft)
    assert (header["width"], header["height"]) == (2000, 1500) and im.size == (500, 375)
    assert decode(tmp_path / "photo.png", draft=fast.draft)[0].size == (2000, 1500)

    _, small, reason = Images(tmp_path, ["photo.jpg"], fast)[0]
    assert reason == "" and small.dtype == torch.uint8 and small.shape == (224, 224, 3)
    mine = fast.to_model(small[None])
    full = processor(images=load_rgb(photo), return_tensors="pt")["pixel_values"]
    assert (mine - full).abs().mean() < 0.01  # a fraction of one 8-bit level on average
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(
            pool(net, mine, "pooler"), pool(net, full, "pooler")
        )
    assert cos.item() > 0.999


def test_loader_batches_travel_as_uint8_and_report_bad_files(
    tmp_path: Path, builtin_cache: Path
) -> None:
    processor = load_model("mobilenet_v2")[1]
    fast = FastPixels(processor)
    for i in range(5):
        Image.new("RGB", (64 + i, 48), (i * 40, 10, 200)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths = ["0.jpg", "bad.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    loader = make_loader(tmp_path, paths, fast, batch_size=4, num_workers=1, device="cpu")
    batches = list(loader)
    assert [ids for ids, _, _ in batches] == [[0, 2, 3], [4, 5]]
    assert all(px.dtype == torch.uint8 and px.shape[1:] == (224, 224, 3) for _, px, _ in batches)
    assert [i for i, _ in batches[0][2]] == [1] and "not an image" in batches[0][2][0][1]


def test_cpu_thread_counts_are_tried_in_turn_then_the_count_is_restored() -> None:
    from embedscope.embed import embedded

    seen: list[int] = []

    def encoder(px: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return px.float().mean(dim=(1, 2, 3))[:, None]

    start = torch.get_num_threads()
    batches = [([i], torch.full((1, 4, 4, 3), i, dtype=torch.uint8), []) for i in range(8)]
    out = list(embedded(batches, encoder, threads=[3, 1]))
    assert [ids for ids, _, _ in out] == [[i] for i in range(8)]
    assert [float(v[0, 0]) for _, v, _ in out] == [float(i) for i in range(8)]
    # one warm-up batch, two batches at each count, then the faster count for the rest
    assert seen[1:3] == [3, 3] and seen[3:5] == [1, 1] and len(set(seen[5:])) == 1
    assert seen[5] in (1, 3) and torch.get_num_threads() == start
    seen.clear()  # a single count (the workers' need was measured): used from the first batch
    assert len(list(embedded(batches, encoder, threads=[1]))) == 8
    assert seen == [1] * 8 and torch.get_num_threads() == start


def test_decoding_workers_follow_the_measured_costs(tmp_path: Path, builtin_cache: Path) -> None:
    """On a CPU host: none when decoding is a small share of the work, enough cores' worth
    (never more than the cores) when camera JPEGs make it the larger one; one per core but
    one beside an accelerator; half the cores when nothing was measured."""
    cores = len(os.sched_getaffinity(0))
    cpu = lambda costs: resolve_workers(None, 1000, 8, "cpu", costs)  # noqa: E731
    # the sample's WebPs against MobileNetV2, as measured (one core each): under half a core
    assert cpu((0.00075, 0.020)) == 0 or cores * 0.00075 / 0.02075 >= 0.5
    camera = cpu((0.020, 0.020))
    assert camera == min(cores, math.ceil(cores * 0.020 / (0.020 + 0.020)))
    assert 1 <= camera <= cores and cpu((10.0, 1e-6)) == cores
    assert cpu(None) == max(1, cores // 2)
    assert resolve_workers(None, 1000, 8, "cuda", (0.030, 0.001)) == max(1, cores - 1)
    assert resolve_workers(None, 8, 8, "cpu", (10.0, 1e-6)) == 0  # one batch: no workers
    assert resolve_workers(3, 1000, 8, "cpu", (0.002, 0.010)) == 3  # asked for
    # the decode cost is what decoding really takes here, at draft scale
    fast = FastPixels(load_model("mobilenet_v2")[1])
    seconds, pictures = decode_seconds(tmp_path, ["photo.jpg", "missing.jpg"], fast)
    assert seconds is None and not pictures
    _photo(tmp_path / "photo.jpg")
    seconds, pictures = decode_seconds(tmp_path, ["photo.jpg", "missing.jpg"], fast)
    assert seconds > 0 and len(pictures) == 1 and pictures[0].dtype == torch.uint8


def test_the_stream_starts_with_small_batches_and_covers_every_image_once() -> None:
    """Two workers, batch 8: the model's first batches come after 2 and 4 decodes, not 8."""
    batches = ramped_batches(45, 8, workers=2)
    assert [len(b) for b in batches] == [2, 2, 4, 4, 8, 8, 8, 8, 1]
    assert sum(batches, []) == list(range(45))
    assert ramped_batches(3, 8, workers=2) == [[0, 1], [2]]
    plain = [list(range(0, 8)), list(range(8, 16)), [16, 17, 18, 19]]
    assert ramped_batches(20, 8, workers=0) == plain


def test_the_model_takes_the_cores_the_workers_leave_once_every_file_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a model started on the cores the decoding workers left (one of 2) kept that
    count to the end, the other core idle once the workers were done. After: the workers
    count the files they decoded in shared memory, and once all are, the model takes every
    core nothing else runs on (:func:`tail_threads`, here 2)."""
    import embedscope.embed.stream as stream

    for i in range(24):
        Image.fromarray(np.full((40, 40, 3), i * 9, np.uint8)).save(tmp_path / f"{i:02d}.png")
    paths = sorted(p.name for p in tmp_path.glob("*.png"))
    fast = FastPixels(load_model("mobilenet_v2")[1])
    loader = make_loader(
        tmp_path, paths, fast, batch_size=4, num_workers=1, device="cpu", ramp=True
    )
    monkeypatch.setattr(stream, "tail_threads", lambda: 2)
    seen: list[tuple[int, bool]] = []

    def model(pixels: torch.Tensor) -> torch.Tensor:
        if not seen:  # a slow first batch: the worker decodes ahead, as beside a real model
            time.sleep(0.5)
        seen.append((torch.get_num_threads(), loader.dataset.all_decoded()))
        return pixels.float().mean(dim=(1, 2))

    before = torch.get_num_threads()
    ids = [i for batch, _, _ in stream.embedded(loader, model, threads=[1]) for i in batch]
    assert sorted(ids) == list(range(24)) and loader.dataset.all_decoded()
    assert seen[0][0] == 1 and (2, True) in seen  # one thread first, two once all decoded
    assert all(threads == 1 for threads, decoded in seen if not decoded)
    assert torch.get_num_threads() == before  # restored after the loop
    assert 1 <= stream.tail_threads() <= len(os.sched_getaffinity(0))
    plain = make_loader(tmp_path, paths, fast, batch_size=4, num_workers=1, device="cpu")
    assert not plain.dataset.all_decoded()  # not counted: never widened (the race's loader)
