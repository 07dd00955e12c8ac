"""Numeric precision of the forward pass, chosen by what the analysis sees.

A reduced precision is *faithful* on a calibration sample when both hold:

* its top-10 neighbour sets agree with float32's on average >= :data:`MIN_AGREEMENT`;
* it is non-inferior in kNN accuracy: paired per image (is its leave-one-out kNN vote right
  under float32, and under the candidate?), the one-sided 95% upper bound of the accuracy
  lost stays below :data:`KNN_LOSS_MARGIN` (Tango's score bound, :func:`paired_loss_upper`).

A plain threshold on the change in kNN accuracy is a coin flip at calibration sizes: it moves by
+-0.03 between random draws of 128 images of the same vector pairs. The bound says how much
could be lost given what was seen, so a larger sample accepts a faithful candidate more surely
and a lossy one never. How large a sample the bound needs depends on how many votes the
candidate flips either way (bf16 flips borderline votes both ways: 4-8% of images), which only
the data tell: :func:`calibration_needed` sizes the sample from the flips seen on a first one
(an internal pilot: the size depends on how many votes changed, not on which way, so the one
test made at the end keeps its 95%). Where that is more than the dataset holds (bf16 on the
360 sample images would need about 1,300) the check takes the whole dataset, whose loss is then
known, not bounded: the kNN accuracy of this dataset is what the analysis reports. ``auto``
races the candidates the hardware offers against float32 on the calibration batches and keeps
the fastest only when it is measurably faster and faithful; otherwise float32. Per-image
cosine is no guide: it can stay high while neighbourhoods reshuffle, and drop on images nobody
looks for.
"""

from __future__ import annotations

import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from embedscope.knn import knn_vote, neighbors
from embedscope.machine import runnable_elsewhere, usable_cores
from embedscope.vocabulary import DTYPE_NAMES, UNLABELLED, precision_name

#: What ``precision=`` accepts (:data:`embedscope.vocabulary.PRECISIONS`, the dtype names too),
#: each with its dtype name, which the vectors' folder name hashes.
PRECISIONS = DTYPE_NAMES
#: Mean top-10 neighbour overlap a candidate needs. Faithful bf16 MobileNetV2 measured 0.918 on
#: the 360 sample images, lossy int8 DINOv2-S 0.73-0.79; the mean of per-image overlaps on 256+
#: images has a standard error near 0.01, so 0.85 sits many errors from both.
MIN_AGREEMENT = 0.85
#: kNN accuracy a candidate may lose, at most (one-sided 95% bound): two points, below the
#: differences that tell models apart on a dataset, and reachable at calibration sizes (with no
#: vote changed the bound falls under it from about 135 scored images).
KNN_LOSS_MARGIN = 0.02
#: The one-sided normal quantile of the 95% bounds.
Z_95 = 1.6449
#: The calibration is sized so that a candidate that loses nothing passes the kNN bound with
#: probability 97.5% (this one-sided normal quantile): a faithful precision is kept at least
#: 95% of the time even when the first sample misjudges how many votes it flips.
Z_POWER = 1.9600
#: A candidate must run at least this much faster than float32 to be worth any loss, surely:
#: the one-sided 95% lower bound of its median speed-up over the race's timed batches (float32
#: and the candidate run side by side on each) must reach it (:func:`speedup_figures`). A
#: native-bf16 CPU can still run a ViT slower in bf16 than in float32 (0.56x measured here),
#: int8 on the same CPU 1.8x faster.
MIN_SPEEDUP = 1.1
#: Timed batches of the race (after one untimed warm-up): at least this many, for a spread of
#: the speed-up; then more while it is unclear (the bounds straddle :data:`MIN_SPEEDUP`, as on
#: a busy machine), up to :data:`MAX_RACE_BATCHES`.
RACE_BATCHES = 6
MAX_RACE_BATCHES = 24
#: The one-sided error of the speed-up's bounds (95%).
RACE_ALPHA = 0.05
#: A candidate whose neighbour agreement is under this is *clearly* lossy: faithful ones
#: measured 0.857-0.98 (bf16 MobileNetV2, down to 0.857 among all 4,096 Fashion-MNIST images,
#: denser than any calibration sample), int8 DINOv2-S 0.28 on the bench's 4,096 images. So far
#: under :data:`MIN_AGREEMENT` no more images, and no other dataset, turns the verdict: the race
#: drops such a candidate after its first :data:`SCREEN_IMAGES` images, and the kit remembers
#: the rejection for every dataset (see :mod:`embedscope.embed.calibrate`).
CLEAR_AGREEMENT = 0.6
#: The images after which the race screens its candidates (:data:`CLEAR_AGREEMENT`): enough
#: for a mean of 10-neighbour overlaps to sit within a few hundredths of its value. A verdict
#: on fewer (a dataset that small) is never clear-cut: 40 near-identical images put a tiny
#: ViT's int8 at 0.46, which says more about the images than about int8.
SCREEN_IMAGES = 128
#: What a clear-cut rejection keeps of its check (and the kit remembers).
CLEAR_FIGURES = ("neighbour_agreement", "images", "k")


