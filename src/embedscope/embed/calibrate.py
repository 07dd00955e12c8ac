"""``precision="auto"`` on a real run: embed a calibration sample of the dataset in float32
and in the candidates (:mod:`embedscope.embed.precision` races and judges them). The sample
grows once when its first verdict says how many more images the kNN bound needs (up to
:func:`calibration_limit`): a faithful bf16 flips 3-5% of the kNN votes both ways, which a
few hundred images cannot tell from a loss.

Two memories, of different reach. The race's speed-ups depend on the model and the hardware
only, so they are kept for every dataset in ``precision-races.json`` of the kit's cache
(``$EMBEDSCOPE_CACHE``, else ``~/.cache/embedscope``): a later dataset skips the timing, and
calibrates only the winner, or nothing when no candidate was faster. Fidelity depends on the
images, so it is judged per dataset; the decision is kept with the dataset's embeddings
(``precision.json``), so every later run embeds at the same precision into the same cache.
``precision_race="again"`` forgets both for this run: a new race, a new verdict. A race run
while the machine was crowded (:data:`MAX_REMEMBERED_LOAD`) is used for its own run only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import make_loader, stamps_of
from embedscope.embed.precision import (
    PrecisionRace,
    calibration_needed,
    candidates,
    hardware,
)
from embedscope.embed.stream import choose_workers, embedded, thread_options
from embedscope.layout import Layout, read_json, update_json
from embedscope.models import cache_root

#: Calibration images, first: at least this many (all of a smaller dataset), else an eighth of
#: the dataset, at most :data:`MAX_CALIBRATION`. The kNN bound needs about 135 scored images to
#: accept anything and tightens with the square root of the count; the cost is one extra
#: forward per calibration image (the kept precision's vectors are kept, not redone).
MIN_CALIBRATION = 256
MAX_CALIBRATION = 1024
#: When the first sample shows the candidate flips too many votes for its size to tell (see
#: :func:`~embedscope.embed.precision.calibration_needed`), the check grows once, up to a
#: quarter of the dataset (all of one up to :data:`MAX_CALIBRATION` images), at most
#: :data:`MAX_GROWN_CALIBRATION`: a candidate twice as fast as float32 still saves half of
#: what it could.
CALIBRATION_SHARE = 4
MAX_GROWN_CALIBRATION = 8192
#: A race is remembered only when it timed this many batches.
MIN_REMEMBERED_BATCHES = 3
#: ... and only when the machine was not crowded while it ran: its load per core
#: (:func:`~embedscope.embed.precision.load_per_core`, the race's own threads included, so
#: about 1 when nothing else runs) stayed under this. A race at load average 6-9 on 2 cores
#: (3-4.5 per core) measured the other processes as much as the model; it still decides this
#: run, but the next one races again rather than inherit it as the machine's truth.
MAX_REMEMBERED_LOAD = 2.0
RACES = ("remembered", "again")


def calibration_size(images: int) -> int:
    """How many of ``images`` the precision check embeds both ways."""
    return min(images, max(MIN_CALIBRATION, images // 8), MAX_CALIBRATION)


def calibration_limit(images: int) -> int:
    """The most images of ``images`` the precision check may grow to."""
    share = max(MAX_CALIBRATION, images // CALIBRATION_SHARE)
    return min(images, share, MAX_GROWN_CALIBRATION)


def calibration_sample(images: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """Up to ``n`` images (default :func:`calibration_size`) spread evenly over the
    (path-ordered) dataset, so every class tends to be there, not only the first folder's."""
    n = calibration_size(len(images)) if n is None else n
    pick = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    return images.iloc[pick] if len(images) else images


