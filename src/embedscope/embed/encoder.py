"""The model's side of the embedding stage: one pooled vector per image, at one precision."""

from __future__ import annotations

import torch

from embedscope.embed.pixels import FastPixels
from embedscope.embed.precision import autocast, for_precision, is_convolutional

POOLINGS = ("auto", "pooler", "cls", "mean", "image_features")
#: Model types pooled by their CLS token: the ViT family's ``pooler_output`` is an extra dense
#: layer absent from most checkpoints; DINOv2 has no pooler and its own kNN evaluation uses CLS.
_CLS_MODEL_TYPES = {"vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers"}


def resolve_pooling(model: torch.nn.Module, pooling: str = "auto") -> str:
    """Pick the pooled vector per architecture: CLIP-like models' projected image features,
    the CLS token for ViT-family and DINOv2 models, else the model's own pooler, else the
    token mean."""
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


class Encoder:
    """A model ready to turn loader batches into pooled vectors at one precision: input
    normalised on the model's device, channels-last for CNNs, autocast or int8 weights."""

    def __init__(
        self,
        net: torch.nn.Module,
        pooling: str,
        device: torch.device,
        pixels: FastPixels,
        precision: str = "fp32",
    ) -> None:
        self.precision, self.pooling, self.device, self.pixels = precision, pooling, device, pixels
        self.channels_last = is_convolutional(net)
        self.net = for_precision(net, precision, device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled vectors, left on the device: the copy back can wait for the next batch."""
        x = self.pixels.to_model(batch.to(self.device, non_blocking=True))
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        with autocast(self.precision, self.device):
            return pool(self.net, x.contiguous(memory_format=layout), self.pooling)