def check_precision(precision: str) -> str:
    """``precision`` in the kit's one spelling (``"float32"`` is taken as ``"fp32"``), or a
    one-line refusal."""
    return precision_name(precision)


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
    reference: np.ndarray,
    other: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    population: int | None = None,
) -> dict[str, float | int | None]:
    """How far the analysis moves from ``reference`` vectors to ``other`` ones of the same
    images: mean overlap of the top-``k`` cosine neighbour sets; and, paired per labelled
    image, whose leave-one-out kNN vote only ``reference`` gets right (``knn_losses``) or only
    ``other`` (``knn_gains``), the change in kNN accuracy and the 95% upper bound of the
    accuracy lost (kNN figures None without two labelled classes). ``population``: the
    images of the dataset these are drawn from; when they are all of it, the loss is known
    and is its own bound. Short of that there is no finite-population shortcut: a sample's
    votes are not the dataset's (its neighbours are fewer and farther)."""
    idx_ref, sim_ref = neighbors(reference, k)
    idx_other, sim_other = neighbors(other, k)
    k = idx_ref.shape[1]
    overlap = [len(set(a) & set(b)) / max(k, 1) for a, b in zip(idx_ref, idx_other, strict=True)]
    figures: dict[str, float | int | None] = {
        "neighbour_agreement": round(float(np.mean(overlap)), 4) if k else None,
        "knn_accuracy": None,
        "knn_accuracy_delta": None,
        "knn_losses": None,
        "knn_gains": None,
        "knn_loss_upper": None,
        "images": int(len(reference)),
        "population": population,
        "k": int(k),
    }
    labels = np.asarray(labels, dtype=object)
    scored = labels != UNLABELLED
    if len(set(labels[scored])) < 2 or not k:
        return figures
    truth = labels[scored]
    right_ref = knn_vote(labels, idx_ref, sim_ref)[scored] == truth
    right_other = knn_vote(labels, idx_other, sim_other)[scored] == truth
    losses, gains, n = (
        int((right_ref & ~right_other).sum()),
        int((~right_ref & right_other).sum()),
        len(truth),
    )
    # the whole dataset: its loss is what was seen, nothing to bound
    whole = population is not None and len(reference) >= population
    upper = (losses - gains) / n if whole else paired_loss_upper(losses, gains, n)
    return figures | {
        "knn_accuracy": round(float(right_ref.mean()), 4),
        "knn_accuracy_delta": round((gains - losses) / n, 4),
        "knn_losses": losses,
        "knn_gains": gains,
        "knn_loss_upper": round(upper, 4),
        "knn_scored": n,
    }


def clearly_lossy(reference: np.ndarray, other: np.ndarray) -> dict | None:
    """The screen of a candidate on its first images (``other``, ``reference``'s at float32):
    their neighbour agreement figures when it is under :data:`CLEAR_AGREEMENT` (no more images
    could make it faithful), else None."""
    figures = agreement(reference, other, np.full(len(reference), UNLABELLED, dtype=object))
    if figures["neighbour_agreement"] is None or figures["neighbour_agreement"] >= CLEAR_AGREEMENT:
        return None
    return {k: figures[k] for k in CLEAR_FIGURES}


