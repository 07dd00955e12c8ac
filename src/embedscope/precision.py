"""Numeric precision of the forward pass, chosen by what the analysis sees.

A reduced precision is *faithful* when, on the same images, the top-10 neighbour sets agree
with float32's on average >= 0.90 and the leave-one-out kNN accuracy moves by <= 0.01.
``auto`` tries the fastest candidate the hardware offers on a calibration batch embedded both
ways and keeps it only when it is faithful there; otherwise float32. Per-image cosine is no
guide: it can stay high while neighbourhoods reshuffle, and drop on images nobody looks for.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from embedscope.analyse import knn_report, neighbors

#: What ``precision=`` accepts; short names map to the names recorded in outputs.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
MIN_AGREEMENT = 0.90
MAX_KNN_DELTA = 0.01


def check_precision(precision: str) -> str:
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def is_convolutional(model: torch.nn.Module) -> bool:
    """True for CNNs (a convolution whose kernel differs from its stride), not for the patch
    embedding of a vision transformer."""
    return any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size != m.stride for m in model.modules()
    )


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic (AVX-512-BF16 or AMX): without it bf16 is emulated, slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def candidate(device: torch.device, model: torch.nn.Module) -> str | None:
    """The fastest reduced precision this hardware offers for ``model``, or None.

    bf16 on CUDA (fp16 on GPUs without bf16) and on CPUs with native bf16, CNNs included;
    fp16 on MPS; on other CPUs int8 dynamic quantisation of the linear layers, which only
    attention models are made of (a CNN's work is in convolutions it would leave alone).
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    if device.type == "cpu":
        if cpu_has_bf16():
            return "bf16"
        if not is_convolutional(model) and _quantize_dynamic() is not None:
            return "int8"
    return None


def for_precision(model: torch.nn.Module, precision: str, device: torch.device):
    """The module that runs at ``precision``: ``model`` itself, or for int8 a dynamically
    quantised copy (linear layers only, CPU only; ``model`` is left untouched)."""
    if precision != "int8":
        return model
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on CPU only, not on {device.type}")
    quantize = _quantize_dynamic()
    if quantize is None:
        raise ValueError(f"int8 needs torch.ao.quantization, gone from torch {torch.__version__}")
    with warnings.catch_warnings():  # its deprecation notices say nothing a user can act on
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8)


def _quantize_dynamic():
    """torch's eager dynamic quantisation (deprecated in favour of torchao, still shipped in
    torch 2.13), or None where a torch release has dropped it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError:
            return None
    return quantize_dynamic


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """A fresh autocast context for bf16/fp16 (matmuls and convolutions in the low type,
    reductions such as softmax and layer norm kept in float32), a no-op otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def agreement(
    reference: np.ndarray, other: np.ndarray, labels: np.ndarray, k: int = 10
) -> dict[str, float | int | None]:
    """How far the analysis moves from ``reference`` vectors to ``other`` ones of the same
    images: mean overlap of the top-``k`` cosine neighbour sets, and the change in leave-one-out
    kNN accuracy (None without two labelled classes)."""
    idx_ref, sim_ref = neighbors(reference, k)
    idx_other, sim_other = neighbors(other, k)
    k = idx_ref.shape[1]
    overlap = [len(set(a) & set(b)) / max(k, 1) for a, b in zip(idx_ref, idx_other, strict=True)]
    acc_ref = knn_report(labels, idx_ref, sim_ref)["knn_accuracy"]
    acc_other = knn_report(labels, idx_other, sim_other)["knn_accuracy"]
    delta = None if acc_ref is None else round(float(acc_other - acc_ref), 4)
    return {
        "neighbour_agreement": round(float(np.mean(overlap)), 4) if k else None,
        "knn_accuracy_delta": delta,
        "images": int(len(reference)),
        "k": int(k),
    }


def faithful(
    figures: dict, min_agreement: float = MIN_AGREEMENT, max_knn_delta: float = MAX_KNN_DELTA
) -> bool:
    """The fidelity rule on :func:`agreement`'s figures (no kNN figure: agreement alone)."""
    if figures["neighbour_agreement"] is None or figures["neighbour_agreement"] < min_agreement:
        return False
    delta = figures["knn_accuracy_delta"]
    return delta is None or abs(delta) <= max_knn_delta
