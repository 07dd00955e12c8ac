"""A first run with precision="auto" is never slower than one in float32: the fidelity check
runs only where the speed-up it buys can pay for the images it embeds twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import vit_config
from PIL import Image

import embedscope.embed.calibrate as calibrate
import embedscope.embed.precision
from embedscope.embed import embed
from embedscope.embed.calibrate import PRIOR_SPEEDUP, expected_check, unpaid
from embedscope.embed.precision import PrecisionRace
from embedscope.ingest import decode_cost, ingest
from embedscope.layout import Layout, read_json

CPU = torch.device("cpu")


def test_the_check_pays_only_where_its_saving_covers_it() -> None:
    """Up to 1,024 images the check takes every image: no speed-up repays it. At 4,096 it
    takes 1,024, repaid from 1.33x (bf16 MobileNetV2 ran 2.1x here, DINOv2-S 1.0x)."""
    for n in (40, 360, 512, 1024):
        assert expected_check(n) == n
        assert unpaid(n, expected_check(n), PRIOR_SPEEDUP).startswith("float32 kept: checking")
    assert expected_check(4096) == 1024
    assert unpaid(4096, 1024, 2.1) is None
    assert unpaid(4096, 1024, 1.3) is not None and unpaid(4096, 1024, None) is not None
    # growing the check: only the images still to embed can repay the extra ones
    assert unpaid(4096 - 512, 512, 2.1) is None and unpaid(600 - 256, 256, 2.1) is not None


def test_a_remembered_race_whose_check_cannot_pay_runs_float32_alone() -> None:
    result = {"speedups": {"bf16": 1.6}, "speedup_low": {"bf16": 1.3}, "batches": 6}
    race = PrecisionRace(
        torch.nn.Identity(),
        {"bf16": torch.nn.Identity()},
        CPU,
        remembered=result,
        unpaid=lambda speedup: f"too dear at {speedup}x",
    )
    assert race.lows == {} and race.not_faster()["reason"] == "too dear at 1.6x"


def _twins(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return root


def _vit(path: Path) -> str:
    from transformers import ViTImageProcessorPil, ViTModel

    torch.manual_seed(0)
    net = ViTModel(vit_config(), add_pooling_layer=False)
    net.save_pretrained(path)
    side = net.config.image_size
    ViTImageProcessorPil(size={"height": side, "width": side}).save_pretrained(path)
    return str(path)


@pytest.fixture
def small_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Layout, str]:
    """40 images and a tiny ViT, int8 offered and any speed-up counted as a win; a cache of its
    own, so the races it remembers reach no other test."""
    monkeypatch.setenv("EMBEDSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calibrate, "candidates", lambda device, net: ["int8"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)
    layout = Layout("twins", tmp_path / "data", tmp_path / "reports")
    ingest(str(_twins(tmp_path / "images")), layout)
    return layout, _vit(tmp_path / "vit")


def test_a_small_set_embeds_in_float32_without_racing(small_set: tuple[Layout, str]) -> None:
    """Before: 40 images embedded twice (float32 and the candidate). After: once, in float32,
    and no decision is remembered (a grown dataset may pay); a size asked for still checks."""
    layout, model = small_set
    facts = embed(layout, model, progress=False, precision_race="again")
    check = facts["precision_check"]
    assert facts["precision"] == "fp32" and "speedups" not in check
    assert check["reason"].startswith("float32 kept: checking 40 of 40 images")
    assert not read_json(layout.precision_decisions, default={})
    forced = embed(layout, model, progress=False, precision="fp32")
    assert forced["model_key"] == facts["model_key"] and forced["from_cache"] == 40
    asked = Layout("asked", layout.data_root, layout.reports_root)
    ingest(str(layout.data_root.parent / "images"), asked)
    checked = embed(asked, model, progress=False, calibration_images=40, precision_race="again")
    assert checked["precision_check"]["images"] == 40


@pytest.mark.parametrize(("needed", "grown"), [(12, True), (40, False)])
def test_the_check_grows_only_when_the_rest_of_the_run_repays_it(
    small_set: tuple[Layout, str], monkeypatch: pytest.MonkeyPatch, needed: int, grown: bool
) -> None:
    """A first sample of 8 at a 2x speed-up: growing by 4 images is repaid by the 32 still to
    embed (16 forwards saved); growing by 32 is not, and the run goes on in float32 with the
    sample's float32 vectors."""
    layout, model = small_set
    real = calibrate.unpaid
    at_2x = lambda images, checked, speedup: real(images, checked, 2.0)  # noqa: E731
    monkeypatch.setattr(calibrate, "unpaid", at_2x)
    monkeypatch.setattr(calibrate, "MIN_CALIBRATION", 8)
    monkeypatch.setattr(calibrate, "expected_check", lambda images: 8)
    monkeypatch.setattr(calibrate, "calibration_needed", lambda figures: needed)
    facts = embed(layout, model, progress=False, batch_size=4, precision_race="again")
    check = facts["precision_check"]
    assert ("grown_from" in check) is grown
    if grown:
        assert check["images"] == 12
    else:
        assert check["images"] == 8 and not check["kept"] and facts["precision"] == "fp32"
        assert check["reason"].endswith("(first 8 judged)")
        assert not read_json(layout.precision_decisions, default={})
    assert facts["images"] == 40


def test_worker_costs_are_measured_once_per_run_and_the_models_once_per_machine(
    small_set: tuple[Layout, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the check and the stream each timed decodes (4, then 1) though ingest had
    decoded every file. After: the decode cost is ingest's (no file is decoded to time it);
    four pictures are decoded only to time a model's forward, once per model and precision
    on this machine, and a later dataset decodes nothing before its workers start."""
    import embedscope.embed.stream as stream

    layout, model = small_set
    decoded, forwards = [], []
    real_decode, real_forward = stream.decode_seconds, stream._forward_seconds
    monkeypatch.setattr(
        stream,
        "decode_seconds",
        lambda root, paths, px: decoded.append(len(paths)) or real_decode(root, paths, px),
    )
    monkeypatch.setattr(
        stream,
        "_forward_seconds",
        lambda enc, pics: forwards.append(enc.precision) or real_forward(enc, pics),
    )
    monkeypatch.setattr(stream, "cache_root", lambda: layout.data_root / "kit-cache")
    first = embed(layout, model, progress=False, batch_size=4, calibration_images=16)
    ingested = decode_cost(layout)
    assert ingested and first["ms_decode_per_image"] == round(ingested * 1000, 2)
    int8 = first["precision"] == "int8"
    assert forwards == ["fp32"] + (["int8"] if int8 else [])
    assert decoded == [4] + ([4] if int8 else [])  # pictures to time a forward, no more
    again = Layout("again", layout.data_root, layout.reports_root)
    ingest(str(layout.data_root.parent / "images"), again)
    facts = embed(again, model, progress=False, batch_size=4, precision="fp32")
    assert decoded == [4] + ([4] if int8 else []) and len(forwards) == len(set(forwards))
    assert facts["ms_model_per_image"] > 0  # remembered, and no file decoded to find it
    # workers decoding at a finer scale than ingest's (a larger model input) time their own
    import embedscope.embed.plan as plan

    monkeypatch.setattr(plan, "INGEST_DRAFT", (8, 8))
    finer = Layout("finer", layout.data_root, layout.reports_root)
    ingest(str(layout.data_root.parent / "images"), finer)
    embed(finer, model, progress=False, batch_size=4, precision="fp32")
    assert decoded[-1] == 1 and len(decoded) == len(set(forwards)) + 1
