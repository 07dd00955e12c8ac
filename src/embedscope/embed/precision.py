"""Numeric precision of the forward pass, chosen by what the analysis sees.

A reduced precision is *faithful* when, on the same images, the top-10 neighbour sets agree
with float32's on average >= 0.90 and the leave-one-out kNN accuracy moves by <= 0.01.
``auto`` races the candidates the hardware offers against float32 on a calibration batch, and
keeps the fastest only when it is measurably faster and faithful there; otherwise float32.
Per-image cosine is no guide: it can stay high while neighbourhoods reshuffle, and drop on
images nobody looks for.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from embedscope.knn import knn_report, neighbors

#: What ``precision=`` accepts; short names map to the names recorded in outputs.
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
MIN_AGREEMENT = 0.90
MAX_KNN_DELTA = 0.01
#: A candidate must run at least this much faster than float32 (measured side by side on the
#: calibration batches) to be worth any loss: a native-bf16 CPU can still run a ViT slower in
#: bf16 than in float32 (0.56x measured here), int8 on the same CPU 1.8x faster.
MIN_SPEEDUP = 1.1


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


def candidates(device: torch.device, model: torch.nn.Module) -> list[str]:
    """The reduced precisions this hardware offers for ``model``, likeliest fastest first;
    which one really is faster is measured (see :class:`PrecisionRace`).

    bf16 on CUDA (fp16 on GPUs without bf16) and on CPUs with native bf16, CNNs included;
    fp16 on MPS; on CPUs int8 dynamic quantisation of the linear layers, which only attention
    models are made of (a CNN's work is in convolutions it would leave alone).
    """
    if device.type == "cuda":
        return ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    if device.type == "mps":
        return ["fp16"]
    offered = []
    if device.type == "cpu":
        if cpu_has_bf16():
            offered.append("bf16")
        if not is_convolutional(model) and _quantize_dynamic() is not None:
            offered.append("int8")
    return offered


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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PrecisionRace:
    """The calibration forward: float32 (the reference, whose vectors it returns) and each
    candidate on the same batches, every forward timed. After ``race`` timed batches (the
    first batch warms kernels up and is not timed) only the fastest candidate that beats
    float32 by :data:`MIN_SPEEDUP` keeps running, or none; its vectors are kept for
    :meth:`verdict`, which applies the fidelity rule to them."""

    def __init__(
        self,
        reference: Callable[[torch.Tensor], torch.Tensor],
        lows: dict[str, Callable[[torch.Tensor], torch.Tensor]],
        device: torch.device,
        race: int = 2,
    ) -> None:
        self.reference, self.lows, self.device, self.race = reference, dict(lows), device, race
        self.seconds = {name: 0.0 for name in ["fp32", *lows]}
        self.outputs: dict[str, list[np.ndarray]] = {name: [] for name in lows}
        self.batches = 0
        self.speedups: dict[str, float] = {}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        out = self._timed("fp32", self.reference, pixels)
        for name, low in self.lows.items():
            self.outputs[name].append(self._timed(name, low, pixels).float().cpu().numpy())
        if self.batches == self.race + 1 and len(self.lows) > 0:
            self._decide()
        return out

    def _timed(self, name: str, encoder, pixels: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        t0 = time.perf_counter()
        out = encoder(pixels)
        synchronize(self.device)
        if self.batches > 1:
            self.seconds[name] += time.perf_counter() - t0
        return out

    def _decide(self) -> None:
        """Keep the fastest candidate if it beats float32 enough; a race with no timed batch
        (a single calibration batch) trusts the hardware's order."""
        if self.seconds["fp32"] <= 0:
            self.lows = dict(list(self.lows.items())[:1])
            return
        self.speedups = {
            name: round(self.seconds["fp32"] / max(self.seconds[name], 1e-9), 3)
            for name in self.lows
        }
        best = max(self.speedups, key=self.speedups.get)
        self.lows = {best: self.lows[best]} if self.speedups[best] >= MIN_SPEEDUP else {}

    def verdict(self, reference: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray | None]:
        """The check to record (tried candidate, kept or not and why, agreement figures and
        measured speed-ups) and the kept candidate's vectors (None: keep float32's)."""
        if self.batches <= self.race:  # the calibration ended before the race did
            self._decide()
        if not self.lows:
            best = max(self.speedups, key=self.speedups.get) if self.speedups else None
            reason = f"not faster here ({self.speedups.get(best)}x float32)"
            return {
                "candidate": best,
                "kept": False,
                "reason": reason,
                "speedups": self.speedups,
            }, None
        (name,) = self.lows
        vectors = np.concatenate(self.outputs[name])
        figures = agreement(reference, vectors, labels)
        kept = faithful(figures)
        check = {"candidate": name, "kept": kept, **figures, "speedups": self.speedups}
        return check, (vectors if kept else None)