def auto_precision(
    layout: Layout,
    reference: Encoder,
    identity: str,
    root: Path,
    images: pd.DataFrame,
    *,
    batch_size: int,
    num_workers: int | None,
    calibration_images: int | None = None,
    race: str = "remembered",
) -> tuple[Encoder, dict, dict[str, np.ndarray], dict[str, str]]:
    """The encoder ``precision="auto"`` keeps, the check that decided, and the vectors of the
    calibration images (of ``images``: by sha256, with ``path`` and ``label``) at the kept
    precision, with the files it could not read, by sha256.

    The check embeds ``calibration_images`` images (default :func:`calibration_size`) and,
    unless that count was given, grows once to the size the first verdict needs (up to
    :func:`calibration_limit`) before judging. A decision already taken for this dataset,
    model, pooling and hardware is reused as is (nothing is embedded then), unless
    ``race="again"``.
    """
    if race not in RACES:
        raise ValueError(f"precision_race must be one of {RACES}, not {race!r}")
    dev = reference.device
    names = candidates(dev, reference.net)
    kind = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    cache = layout.precision_decisions
    decisions = read_json(cache, default={}) or {}
    cache_key = f"{identity}|{reference.pooling}|{kind}|{'+'.join(names)}"
    if not names:
        check = {"candidate": None, "kept": False, "reason": "no faster precision here"}
        return reference, check, {}, {}
    low = lambda name: Encoder(reference.net, reference.pooling, dev, reference.pixels, name)  # noqa: E731
    if cache_key in decisions and race != "again":
        check = decisions[cache_key]
        return (low(check["candidate"]) if check["kept"] else reference), check, {}, {}
    races_path = cache_root() / "precision-races.json"
    races = read_json(races_path, default={}) or {}
    race_key = (
        f"{identity}|{reference.pooling}|batch {batch_size}|{'+'.join(names)}|{hardware(dev)}"
    )
    remembered = races.get(race_key) if race != "again" else None
    contest = PrecisionRace(reference, {n: low(n) for n in names}, dev, remembered=remembered)
    if not contest.lows:  # a remembered race: nothing here is faster, nothing to calibrate
        check = contest.not_faster()
        update_json(cache, lambda d: d.__setitem__(cache_key, check))
        return reference, check, {}, {}
    sample = calibration_sample(images, calibration_images)
    shas, ref, failed = _calibrate(
        contest, root, sample, batch_size=batch_size, num_workers=num_workers
    )
    if len(shas) < 3:
        check = {"candidate": names[0], "kept": False, "reason": "too few readable images to judge"}
        return reference, check, {}, failed
    population = len(images)
    ref_all = np.concatenate(ref)
    check, kept_vectors = contest.verdict(ref_all, images.loc[shas, "label"].to_numpy(), population)
    if calibration_images is None and "neighbour_agreement" in check:
        needed = calibration_needed(check)
        extra = min(needed, calibration_limit(population)) - len(sample)
        if extra > 0:  # the images not seen yet, spread evenly over the dataset
            more = calibration_sample(images.drop(index=sample.index), extra)
            shas2, ref2, failed2 = _calibrate(
                contest, root, more, batch_size=batch_size, num_workers=num_workers
            )
            failed |= failed2
            if shas2:  # judged again on all of them; what the first sample said, for the record
                first = check
                shas, ref_all = shas + shas2, np.concatenate([ref_all, *ref2])
                labels = images.loc[shas, "label"].to_numpy()
                check, kept_vectors = contest.verdict(ref_all, labels, population)
                check["grown_from"] = {k: first[k] for k in ("images", "knn_losses", "knn_gains")}
    if remember_race(contest.result) and not contest.remembered:
        # shared by every run on this machine: merged under a lock, never overwritten whole
        update_json(races_path, lambda r: r.__setitem__(race_key, contest.result))
    update_json(cache, lambda d: d.__setitem__(cache_key, check))
    kept = contest.lows[check["candidate"]] if check["kept"] else reference
    vectors = ref_all if kept_vectors is None else kept_vectors
    return kept, check, dict(zip(shas, vectors, strict=True)), failed


def remember_race(result: dict) -> bool:
    """Whether a race's result may stand for this model on this hardware: enough batches
    timed, on a machine that was not crowded (:data:`MAX_REMEMBERED_LOAD`)."""
    load = result.get("load_per_core")
    quiet = load is None or load < MAX_REMEMBERED_LOAD
    return result.get("batches", 0) >= MIN_REMEMBERED_BATCHES and quiet


def _calibrate(
    contest: PrecisionRace,
    root: Path,
    sample: pd.DataFrame,
    *,
    batch_size: int,
    num_workers: int | None,
) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
    """Run ``sample`` through the race (float32 and the candidates, one decode for all): the
    sha256 of the images read, float32's vectors by batch, and the failures by sha256."""
    reference = contest.reference
    paths = sample["path"].tolist()
    workers, costs = choose_workers(num_workers, root, paths, batch_size, reference)
    loader = make_loader(
        root,
        paths,
        reference.pixels,
        batch_size=batch_size,
        num_workers=workers,
        device=reference.device,
        stamps=stamps_of(sample),
    )
    shas, ref, failed = [], [], {}
    threads = thread_options(reference.device, workers, measured=costs is not None)
    for ids, vecs, bad in embedded(loader, contest, threads=threads):
        failed.update({sample.index[i]: reason for i, reason in bad})
        if vecs is not None:
            shas += [sample.index[i] for i in ids]
            ref.append(vecs)
    return shas, ref, failed