def paired_loss_upper(losses: int, gains: int, n: int, z: float = Z_95) -> float:
    """One-sided upper confidence bound (``z``: 95%) of the accuracy lost, p(right only
    before) - p(right only after), from ``n`` paired verdicts of which ``losses`` were right
    only before and ``gains`` only after.

    Tango's score bound for a paired difference of proportions (Stat Med 1998;17:891): unlike
    the Wald bound it does not collapse to the estimate when few or no votes changed (no change
    in 256 images still bounds the loss at 0.010, in 128 at 0.021), and it keeps its coverage
    at the small discordant counts a calibration sample gives. Found by bisection on the
    score statistic, which decreases in the loss tested.
    """
    if n <= 0:
        return 1.0
    estimate = (losses - gains) / n

    def score(delta: float) -> float:
        a = 2 * n
        b = -losses - gains + (2 * n - losses + gains) * delta
        c = -gains * delta * (1 - delta)
        q = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)  # p(gain) under delta
        var = n * (2 * q + delta * (1 - delta))
        return (losses - gains - n * delta) / math.sqrt(var) if var > 0 else -math.inf

    lo, hi = estimate, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if score(mid) > -z else (lo, mid)
    return min(1.0, hi)


def calibration_needed(figures: dict, margin: float = KNN_LOSS_MARGIN) -> int:
    """How many images the check should have seen, from :func:`agreement`'s figures on a
    first sample: enough for the kNN bound to pass a candidate that loses nothing with
    probability 97.5% (:data:`Z_POWER`) at the share ``d`` of votes it flipped either way,
    scaled by the share of images that are scored. Where that is more than a dataset holds,
    the check takes all of it (see :func:`agreement`).

    With no loss, votes lost net of votes gained over n scored images spread as a normal of
    variance d n; the size is the least n at which the bound itself (not its normal
    approximation, n0 = (z_95 + z_power)^2 d / margin^2, which is too few where a handful of
    votes flipped) passes at that spread's 97.5% quantile.

    The images seen already when more cannot change the verdict: no kNN figures, neighbour
    agreement already under :data:`MIN_AGREEMENT` (it only falls as neighbours crowd), or the
    loss surely past the margin (its 95% lower bound is)."""
    seen, scored = figures["images"], figures.get("knn_scored")
    if not scored or figures["neighbour_agreement"] < MIN_AGREEMENT:
        return seen
    losses, gains = figures["knn_losses"], figures["knn_gains"]
    if -paired_loss_upper(gains, losses, scored) >= margin:
        return seen
    d = (losses + gains) / scored

    def passes(n: int) -> bool:
        net = min(Z_POWER * math.sqrt(d * n), d * n)
        return paired_loss_upper((d * n + net) / 2, (d * n - net) / 2, n) < margin

    lo, hi = 1, 1 << 30  # passes(hi); the bound falls as n grows
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return max(seen, math.ceil(hi * seen / scored))


def judge(
    figures: dict, min_agreement: float = MIN_AGREEMENT, margin: float = KNN_LOSS_MARGIN
) -> tuple[bool, str]:
    """The fidelity rule on :func:`agreement`'s figures: whether the candidate is faithful,
    and why (no kNN figures, without two labelled classes: agreement alone)."""
    agree, upper = figures["neighbour_agreement"], figures["knn_loss_upper"]
    if agree is None or agree < min_agreement:
        return False, f"neighbour agreement {agree} is under {min_agreement}"
    if upper is None:
        return True, f"neighbour agreement {agree} >= {min_agreement} (no labels to vote)"
    whole = figures.get("population") == figures["images"]
    bound = f"all {figures['images']} images" if whole else "95% bound"
    if upper >= margin:
        return False, (
            f"kNN accuracy may drop by up to {upper:.3f} ({bound}; {figures['knn_losses']} "
            f"votes lost, {figures['knn_gains']} gained), not under {margin}"
        )
    return True, (
        f"neighbour agreement {agree} >= {min_agreement}; kNN accuracy lost at most "
        f"{upper:.3f} ({bound}) < {margin}"
    )


def hardware(device: torch.device) -> str:
    """What a measured speed-up depends on besides the model: the device (GPU name, or the
    CPU's model and the cores this process may use) and torch's version."""
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        name = f"{device.type}: {cpu_model()}, {usable_cores()} cores"
    return f"{name}, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on Linux), with its family and
    model numbers where the system gives them: a cloud VM may name only "AMD EPYC", and two
    machines under that name raced bf16 DINOv2-S differently (slower than float32 on one,
    2.3x faster on a family-26 one)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:  # the first processor's block is enough
                    break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def order_bound_rank(n: int, alpha: float = RACE_ALPHA) -> int:
    """The rank ``r`` (1-based) whose order statistic is a one-sided ``1 - alpha`` lower bound
    of the median of ``n`` draws (the ``n + 1 - r``-th is the upper one): the largest ``r``
    with P(Binomial(n, 1/2) < r) <= ``alpha``. Distribution-free: nothing is assumed of the
    timings' spread. Below 5 draws no rank reaches 95%; the extremes (rank 1) are used."""
    below = 0.0
    for r in range(1, n + 1):
        below += math.comb(n, r - 1) / 2**n  # P(B <= r - 1)
        if below > alpha:
            return max(r - 1, 1)
    return n


