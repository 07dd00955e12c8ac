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
One fidelity verdict does reach every dataset: a *clear-cut* rejection (neighbour agreement
under :data:`~embedscope.embed.precision.CLEAR_AGREEMENT`, where faithful candidates measured
0.86-0.98), kept per model, pooling, candidate and hardware in ``precision-fidelity.json``
beside the races. A later dataset does not race or check that candidate again; it can only
keep float32 by it, never a lossy precision. A rejection near the line (agreement under 0.85
but not far, or a kNN loss) depends on the images, and every new dataset checks again.
``precision_race="again"`` forgets all of these for this run: a new race, a new verdict. A race
run while the machine was crowded (:data:`MAX_REMEMBERED_LOAD`) is used for its own run only.

A first run with ``auto`` must never be slower than one in float32, so the check runs only
where it can pay for itself (:func:`unpaid`): before any race, at the best speed-up seen on a
CPU; after it, at the measured one; before growing, for the images still to embed. A run whose
check cannot pay embeds in float32 and remembers no decision (a grown dataset may pay). A
candidate clearly lossy on the first images is dropped there (see
:class:`~embedscope.embed.precision.PrecisionRace`), not run to the sample's end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import make_loader, stamps_of
from embedscope.embed.precision import (
    CLEAR_FIGURES,
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
#: The speed-up assumed before this model was ever raced on this hardware: the most a reduced
#: precision was measured to gain on a CPU (ViT-B/16 under bf16, 3.4x). A check that could not
#: pay for itself even then is not started: no race, no candidate forward.
PRIOR_SPEEDUP = 3.4
#: The share of kNN votes a faithful bf16 flips, either way, on a first sample (4-8% measured):
#: the check it then needs (:func:`expected_check`, about 1,300 images) is what a run must save.
EXPECTED_FLIPS = 0.04


def calibration_size(images: int) -> int:
    """How many of ``images`` the precision check embeds both ways."""
    return min(images, max(MIN_CALIBRATION, images // 8), MAX_CALIBRATION)


def calibration_limit(images: int) -> int:
    """The most images of ``images`` the precision check may grow to."""
    share = max(MAX_CALIBRATION, images // CALIBRATION_SHARE)
    return min(images, share, MAX_GROWN_CALIBRATION)


def expected_check(images: int) -> int:
    """How many of ``images`` a check of a faithful candidate is likely to embed both ways:
    what :func:`~embedscope.embed.precision.calibration_needed` asks for when the first
    sample flips :data:`EXPECTED_FLIPS` of its votes, within :func:`calibration_limit` (all of
    a dataset of up to 1,024 images)."""
    flips = round(EXPECTED_FLIPS * MIN_CALIBRATION / 2)
    seen = {"images": MIN_CALIBRATION, "knn_scored": MIN_CALIBRATION, "neighbour_agreement": 1.0}
    needed = calibration_needed(seen | {"knn_losses": flips, "knn_gains": flips})
    return min(max(needed, calibration_size(images)), calibration_limit(images))


def unpaid(images: int, checked: int, speedup: float | None) -> str | None:
    """Why embedding ``checked`` of ``images`` images both ways cannot pay for itself at
    ``speedup`` (None when it can). Kept, the candidate costs ``checked`` float32 forwards
    more and saves ``images (1 - 1/speedup)``; rejected, it saved nothing: a first run with
    ``precision="auto"`` must never be slower than one in float32, so the check runs only
    where the saving covers it. On up to 1,024 images the check takes every image: it never
    pays there, and such a set keeps float32 (its later runs read float32's cached vectors)."""
    saving = images * (1 - 1 / speedup) if speedup and speedup > 1 else 0.0
    if checked <= saving:
        return None
    return (
        f"float32 kept: checking {checked} of {images} images both ways would cost more "
        f"forwards than a {speedup or 1.0}x speed-up saves ({round(saving)})"
    )


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
    measured: dict | None = None,
) -> tuple[Encoder, dict, dict[str, np.ndarray], dict[str, str]]:
    """The encoder ``precision="auto"`` keeps, the check that decided, and the vectors of the
    calibration images (of ``images``: by sha256, with ``path`` and ``label``) at the kept
    precision, with the files it could not read, by sha256.

    The check embeds ``calibration_images`` images (default :func:`calibration_size`) and,
    unless that count was given, grows once to the size the first verdict needs (up to
    :func:`calibration_limit`) before judging. A decision already taken for this dataset,
    model, pooling and hardware is reused as is (nothing is embedded then), unless
    ``race="again"``. ``measured``: filled with the decode cost the calibration measured
    (``"decode"``, seconds per image on one core), for the rest of the run to reuse.
    """
    measured = {} if measured is None else measured
    if race not in RACES:
        raise ValueError(f"precision_race must be one of {RACES}, not {race!r}")
    dev = reference.device
    offered = candidates(dev, reference.net)
    fidelity_path = cache_root() / "precision-fidelity.json"
    memory = (read_json(fidelity_path, default={}) or {}) if race != "again" else {}
    lossy = [memory.get(f"{identity}|{reference.pooling}|{n}|{hardware(dev)}") for n in offered]
    names = [n for n, bad in zip(offered, lossy, strict=True) if bad is None]
    kind = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    cache = layout.precision_decisions
    decisions = read_json(cache, default={}) or {}
    # the dataset's own decision stands whatever was remembered since: its vectors are cached
    cache_key = f"{identity}|{reference.pooling}|{kind}|{'+'.join(offered)}"
    if not offered:
        check = {"candidate": None, "kept": False, "reason": "no faster precision here"}
        return reference, check, {}, {}
    low = lambda name: Encoder(reference.net, reference.pooling, dev, reference.pixels, name)  # noqa: E731
    if cache_key in decisions and race != "again":
        check = decisions[cache_key]
        return (low(check["candidate"]) if check["kept"] else reference), check, {}, {}
    if not names:  # every candidate clearly lossy on an earlier dataset: no race, no check
        earlier = lossy[0]
        reason = (
            f"{offered[0]} was clearly lossy here before (neighbour agreement "
            f"{earlier['neighbour_agreement']} among {earlier['images']} images of another "
            "dataset): not checked again"
        )
        check = {"candidate": offered[0], "kept": False, "reason": reason, "fidelity": "remembered"}
        return reference, check, {}, {}
    races_path = cache_root() / "precision-races.json"
    races = read_json(races_path, default={}) or {}
    race_key = (
        f"{identity}|{reference.pooling}|batch {batch_size}|{'+'.join(names)}|{hardware(dev)}"
    )
    remembered = races.get(race_key) if race != "again" else None
    population = len(images)
    # a check asked for by size runs whatever it costs; else only where it can pay (see unpaid)
    paid = calibration_images is not None
    expected = expected_check(population)
    if not paid and remembered is None:  # not raced here yet: at the best speed-up seen
        reason = unpaid(population, expected, PRIOR_SPEEDUP)
        if reason:  # not remembered: it depends on the dataset's size, which may grow
            return reference, {"candidate": names[0], "kept": False, "reason": reason}, {}, {}
    contest = PrecisionRace(
        reference,
        {n: low(n) for n in names},
        dev,
        remembered=remembered,
        unpaid=None if paid else lambda speedup: unpaid(population, expected, speedup),
    )
    if not contest.lows and not contest.unpaid_reason:  # remembered: none here is faster
        check = contest.not_faster()
        update_json(cache, lambda d: d.__setitem__(cache_key, check))
        return reference, check, {}, {}
    if not contest.lows:  # remembered faster, but its check cannot pay at this size
        return reference, contest.not_faster(), {}, {}
    sample = calibration_sample(images, calibration_images)
    shas, ref, failed = _calibrate(
        contest, root, sample, batch_size, num_workers, identity, measured
    )
    if len(shas) < 3:
        check = {"candidate": names[0], "kept": False, "reason": "too few readable images to judge"}
        return reference, check, {}, failed
    ref_all = np.concatenate(ref)
    check, kept_vectors = contest.verdict(ref_all, images.loc[shas, "label"].to_numpy(), population)
    if calibration_images is None and "neighbour_agreement" in check:
        needed = calibration_needed(check)
        extra = min(needed, calibration_limit(population)) - len(sample)
        speedup = check["speedups"].get(check["candidate"])
        more_unpaid = unpaid(population - len(sample), extra, speedup) if extra > 0 else None
        if more_unpaid:  # float32's vectors of the sample are the run's: nothing is redone
            check |= {"kept": False, "reason": f"{more_unpaid} (first {len(sample)} judged)"}
            kept_vectors, extra = None, 0
            contest.unpaid_reason = more_unpaid
        if extra > 0:  # the images not seen yet, spread evenly over the dataset
            more = calibration_sample(images.drop(index=sample.index), extra)
            shas2, ref2, failed2 = _calibrate(
                contest, root, more, batch_size, num_workers, identity, measured
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
    # for every dataset (it can only keep float32, see above): the candidates the screen
    # dropped, whichever was judged in the end, and the judged one if clearly lossy too
    clear = dict(contest.unfaithful)
    if check.get("clear_cut"):
        clear[check["candidate"]] = {k: check.get(k) for k in CLEAR_FIGURES}
    if clear:
        known = {f"{identity}|{reference.pooling}|{n}|{hardware(dev)}": v for n, v in clear.items()}
        update_json(fidelity_path, lambda r: r.update(known))
    if not contest.unpaid_reason:  # a check cut for its cost depends on the dataset's size
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
    batch_size: int,
    num_workers: int | None,
    identity: str,
    measured: dict,
) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
    """Run ``sample`` through the race (float32 and the candidates, one decode for all): the
    sha256 of the images read, float32's vectors by batch, and the failures by sha256; the
    decode cost goes to ``measured`` (measured once, see :func:`choose_workers`)."""
    reference = contest.reference
    paths = sample["path"].tolist()
    workers, costs = choose_workers(
        num_workers,
        root,
        paths,
        batch_size,
        reference,
        decode=measured.get("decode"),
        identity=identity,
    )
    if costs:
        measured["decode"] = costs[0]
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
