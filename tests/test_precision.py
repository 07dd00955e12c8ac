"""Precision chosen by agreement: real models embedded both ways, the fidelity rule applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import vit_config
from PIL import Image

import embedscope.embed.calibrate
import embedscope.embed.precision
from embedscope.embed import embed, pool
from embedscope.embed.precision import faithful
from embedscope.images import load_rgb
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.models import load_model
from embedscope.store import load_embeddings

SAMPLE = Path(__file__).parents[1] / "data" / "sample"


def _vit(path: Path, *, patch_bias: float = 0.0, **sizes) -> Path:
    """A random ViT saved with save_pretrained; ``patch_bias`` gives every patch token a large
    fixed offset (the "massive activations" real transformers grow), so what tells images
    apart is a small difference on top of it: float32 keeps it, bf16 and int8 round it away."""
    from transformers import ViTImageProcessorPil, ViTModel

    torch.manual_seed(0)
    net = ViTModel(vit_config(**sizes), add_pooling_layer=False)
    if patch_bias:
        signs = torch.randint(0, 2, (net.config.hidden_size,))
        with torch.no_grad():
            net.embeddings.patch_embeddings.projection.bias.copy_(patch_bias * (signs * 2 - 1))
    net.save_pretrained(path)
    side = net.config.image_size
    ViTImageProcessorPil(size={"height": side, "width": side}).save_pretrained(path)
    return path


def _near_twins(root: Path, n: int = 40) -> Path:
    """``n`` images that differ from one texture by a little noise, in two classes."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3))
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return root


def test_fidelity_rule() -> None:
    assert faithful({"neighbour_agreement": 0.90, "knn_accuracy_delta": -0.01})
    assert faithful({"neighbour_agreement": 0.95, "knn_accuracy_delta": None})
    assert not faithful({"neighbour_agreement": 0.89, "knn_accuracy_delta": 0.0})
    assert not faithful({"neighbour_agreement": 0.99, "knn_accuracy_delta": 0.0167})
    assert not faithful({"neighbour_agreement": None, "knn_accuracy_delta": None})


@pytest.mark.parametrize("offered", [None, "bf16", "int8"])
def test_auto_falls_back_to_float32_when_the_candidate_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offered: str | None
) -> None:
    """``offered``: the candidate this machine's hardware offers (None), or one set for the
    test so both reduced paths are checked on every machine."""
    if offered:
        monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: [offered])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # judged on fidelity alone
    layout = Layout("twins", tmp_path / "data", tmp_path / "reports")
    ingest(str(_near_twins(tmp_path / "images")), layout)
    model = str(_vit(tmp_path / "vit", patch_bias=20.0))
    facts = embed(layout, model, progress=False)
    check = facts["precision_check"]
    assert check["candidate"] in ("bf16", "int8") and check["images"] == 40
    assert check["neighbour_agreement"] < 0.9 and not check["kept"]
    assert facts["precision"] == "float32"
    # the calibration batch's vectors were kept, and they are float32's
    forced = embed(layout, model, progress=False, precision="fp32")
    assert forced["model_key"] == facts["model_key"] and forced["from_cache"] == 40
    net, processor, _ = load_model(model)
    emb = load_embeddings(layout, model)
    px = processor(images=load_rgb(tmp_path / "images" / emb.rows["path"][5]), return_tensors="pt")
    with torch.inference_mode():
        alone = pool(net, px["pixel_values"], "cls")[0].numpy()
    np.testing.assert_allclose(emb.vectors[5], alone, rtol=1e-4, atol=1e-4)


def test_auto_keeps_a_candidate_the_analysis_cannot_tell_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small ViT on the sample's 360 images: bf16 neighbours and kNN accuracy match
    float32's, so auto keeps bf16 (set as the offer: emulated bf16 rounds the same way)."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # tiny: speed means nothing
    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    ingest(str(SAMPLE), layout)
    sizes = dict(hidden_size=64, intermediate_size=256, image_size=64, patch_size=16)
    model = str(_vit(tmp_path / "vit", **sizes))
    facts = embed(layout, model, progress=False, calibration_images=360)
    check = facts["precision_check"]
    assert check["kept"] and check["images"] == 360
    assert check["neighbour_agreement"] >= 0.9 and abs(check["knn_accuracy_delta"]) <= 0.01
    assert facts["precision"] == "bfloat16" and facts["images"] == 360
    # the decision is remembered for this dataset, model and hardware: no second calibration
    again = embed(layout, model, progress=False)
    assert again["precision_check"] == check and again["from_cache"] == 360


def _twins_and_vit(tmp_path: Path) -> tuple[Layout, str]:
    layout = Layout("twins", tmp_path / "data", tmp_path / "reports")
    ingest(str(_near_twins(tmp_path / "images")), layout)
    return layout, str(_vit(tmp_path / "vit"))


def test_the_race_keeps_the_fastest_candidate_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both reduced paths run side by side with float32 on the calibration batches; the one
    with the larger measured speed-up goes on (any speed-up counts here: the model is tiny)."""
    monkeypatch.setattr(
        embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16", "int8"]
    )
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)
    layout, model = _twins_and_vit(tmp_path)
    check = embed(layout, model, progress=False)["precision_check"]
    speedups = check["speedups"]
    assert set(speedups) == {"bf16", "int8"} and all(v > 0 for v in speedups.values())
    assert check["candidate"] == max(speedups, key=speedups.get)
    assert check["images"] == 40 and "neighbour_agreement" in check


def test_a_candidate_that_is_not_faster_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A speed-up no hardware reaches: the candidate loses the race whatever its fidelity,
    the run is float32's and the calibration vectors it kept are float32's too."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["int8"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 1e9)
    layout, model = _twins_and_vit(tmp_path)
    facts = embed(layout, model, progress=False)
    check = facts["precision_check"]
    assert not check["kept"] and check["reason"].startswith("not faster here")
    assert check["candidate"] == "int8" and facts["precision"] == "float32"
    forced = embed(layout, model, progress=False, precision="fp32")
    assert forced["model_key"] == facts["model_key"] and forced["from_cache"] == 40