def speedup_figures(reference: list[float], candidates: dict[str, list[float]]) -> dict:
    """Per candidate, float32's time over its own on the same batches: the median of those
    per-batch ratios (``speedups``) and its one-sided 95% lower and upper bounds, order
    statistics of the ratios (:func:`order_bound_rank`; ``speedup_low``, ``speedup_high``,
    None from fewer than two batches), from ``batches`` timed batches.

    Why the median and order statistics, not the mean and a t bound: on a loaded machine a
    batch now and then waits for the cores (its ratio off by 2-5x either way). A few such
    spikes widen a t bound on the log ratios past :data:`MIN_SPEEDUP` (float32 was kept in 2 of
    3 races at load average 6-9 on 2 cores) while they move the median and its order-statistic
    bound by a rank or two: a third of the batches may be hit before a clear winner is lost."""
    timed = len(reference)
    speedups, lows, highs = {}, {}, {}
    for name, seconds in candidates.items():
        n = len(seconds)  # a candidate dropped early (see PrecisionRace) ran the first n
        ratios = np.sort(np.array(reference[:n]) / np.maximum(np.array(seconds), 1e-9))
        speedups[name] = round(float(np.median(ratios)), 3) if n else None
        lows[name] = highs[name] = None
        if n > 1:
            rank = order_bound_rank(n)
            lows[name] = round(float(ratios[rank - 1]), 3)
            highs[name] = round(float(ratios[n - rank]), 3)
    return {"speedups": speedups, "speedup_low": lows, "speedup_high": highs, "batches": timed}


def load_per_core() -> float:
    """Runnable work per core this process may use: the 1-minute load average over the
    cores (the race's own threads count too, so about 1 on an otherwise idle machine while it
    runs). A race timed while others crowd the cores is no measure of the machine."""
    try:
        return round(os.getloadavg()[0] / usable_cores(), 2)
    except OSError:  # no load average on this system
        return 0.0


def load_now() -> float | None:
    """Runnable threads per core this instant: those of other processes (and of this one's
    decoding workers, :func:`runnable_elsewhere`) and the model's own, so about 1 on an idle
    machine as :func:`load_per_core` is; None where the system does not say. A race samples it
    at every timed batch: busy processes started a few seconds before the race show here at
    once, in the load average only after a minute."""
    others = runnable_elsewhere()
    if others is None:
        return None
    return round((others + torch.get_num_threads()) / usable_cores(), 2)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PrecisionRace:
    """The calibration forward: float32 (the reference, whose vectors it returns) and each
    candidate on the same batches, every forward timed. After ``race`` = (least, most) timed
    batches (the first batch warms kernels up and is not timed; past the least, the race
    stops as soon as it is clear) only the fastest candidate that surely beats float32 by
    :data:`MIN_SPEEDUP` keeps running, or none; its vectors are kept for :meth:`verdict`,
    which applies the fidelity rule to them. Until the screen (:meth:`_screen`) every
    candidate that surely beats float32 runs, so that a fast but clearly lossy winner dropped
    there leaves the next fastest, not float32 (int8 DINOv2-S, 2.9x and scrambled, beside a
    faithful bf16 at 2.3x).

    ``remembered``: the :attr:`result` of an earlier race of this model on this hardware; the
    winner is then known before the first batch and nothing is timed. ``unpaid``: why the
    winner's fidelity check cannot pay for itself at its measured speed-up (None: it can); the
    winner then stops running, as a loser does, and float32 alone goes on (its vectors are
    the run's).
    """

    def __init__(
        self,
        reference: Callable[[torch.Tensor], torch.Tensor],
        lows: dict[str, Callable[[torch.Tensor], torch.Tensor]],
        device: torch.device,
        race: tuple[int, int] = (RACE_BATCHES, MAX_RACE_BATCHES),
        remembered: dict | None = None,
        unpaid: Callable[[float], str | None] | None = None,
    ) -> None:
        self.reference, self.lows, self.device, self.race = reference, dict(lows), device, race
        self.unpaid, self.unpaid_reason = unpaid, None
        self.seconds: dict[str, list[float]] = {name: [] for name in ["fp32", *lows]}
        self.outputs: dict[str, list[np.ndarray]] = {name: [] for name in lows}
        self.batches = 0
        self.loads: list[float] = []  # load_per_core() at the first timed batch and at the end
        self.instants: list[float] = []  # load_now() at every timed batch
        self.result: dict = {}
        #: candidates dropped as clearly lossy on the first images: their agreement figures
        self.unfaithful: dict[str, dict] = {}
        self.screened: list[np.ndarray] = []  # float32's vectors until the screen
        self.ran: dict[str, int] = {}  # images each candidate embedded: the check's cost
        self.remembered = remembered is not None
        if remembered is not None:
            self._decide(remembered)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches == 2 and not self.result:
            self.loads.append(load_per_core())
        # float32 first on odd batches, last on even ones: what the first forward leaves in
        # the caches, or a load that rises during a batch, favours neither side
        lows = list(self.lows.items())
        order = [("fp32", self.reference), *lows]
        if self.batches % 2 == 0:
            order.reverse()
        outs = {name: self._timed(name, f, pixels) for name, f in order}
        now = load_now() if self.batches > 1 and not self.result else None
        if now is not None:
            self.instants.append(now)
        for name, _ in lows:
            self.outputs[name].append(outs[name].float().cpu().numpy())
            self.ran[name] = self.ran.get(name, 0) + len(pixels)
        if lows and self.screened is not None:
            self.screened.append(outs["fp32"].float().cpu().numpy())
            self._screen()
        timed = self.batches - 1
        if not self.result and timed >= self.race[0]:
            measured = self._measured()
            if timed >= self.race[1] or self._clear(measured, set(self.lows)):
                self.loads.append(load_per_core())
                self._decide(self._measured())
        return outs["fp32"]

    def _screen(self) -> None:
        """Once :data:`SCREEN_IMAGES` images ran both ways, drop every candidate whose
        neighbours already disagree with float32's by far (:data:`CLEAR_AGREEMENT`): its
        verdict is known, and each further batch would cost a forward for nothing. The race
        then goes on among the others; with none left it ends on what it timed."""
        if sum(map(len, self.screened)) < SCREEN_IMAGES:
            return
        reference, self.screened = np.concatenate(self.screened), None
        for name in list(self.lows):
            lossy = clearly_lossy(reference, np.concatenate(self.outputs[name]))
            if lossy:
                self.unfaithful[name] = lossy
                del self.lows[name]
        if self.unfaithful and not self.lows and not self.result:
            self.loads.append(load_per_core())
            self._decide(self._measured())
        self._narrow()

    def _narrow(self, final: bool = False) -> None:
        """Once the race is decided and the screen done (or ``final``: at the verdict, for a
        calibration too small to screen), only the fastest candidate still running goes on,
        if its check can pay for itself at its speed-up (``unpaid``; none can when it
        cannot)."""
        if not self.result or not self.lows or (self.screened is not None and not final):
            return
        speedups = self.result["speedups"]
        best = max(self.lows, key=lambda n: speedups.get(n) or 0)
        self.lows = {best: self.lows[best]}
        if speedups.get(best) and not self._pays(speedups[best]):
            self.lows = {}

    def _pays(self, speedup: float) -> bool:
        """Whether a check of a candidate ``speedup`` times faster can pay for itself
        (``unpaid``); where not, :attr:`unpaid_reason` says why."""
        if self.unpaid is None:
            return True
        self.unpaid_reason = self.unpaid(speedup)
        return not self.unpaid_reason

    @staticmethod
    def _clear(measured: dict, running: set[str]) -> bool:
        """Whether more batches could change the outcome among the ``running`` candidates:
        the best lower bound reaches :data:`MIN_SPEEDUP`, or every upper bound stays under it."""
        lows = [v for n, v in measured["speedup_low"].items() if n in running]
        highs = [v for n, v in measured["speedup_high"].items() if n in running]
        return any(v >= MIN_SPEEDUP for v in lows) or all(v < MIN_SPEEDUP for v in highs)

    def _timed(self, name: str, encoder, pixels: torch.Tensor) -> torch.Tensor:
        if self.result or self.batches == 1:  # decided, or warming up: nothing to time
            return encoder(pixels)
        synchronize(self.device)
        t0 = time.perf_counter()
        out = encoder(pixels)
        synchronize(self.device)
        self.seconds[name].append(time.perf_counter() - t0)
        return out

    def _measured(self) -> dict:
        """The race so far (:func:`speedup_figures` of the timed batches), with the machine's
        load per core while it ran: the most of the load average's (:func:`load_per_core`,
        which lags) and the median of the instant counts (:func:`load_now`, which a spike
        moves by one sample)."""
        raced = {n: t for n, t in self.seconds.items() if n != "fp32"}
        result = speedup_figures(self.seconds["fp32"], raced)
        seen = [*self.loads, *([float(np.median(self.instants))] if self.instants else [])]
        return result | {"load_per_core": round(max(seen), 2) if seen else None}

    def _decide(self, result: dict) -> None:
        """Keep the candidates that surely beat float32 by :data:`MIN_SPEEDUP` (their lower
        bound does; their estimate, from a single timed batch), all of them until the screen
        (then the fastest, :meth:`_narrow`), or none; a race with no timed batch (a single
        calibration batch) trusts the hardware's order."""
        self.result = result
        speedups = {n: v for n, v in result["speedups"].items() if n in self.lows and v}
        if not speedups:
            self.lows = dict(list(self.lows.items())[:1])
            return
        lows = result["speedup_low"]
        sure = {
            n: v for n, v in speedups.items() if (v if lows[n] is None else lows[n]) >= MIN_SPEEDUP
        }
        self.lows = {n: self.lows[n] for n in sure}
        if self.lows and not self._pays(max(sure.values())):  # the fastest cannot: none can
            self.lows = {}
        self._narrow()

    def figures(self) -> dict:
        """The race as ``precision_check`` reports it."""
        return {
            "speedups": self.result.get("speedups", {}),
            "speedup_low": self.result.get("speedup_low", {}),
            "speedup_high": self.result.get("speedup_high", {}),
            "race_batches": self.result.get("batches", 0),
            "race": "remembered" if self.remembered else "measured",
            "race_load_per_core": self.result.get("load_per_core"),
            "candidate_images": sum(self.ran.values()),
        }

    def verdict(
        self, reference: np.ndarray, labels: np.ndarray, population: int | None = None
    ) -> tuple[dict, np.ndarray | None]:
        """The check to record (tried candidate, kept or not and why, agreement figures and
        the race's speed-ups) and the kept candidate's vectors (None: keep float32's), the
        images a sample of a dataset of ``population``."""
        if not self.result:  # the calibration ended before the race did
            self.loads.append(load_per_core())
            self._decide(self._measured())
        self._narrow(final=True)  # a calibration too small to screen
        if not self.lows:
            return self.not_faster(), None
        (name,) = self.lows
        vectors = np.concatenate(self.outputs[name])
        figures = agreement(reference, vectors, labels, population=population)
        kept, reason = judge(figures)
        check = {"candidate": name, "kept": kept, "reason": reason, **figures, **self.figures()}
        if figures["neighbour_agreement"] is not None:  # a few images' overlaps are no verdict
            clear = figures["neighbour_agreement"] < CLEAR_AGREEMENT
            check["clear_cut"] = clear and len(vectors) >= SCREEN_IMAGES
        return check, (vectors if kept else None)

    def not_faster(self) -> dict:
        """The check when no candidate won the race (or every one was clearly lossy)."""
        if self.unfaithful and not self.unpaid_reason:
            name, figures = next(iter(self.unfaithful.items()))
            reason = (
                f"neighbour agreement {figures['neighbour_agreement']} among the first "
                f"{figures['images']} images is far under {MIN_AGREEMENT} (under "
                f"{CLEAR_AGREEMENT}): {name} dropped"
            )
            check = {"candidate": name, "kept": False, "reason": reason, **figures}
            return check | {"clear_cut": True, **self.figures()}
        speedups = self.result.get("speedups") or {}
        best = max(speedups, key=lambda n: speedups[n] or 0) if speedups else None
        low = (self.result.get("speedup_low") or {}).get(best)
        reason = self.unpaid_reason or (
            f"not faster here ({speedups.get(best)}x float32, lower bound {low})"
        )
        return {"candidate": best, "kept": False, "reason": reason, **self.figures()}
