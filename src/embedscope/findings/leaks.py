"""Leak findings: held-out images (val, test) that copy an image of an earlier split.

A leak is searched in two steps (chosen by measurement, ``make bench`` section ``leaks``, see
docs/findings.md). Candidates: the :data:`CANDIDATES` nearest earlier-split images of each
held-out image by cosine on the kit's own vectors (a network sees through crops, mirrors and
colour changes), joined with as many by a tiny grey picture, mirrored or not (it sees through
heavy downscales and re-encodes); both searches go through :func:`embedscope.knn.top_k`, the
kit's one kNN search. Verification: each candidate pair is aligned on small thumbnails at the
copy's own detail (never upsampled), over mirror, position and every crop size down to
:data:`SMALLEST_CROP`, then to a fraction of a pixel, and scored by its worst block: the
largest local colour residual once brightness and contrast are undone (a copy differs from its
source a little everywhere, a look-alike a lot somewhere); the score is then a ratio test
against the runner-up candidate (:func:`leak_score`). Same bytes are a leak without looking.
A pair at or above ``threshold`` is a leak.

The splits come from the manifest's ``split`` column (:mod:`embedscope.ingest`): a dataset
without one gets no leak columns at all.

Near-duplicate groups (:func:`near_duplicates`, the duplicates family's) come from the same
candidates and verification, each image searched once among its own split (the whole dataset
without splits): a group is the connected copies of one image (:func:`_groups`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import multiprocessing
import multiprocessing.context
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import PIL
from PIL import Image

from embedscope.decisions import split_tags
from embedscope.findings.pair_store import MISSING, PairStore
from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.images import load_rgb
from embedscope.knn import Rows, top_k
from embedscope.layout import os_path, write_atomic
from embedscope.machine import usable_cores
from embedscope.vocabulary import KEEP_PREFIX, UNLABELLED

#: The split every held-out split is compared with, then the order in which later splits are
#: compared with earlier ones (a test image copying a val image leaks too).
SPLIT_ORDER = ("train", "val", "test", "pred")
#: Default ``leak_threshold`` (chosen by the ``leaks`` bench on its calibration halves, apart
#: from the halves it reports): the :func:`leak_score` a candidate pair must reach.
THRESHOLD = 0.67
#: Exponent of the ambiguity in :func:`leak_score` (fitted with the threshold on the
#: calibration halves): how much a second, nearly as good match lowers the score.
AMBIGUITY = 0.75
#: Earlier-split images proposed per held-out image by each search: by cosine on the kit's
#: vectors (finds crops, mirrors, colour changes) and by a TINY x TINY grey picture, mirrored
#: or not (finds heavy downscales and re-encodes a network sees as a different picture).
CANDIDATES = 6
#: Images above which the near-duplicate search (one more candidate search and about 12
#: checks per image: 0.02-0.06 s per image on 2 quiet cores, 16 s for the bench's 299 emoji,
#: 34 s for its 2,120 Fashion-MNIST images) is not run: 20,000 images take 7-20 minutes, on
#: top of the leak search. Leaks between splits are always searched.
NEAR_DUPLICATE_LIMIT = 20_000
TINY = 8
#: Longest side of the RGB thumbnail kept per image, and longest side of the copy when compared.
THUMB = 48
WORK = 36
#: Shortest native side of an image a pair is matched on: a 1 x 1 pixel or a 700 x 2 strip
#: shows too little to be judged a copy of anything but its own bytes (a red pixel matched a
#: 2 x 2 patch of any emoji at 1.0).
SMALLEST_SIDE = 6
#: Smallest crop sought: a copy that shows this share of its source's side, or more.
SMALLEST_CROP = 0.78
#: Blocks per side of an aligned pair: :func:`match` scores the worst block's residual.
BLOCKS = 4
#: Share of an image's variance that a tone map from the other must explain before
#: :func:`_worst_block` measures the residual against the livelier image's spread: every
#: bench copy explains 0.93 or more (a near-white brightened emoji included), while any lively
#: image mapped onto a nearly flat one (a pale exclamation mark) explains at most about 0.6.
#: Below, the residual is measured against that image's own spread, but at least FLOOR of the
#: livelier one's (a pale image brightened until nearly white stays a copy of itself).
EXPLAINED = 0.8
FLOOR = 0.25
#: A map onto a blank image explains it whatever the other image shows (any picture squashed
#: onto a black frame or onto JPEG noise leaves no residual: before, a blank train image was
#: the "source" of every held-out image it was proposed for, at 0.89-1.0). So a pair counts
#: the better of its two directions only where each image's map onto the other explains at
#: least STRUCTURE of its target's variance, else the worse. Measured on the sample's 360
#: emoji and 300 Fashion-MNIST images: copies of every bench kind keep 0.3 or more both ways
#: (but 4 emoji brightened until they all but vanish into white: -0.04 to 0.2), a blank or
#: noise frame against any emoji 0.0 or less.
STRUCTURE = 0.2
#: Grey spread (of the blurred region) under which a region is blank: two blank regions are
#: copies when their mean colours differ by at most SHIFT levels in every channel.
BLANK = 2.0
#: Mean grey shift (levels, over the pixels not white or black in both: :func:`_toned`) from
#: which a match is named "brightness/contrast".
SHIFT = 8.0
#: Grey correlations closer than this are a tie (:func:`_first_inside`): two images aligned
#: whole correlate equally either way round, up to rounding.
TIE = 1e-6
#: An RGB pixel's weights in the grey picture the alignment is found on.
THIRDS = np.full(3, 1 / 3)
#: The kinds of match a reason names, as ``leak_kind`` writes them.
KINDS = ("same bytes", "mirrored", "cropped", "brightness/contrast", "resized", "re-encoded")
#: ``leaks.csv``'s columns, most certain pair first.
LEAK_COLUMNS = (
    "path",
    "split",
    "leak_of",
    "source_split",
    "kind",
    "score",
    "label",
    "source_label",
)

#: A thumbnail: uint8 RGB pixels (at most THUMB on the longer side) and the native (w, h).
Thumb = tuple[np.ndarray, tuple[int, int]]

#: The cheap first test of a pair (:func:`could_match`): :func:`_inside`'s grey alignment with
#: the copy at most COARSE pixels on its longer side, on whole pixels, then :func:`_worst_block`
#: on that coarse region. A pair whose coarse grey correlation stays below COARSE_GREY (neither
#: image flat: grey spread under FLAT, where a correlation means nothing) or whose coarse score
#: stays below COARSE_SCORE is not matched in full. Chosen on all 30,000 candidate pairs of the
#: ``leaks`` bench's emoji and Fashion-MNIST sets: no pair whose :func:`match` reaches
#: SCREEN_FROM fails it (the lowest such pair's coarse score: -0.03). Only for thumbnails of
#: COARSE_FROM pixels or more on both sides' longer side: at Fashion-MNIST's 28 pixels it
#: stopped 6 % of the pairs for a fifth of a match each, a loss; at the emoji's 48, half.
COARSE = 12
COARSE_GREY = 0.0
COARSE_SCORE = -0.1
FLAT = 15.0
COARSE_FROM = 36
#: The lowest ``threshold`` at which the first test is used: below, every candidate pair is
#: matched in full (the ``leaks`` bench's threshold 0 keeps every score exact).
SCREEN_FROM = 0.5
#: Candidate pairs from which the checks are spread over the machine's cores (the workers'
#: start took 2-4 s on 2 loaded cores; below, the checks run in this process).
PARALLEL_MIN = 5000
#: Pairs a worker is handed at a time (with their thumbnails).
PARALLEL_CHUNK = 256
#: What the pair checks kept across runs (:class:`~embedscope.findings.pair_store.PairStore`)
#: were matched by: this module's source and the libraries that resample and sum the pixels.
CHECKS_DIGEST = hashlib.sha256(
    Path(__file__).read_bytes() + f"{PIL.__version__} {np.__version__}".encode()
).hexdigest()[:16]


def split_rank(split: str) -> int:
    """Where a split comes in :data:`SPLIT_ORDER` (an unknown held-out split after pred; -1
    for no split: such an image is neither searched nor a source)."""
    if not split:
        return -1
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def _held_out(rank: np.ndarray) -> np.ndarray:
    """Which rows (by :func:`split_rank`) the leak search looks at: every split after the
    earliest one present (train, else val: val and test alone search test among val); none
    with fewer than two splits, where nothing can copy an earlier split."""
    present = rank[rank >= 0]
    if len(np.unique(present)) < 2:
        return np.zeros(len(rank), bool)
    return rank > present.min()


def small_copy(image: Image.Image) -> Thumb:
    """The thumbnail a pair is compared on, with the image's native size: a copy is later
    compared at its own detail, never upsampled (a 10-pixel copy of a 28-pixel image is
    compared at 10 pixels: upsampled it would differ from its source by blur)."""
    w, h = image.size
    scale = min(1.0, THUMB / max(w, h))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image.convert("RGB"), np.uint8), (w, h)


def load_small(root: str | Path, rel: str) -> Thumb | None:
    """:func:`small_copy` of a dataset file (JPEGs decoded at a reduced draft size); None for
    a file that cannot be read now (it was ok at ingest: it then simply finds no leak)."""
    try:
        image = load_rgb(os_path(root, rel), draft=(4 * THUMB, 4 * THUMB))
    except (OSError, ValueError):
        return None
    return small_copy(image)


def _standard(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (flattened patches) at zero mean and unit norm (flat: all zeros)."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-3 * np.sqrt(x.shape[-1]), x / np.maximum(norm, 1e-12), 0.0)


def _resized(pixels: np.ndarray, w: int, h: int) -> np.ndarray:
    if pixels.shape[1] == w and pixels.shape[0] == h:
        return pixels.astype(np.float32)
    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BOX), np.float32)


def tiny(thumb: Thumb) -> tuple[np.ndarray, np.ndarray]:
    """The grey TINY x TINY picture of a thumbnail and of its mirror, standardised: their
    cosine is the pictures' correlation (brightness and contrast invariant)."""
    grey = _resized(thumb[0], TINY, TINY).mean(axis=2)
    return tuple(_standard(g.ravel()[None])[0].astype(np.float32) for g in (grey, grey[:, ::-1]))


def _tiny_pictures(
    root: str | Path,
    paths: np.ndarray,
    smalls: dict[str, Thumb | None],
    tinies: dict[str, tuple[np.ndarray, np.ndarray]],
    load: np.ndarray | None = None,
    spread: _Spread | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every path's :func:`tiny` pictures, plain and mirrored, stacked (flat zeros without a
    thumbnail); thumbnails of the paths ``load`` marks (default all) read into ``smalls``, and
    the pictures kept in ``tinies``, so that the leak and near-duplicate searches of one run
    read and shrink each image once (on ``spread``'s processes, :func:`_read_thumbs`)."""
    todo = [p for p in (paths if load is None else paths[load]) if p not in smalls]
    reads = _read_thumbs(root, todo, spread or _Spread(1))  # None: in this process
    for p, (thumb, pictures) in zip(todo, reads, strict=True):
        smalls[p] = thumb
        if pictures is not None:
            tinies[p] = pictures
    flat = np.zeros(TINY * TINY, np.float32)
    for p in paths:
        if p in smalls and p not in tinies:
            tinies[p] = tiny(smalls[p]) if smalls[p] is not None else (flat, flat)
    if not len(paths):
        return np.zeros((0, TINY * TINY), np.float32), np.zeros((0, TINY * TINY), np.float32)
    pictures = [tinies.get(p, (flat, flat)) for p in paths]
    return np.stack([a for a, _ in pictures]), np.stack([b for _, b in pictures])


def _read_chunk(root: str | Path, paths: list[str]) -> list[tuple[Thumb | None, tuple | None]]:
    """A worker's share of :func:`_read_thumbs`: each path's thumbnail and tiny pictures."""
    thumbs = [load_small(root, p) for p in paths]
    return [(t, tiny(t) if t is not None else None) for t in thumbs]


def _read_thumbs(
    root: str | Path, paths: list[str], spread: _Spread
) -> list[tuple[Thumb | None, tuple | None]]:
    """:func:`_read_chunk` of ``paths``, in order: in this process, or on ``spread``'s
    processes once there are :data:`PARALLEL_MIN` files (at 100,000 images reading every file
    was a minute on one core)."""
    if not spread.spreads(len(paths)):
        return _read_chunk(root, paths)
    chunks = [paths[s : s + 4 * PARALLEL_CHUNK] for s in range(0, len(paths), 4 * PARALLEL_CHUNK)]
    return spread.map(_read_chunk, [(root, c) for c in chunks])


def _grey(x: np.ndarray) -> np.ndarray:
    """A region's grey pixels, standardised (:func:`_standard`)."""
    return _standard(x.mean(axis=2).ravel()[None])[0]


def _window_scores(grey: np.ndarray, weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """The correlation of every ``h`` x ``w`` window of ``grey`` (float64) with each picture
    of ``weights`` (:func:`_weights`), windows in reading order: the pictures' zero mean lets
    the raw windows' dot products stand for the centred ones, and a last column of ones gives
    each window's sum, so no window is centred or normed one by one (a flat window scores 0,
    as :func:`_standard` makes it)."""
    n = h * w
    rows, cols = grey.shape[0] - h + 1, grey.shape[1] - w + 1
    step = grey.strides
    windows = np.lib.stride_tricks.as_strided(
        grey, (rows, cols, h, w), (*step, *step), writeable=False
    ).reshape(-1, n)
    dots = windows @ weights
    squares = np.einsum("ij,ij->i", windows, windows)
    spread = np.sqrt(np.maximum(squares - dots[:, -1] ** 2 / n, 0.0))[:, None]
    lively = spread > 1e-3 * np.sqrt(n)
    return np.where(lively, dots[:, :-1] / np.where(lively, spread, 1.0), 0.0)


def _weights(grey: np.ndarray) -> np.ndarray:
    """A grey picture and its mirror, standardised, as the columns :func:`_window_scores`
    multiplies windows by, with a column of ones."""
    pair = _standard(np.stack([grey.ravel(), grey[:, ::-1].ravel()]))
    return np.vstack([pair, np.ones(grey.size)]).T


def _inside(
    a: Thumb, b: Thumb, side: int = WORK
) -> tuple[float, np.ndarray, np.ndarray, bool, float, tuple[float, ...]]:
    """``a`` sought as a region of ``b`` (a crop of :data:`SMALLEST_CROP` of the side or more,
    anywhere, mirrored or not), at ``a``'s own detail but at most ``side`` pixels on its longer
    side: ``b`` is scaled so that the region is as many pixels as ``a`` at every whole-pixel
    size. Returns the best grey correlation, the aligned region of ``b`` and ``a`` (RGB,
    float), whether mirrored, the region's share and its box in ``b``'s thumbnail pixels (for
    :func:`_subpixel`)."""
    (pa, (aw, ah)), (pb, (bw, bh)) = a, b
    f = min(1.0, side / max(aw, ah), bw / aw, bh / ah)  # compared pixels per native pixel of a
    cw, ch = max(2, round(aw * f)), max(2, round(ah * f))
    template = _resized(pa, cw, ch)
    weights = _weights(template.mean(axis=2))
    best = (-2.0, template, template, False, 1.0, (0.0, 0.0, 1.0, 1.0))
    source = Image.fromarray(pb)
    for width in range(cw, round(cw / SMALLEST_CROP) + 1):
        height = max(ch, round(bh * width / bw))
        same = pb.shape[1] == width and pb.shape[0] == height
        big = pb if same else np.asarray(source.resize((width, height), Image.Resampling.BOX))
        scores = _window_scores(big @ THIRDS, weights, ch, cw)
        at = np.unravel_index(int(scores.argmax()), scores.shape)
        if scores[at] > best[0] + 1e-6:
            y, x = divmod(int(at[0]), width - cw + 1)
            mirrored = bool(at[1])
            seen = template[:, ::-1] if mirrored else template
            sx, sy = pb.shape[1] / width, pb.shape[0] / height
            box = (x * sx, y * sy, (x + cw) * sx, (y + ch) * sy)
            region = big[y : y + ch, x : x + cw].astype(np.float32)
            best = (float(scores[at]), region, seen, mirrored, cw / width, box)
    return best


def _subpixel(
    pixels: np.ndarray, box: tuple[float, ...], seen: np.ndarray, start: float
) -> tuple[float, np.ndarray]:
    """The region of ``pixels`` in ``box`` moved and scaled by sub-pixel steps (each edge by
    at most one compared pixel) to the best grey correlation with ``seen``: whole-pixel sizes
    and positions leave a crop's edges half a pixel off, which a local statistic would read
    as a difference. Returns the correlation and the region (``start``: the whole-pixel one's)."""
    h, w = seen.shape[:2]
    target = _grey(seen)
    grey = Image.fromarray(pixels.astype(np.float32).mean(axis=2), "F")
    limit = (pixels.shape[1], pixels.shape[0], pixels.shape[1], pixels.shape[0])
    origin = np.asarray(box, np.float64)
    reach = (origin[2] - origin[0]) / w

    tried: dict[tuple[float, ...], float] = {}  # the descent meets many boxes again

    def correlation(b: np.ndarray) -> float:
        key = tuple(b.tolist())
        if key not in tried:
            r = np.asarray(grey.resize((w, h), Image.Resampling.BILINEAR, box=key), np.float64)
            r = r.ravel()
            spread = float(r @ r) - float(r.sum()) ** 2 / r.size  # target has zero mean
            tried[key] = float(r @ target) / max(np.sqrt(max(spread, 0.0)), 1e-6)
        return tried[key]

    now, best = origin.copy(), start
    step = reach / 2
    for _ in range(2):
        moved = True
        while moved:
            moved = False
            for k in range(4):
                for d in (-step, step):
                    b = now.copy()
                    b[k] += d
                    if not (0 <= b[k] <= limit[k] and abs(b[k] - origin[k]) <= reach):
                        continue
                    if b[2] - b[0] < 1 or b[3] - b[1] < 1:
                        continue
                    g = correlation(b)
                    if g > best + 1e-6:
                        best, now, moved = g, b, True
        step /= 2
    if best <= start:
        return start, np.empty(0)
    return best, np.asarray(
        Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR, box=tuple(now)),
        np.float32,
    )


def _monotone(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x``'s values replaced by ``y``'s of the same rank, one mapping for all channels: any
    brightness, contrast or gamma change of ``y`` (clipped or not) undone, yet no change of
    colour (a red and a blue heart of the same shape stay apart)."""
    flat = x.ravel()
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
    counts = np.diff(np.append(starts, len(flat)))
    # equal values of x (a flat background) take the mean of their share of y, in no order
    means = np.add.reduceat(np.sort(y.ravel()).astype(np.float64), starts) / counts
    out = np.empty(len(flat), np.float32)
    out[order] = np.repeat(means, counts)
    return out.reshape(x.shape)


def _smooth(x: np.ndarray) -> np.ndarray:
    """``x`` (h, w, channels) blurred by a [1, 2, 1] / 4 kernel along each side: JPEG's ringing
    and what is left of a sub-pixel shift are finer than a look-alike's differences."""
    p = np.concatenate([x[:1], x, x[-1:]], axis=0)
    x = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    p = np.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def _worst_block(a: np.ndarray, b: np.ndarray, structure: bool = True) -> float:
    """The largest residual, over a :data:`BLOCKS` x :data:`BLOCKS` grid of blocks, of two
    aligned regions (:func:`_smooth`) after :func:`_monotone` (source onto copy or back,
    whichever fits), as an RMS relative to the livelier region's spread (a copy brightened until
    it is nearly white keeps its source's structure, not its spread): a copy differs from its
    source a little everywhere (resampling, JPEG), a look-alike a lot somewhere (a smiley's
    mouth). A map that explains less than :data:`EXPLAINED` of its target's variance is measured
    against the target's own spread (at least :data:`FLOOR` of the livelier one's): squashed
    onto a nearly flat image, any picture leaves a residual small next to its own spread.
    ``structure``: the better direction counts only where both explain :data:`STRUCTURE` of
    their target (off for :func:`could_match`'s coarse test, which must stop no copy); two
    blank regions (:data:`BLANK`) match by their colours alone."""
    a, b = _smooth(a), _smooth(b)
    if max(float(a.mean(axis=2).std()), float(b.mean(axis=2).std())) < BLANK:
        colours = np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1)))
        return 0.0 if float(colours.max()) <= SHIFT else 1.0
    va, vb = float(a.var()), float(b.var())
    spread = max(va, vb, 1.0)
    valid, counts, starts = _grid(*a.shape[:2])
    worsts, explained = [], []
    for x, y, own in ((a, b, max(vb, 1.0)), (b, a, max(va, 1.0))):
        res = ((_monotone(x, y) - y) ** 2).mean(axis=2)
        explained.append(1.0 - float(res.mean()) / own)
        res /= spread if explained[-1] >= EXPLAINED else max(own, FLOOR * spread)
        sums = np.add.reduceat(np.add.reduceat(res, starts[0], axis=0), starts[1], axis=1)
        worsts.append(float(np.sqrt((sums / counts)[valid].max())))
    return max(worsts) if structure and min(explained) < STRUCTURE else min(worsts)


@functools.cache
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The :data:`BLOCKS` x :data:`BLOCKS` blocks of an ``h`` x ``w`` region, as
    :func:`_worst_block` sums them: which are not empty, their pixel counts, their first rows
    and columns (a few sizes recur in every pair)."""
    ys = np.linspace(0, h, BLOCKS + 1).round().astype(int)
    xs = np.linspace(0, w, BLOCKS + 1).round().astype(int)
    valid = (np.diff(ys)[:, None] > 0) & (np.diff(xs)[None, :] > 0)
    counts = np.maximum(np.diff(ys)[:, None] * np.diff(xs)[None, :], 1)
    return valid, counts, (np.minimum(ys[:-1], h - 1), np.minimum(xs[:-1], w - 1))


def _first_inside(a: Thumb, b: Thumb, one: float, other: float) -> bool:
    """Whether the alignment of ``a`` inside ``b`` (grey correlation ``one``) is kept rather
    than ``b`` inside ``a`` (``other``). On a tie (:data:`TIE`: both aligned whole) the image
    with fewer native pixels is the template, as its own detail is what is compared: the
    larger is then resampled to a fraction of a pixel, never the smaller (a copy at 0.75 of
    its source's side scored 0.95 one way, 0.69 the other), so a pair of unequal sizes scores
    the same whichever image a search meets first. At equal size ``a`` stays the template (the
    held-out image in the leak search; either way round may then score a little differently:
    0.72 and 0.70 for an emoji brightened by a quarter)."""
    if abs(one - other) > TIE:
        return one > other
    return a[1][0] * a[1][1] <= b[1][0] * b[1][1]


def match(copy: Thumb, source: Thumb) -> tuple[float, str]:
    """How surely ``copy`` copies ``source`` (:func:`small_copy`'s thumbnails), at most 1, and
    the kind of match its best alignment says: either image may be the crop of the other.
    The alignment is found on grey (whole pixels, then :func:`_subpixel`); the score is one
    less the worst block's residual there (:func:`_worst_block`, in colour: a red and a blue
    heart of the same shape are not copies); 0 where either image has a side under
    :data:`SMALLEST_SIDE` pixels."""
    if min(*copy[1], *source[1]) < SMALLEST_SIDE:
        return 0.0, "resized"
    one, other = _inside(copy, source), _inside(source, copy)
    inside = _first_inside(copy, source, one[0], other[0])
    grey, region, seen, mirrored, share, box = one if inside else other
    pixels = (source if inside else copy)[0]
    if grey > 0.5:  # below, no copy: alignment to a fraction of a pixel would not matter
        better = _subpixel(pixels, box, seen, grey)[1]
        if better.size:
            region = better
    score = 1.0 - _worst_block(region, seen)
    if mirrored:
        kind = "mirrored"
    elif share < 0.97:
        kind = "cropped"
    else:
        kind = "brightness/contrast" if _toned(seen, region) else "resized"
    return score, kind


def _toned(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two aligned regions differ in brightness or contrast: their spreads a tenth
    apart, or their mean grey levels :data:`SHIFT` apart over the pixels not white (or black)
    in both (an emoji brightened by a fifth on its white background moved 3 levels on average
    over all its pixels, and was named re-encoded)."""
    if abs(float((a.std() + 1.0) / (b.std() + 1.0)) - 1) > 0.1:  # blank: 1
        return True
    ga, gb = a.mean(axis=2), b.mean(axis=2)
    moving = ~(((ga >= 250) & (gb >= 250)) | ((ga <= 5) & (gb <= 5)))
    return bool(moving.any()) and abs(float(ga[moving].mean() - gb[moving].mean())) > SHIFT


def leak_score(best: float, second: float) -> float:
    """The pair's score from its :func:`match` ``best`` and the next candidate's ``second``:
    ``1 - (1 - best) / (1 - second) ** AMBIGUITY``. A copy matches its source far better than
    any other image (a ratio test: its distance is small next to the runner-up's); a
    look-alike of a uniform class (trousers) matches several about as well."""
    second = float(np.clip(second, 0.0, 1.0 - 1e-3))
    return float(np.clip(1.0 - (1.0 - best) / (1.0 - second) ** AMBIGUITY, 0.0, 1.0))


def could_match(a: Thumb, b: Thumb) -> bool:
    """The cheap first test of a pair (about a quarter of a :func:`match`): False where the
    pair's coarse alignment (:func:`_inside` at :data:`COARSE` pixels, either image inside the
    other, on whole pixels) shows no
    copy, by its grey correlation (:data:`COARSE_GREY`, unless an image is flat) or by its
    worst block (:data:`COARSE_SCORE`). Most candidate pairs are look-alikes, not copies: they
    stop here. Chosen conservative: no bench pair that :func:`match` scores at or above
    :data:`SCREEN_FROM` fails it (tests/test_leak_speed.py keeps real copies passing)."""
    if min(max(a[0].shape[:2]), max(b[0].shape[:2])) < COARSE_FROM:
        return True  # too few pixels for a coarse picture to tell (measured: a loss)
    one, other = _inside(a, b, COARSE), _inside(b, a, COARSE)
    grey, region, seen = (one if _first_inside(a, b, one[0], other[0]) else other)[:3]
    flat = min(float(a[0].mean(axis=2).std()), float(b[0].mean(axis=2).std())) < FLAT
    if grey < COARSE_GREY and not flat:
        return False
    return 1.0 - _worst_block(region, seen, structure=False) >= COARSE_SCORE


def _checked(a: Thumb, b: Thumb, screen: bool) -> tuple[float, str] | None:
    """:func:`match` of a pair; None where ``screen`` is on and :func:`could_match` rejects it
    (its match is then below :data:`SCREEN_FROM`)."""
    if screen and not could_match(a, b):
        return None
    return match(a, b)


def _pair(
    cache: dict[tuple[int, int], tuple[float, str] | None],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    i: int,
    j: int,
    screen: bool,
) -> tuple[float, str] | None:
    """:func:`_checked` of rows ``i`` and ``j``, kept in ``cache`` by unordered pair (a match is
    symmetric: within one split both images of a pair propose each other); a pair the first
    test stopped (None) is matched in full once asked without ``screen``."""
    key = _key(i, j)
    if key not in cache or (cache[key] is None and not screen):
        if getattr(cache, "defer", False):
            raise _Deferred(i, j, screen)
        cache[key] = _checked(smalls[paths[i]], smalls[paths[j]], screen)
    return cache[key]


class _Deferred(Exception):
    """A pair :func:`_pair` lacks while :func:`_settled` gathers them: (row, row, screen)."""


def _key(i: int, j: int) -> tuple[int, int]:
    """A pair's key in :class:`_Pairs`: a match is symmetric, so the pair is unordered."""
    return (min(i, j), max(i, j))


class _Pairs(dict):
    """The pair cache: unordered row pair (:func:`_key`) -> :func:`_checked`'s answer. While
    ``defer`` is on, :func:`_pair` raises :class:`_Deferred` for a pair it lacks instead of
    matching it. ``at_detail``: (row, its best candidate, another candidate) -> the match of
    the row, shrunk to its best candidate's detail, with the other (:func:`_verified`), kept
    across the rounds of :func:`_settled`."""

    defer = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.at_detail: dict[tuple[int, int, int], float] = {}


def _settled(
    items: Sequence[int],
    verify: Callable[[int], tuple[float, int, str]],
    cache: _Pairs,
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    spread: _Spread,
    store: PairStore | None = None,
) -> dict[int, tuple[float, int, str]]:
    """``verify(item)`` of each item, where the pairs it asks beyond ``cache`` (a runner-up's
    check against the best, a stopped pair matched in full after all) are matched in rounds on
    ``spread``'s workers (:func:`_match_pairs`), not one by one in this process: each round
    runs every pending item up to its first missing pair. Every answer is the one asking each
    pair as it comes gives (at 100,000 images the runner-ups' checks took about a minute on one
    core)."""
    out: dict[int, tuple[float, int, str]] = {}
    pending = list(items)
    cache.defer = True
    try:
        while pending:
            wanted: dict[tuple[tuple[int, int], bool], tuple[int, int]] = {}
            again = []
            for item in pending:
                try:
                    out[item] = verify(item)
                except _Deferred as missing:
                    i, j, screen = missing.args
                    wanted.setdefault((_key(i, j), screen), (i, j))
                    again.append(item)
            # one spread for both kinds (one pool); screened first, so that a pair matched in
            # full replaces its stopped answer
            asked = sorted(wanted, key=lambda want: not want[1])
            pairs = [wanted[want] for want in asked]
            screens = [screen for _, screen in asked]
            found = _match_pairs(pairs, smalls, paths, screens, spread, store)
            cache.update(zip((key for key, _ in asked), found, strict=True))
            pending = again
    finally:
        cache.defer = False
    return out


def _verify_all(
    looked: dict[int, list[int]],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    threshold: float,
    spread: _Spread,
    family: dict[int, int] | None = None,
    store: PairStore | None = None,
) -> tuple[dict[int, tuple[float, int, str]], _Pairs]:
    """:func:`_verified` of every looked-up row with a thumbnail against its candidates: the
    pairs matched up front (:func:`_prefilled`), the rest in rounds (:func:`_settled`); and
    the pairs matched, for what asks more of them. ``family``: row -> the row it is a known
    copy of (:func:`_runner_up`). ``store``: verdicts kept across runs (:func:`_match_pairs`)."""
    screen = threshold >= SCREEN_FROM
    cache = _prefilled(list(looked.items()), smalls, paths, screen, spread, store)
    verified = _settled(
        [i for i in looked if smalls.get(paths[i]) is not None],
        lambda i: _verified(i, looked[i], smalls, paths, cache, threshold, family),
        cache,
        smalls,
        paths,
        spread,
        store,
    )
    return verified, cache


def _check_chunk(
    thumbs: dict[int, Thumb], pairs: list[tuple[int, int]], screens: list[bool]
) -> list[tuple[float, str] | None]:
    """A worker's share of :func:`_match_pairs` (thumbnails by row, shipped with the pairs)."""
    return [_checked(thumbs[i], thumbs[j], s) for (i, j), s in zip(pairs, screens, strict=True)]


def _workers(pairs: int, workers: int | None) -> int:
    """Processes for ``pairs`` checks: ``workers`` where given, else every core this process
    may run on (``os.sched_getaffinity``) once there are :data:`PARALLEL_MIN` pairs, else 1."""
    if workers is not None:
        return max(1, int(workers))
    if pairs < PARALLEL_MIN:
        return 1
    return usable_cores()


def _match_pairs(
    pairs: list[tuple[int, int]],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    screen: bool | Sequence[bool],
    spread: _Spread,
    store: PairStore | None = None,
) -> list[tuple[float, str] | None]:
    """:func:`_checked` of each (row, row) pair, in order (``screen``: for all of them, or one
    per pair): in this process, or on ``spread``'s processes with the same result; each chunk
    of pairs travels with its thumbnails only. ``store``: verdicts kept from earlier runs are
    taken from it, and the new ones put in it."""
    screens = [screen] * len(pairs) if isinstance(screen, bool) else list(screen)
    if store is not None:
        keys = [
            (store.key(paths[i], smalls[paths[i]]), store.key(paths[j], smalls[paths[j]]))
            for i, j in pairs
        ]
        known = [store.get(a, b, s) for (a, b), s in zip(keys, screens, strict=True)]
        todo = [n for n, verdict in enumerate(known) if verdict is MISSING]
        found = _match_pairs(
            [pairs[n] for n in todo], smalls, paths, [screens[n] for n in todo], spread
        )
        for n, verdict in zip(todo, found, strict=True):
            known[n] = verdict
            store.put(*keys[n], screens[n], verdict)
        return known  # type: ignore[return-value]
    spreads = spread.spreads(len(pairs))
    size = PARALLEL_CHUNK if spreads else max(len(pairs), 1)
    chunks = [(pairs[s : s + size], screens[s : s + size]) for s in range(0, len(pairs), size)]
    jobs = (({r: smalls[paths[r]] for pair in c for r in pair}, c, f) for c, f in chunks)
    if spreads:
        return spread.map(_check_chunk, jobs)
    return [found for job in jobs for found in _check_chunk(*job)]


class _Spread:
    """The processes one search shares for its reads and pair checks (:func:`_read_thumbs`,
    :func:`_match_pairs`, every round of :func:`_settled`): a pool of ``workers``
    (:func:`_workers`) started on first need, the safe way for the caller
    (:func:`_start_method`; 1-4 s on loaded cores from a kernel), and closed with the search."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers, self.pool = workers, None
        self.size = _workers(PARALLEL_MIN, workers)  # the pool's, once it runs

    def __enter__(self) -> _Spread:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def spreads(self, jobs: int) -> bool:
        """Whether ``jobs`` items are worth the processes (:func:`_workers`)."""
        return jobs > 1 and _workers(jobs, self.workers) > 1

    def map(self, func: Callable, jobs: Iterable[tuple]) -> list:
        """``func(*job)`` of every job, in order, the results' lists joined; a bounded number
        of jobs (with their data) waits in memory at a time."""
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.size, mp_context=_start_method())
        window = 4 * self.size
        out: list = []
        jobs = iter(jobs)
        while batch := list(itertools.islice(jobs, window)):
            for done in self.pool.map(func, *zip(*batch, strict=True)):
                out += done
        return out


def _start_method() -> multiprocessing.context.BaseContext:
    """How the workers start. From a notebook kernel, a REPL or ``python -m``: forked from a
    ``forkserver`` process that imported this module once (a kernel has torch and threads: a
    plain fork of it could hang); its workers start in about a second, later ones faster.
    From a script file: a plain fork, as the kit's other pools do (a forkserver or spawned
    worker would run the script's unguarded top level again); spawn where neither exists."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) and getattr(main, "__spec__", None) is None
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods and not script:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _prefilled(
    searches: list[tuple[int, Sequence[int]]],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    screen: bool,
    spread: _Spread,
    store: PairStore | None = None,
) -> _Pairs:
    """The pair cache :func:`_verified` reads, filled with every candidate pair of the
    searches ((row, candidate rows), in the order they run) at once, so that the checks can
    spread over the cores (:func:`_match_pairs`): each unordered pair once, matched the way
    round the first search to meet it would match it."""
    keys: dict[tuple[int, int], tuple[int, int]] = {}
    for i, near in searches:
        if smalls.get(paths[i]) is None:
            continue
        for j in near:
            key = _key(i, int(j))
            if int(j) != i and key not in keys and smalls.get(paths[j]) is not None:
                keys[key] = (i, int(j))
    pairs = list(keys.values())
    found = _match_pairs(pairs, smalls, paths, screen, spread, store)
    return _Pairs(zip(keys, found, strict=True))


def _candidates(
    x: np.ndarray,
    pictures: tuple[np.ndarray, np.ndarray],
    held: np.ndarray,
    earlier: np.ndarray,
    k: int,
    *,
    same: bool = False,
) -> list[list[int]]:
    """Per held-out row, its candidate rows of ``earlier`` (cosine first, then the tiny
    picture's, each mirrored or not), without repeats; all through the kit's one kNN search.
    ``same``: ``held`` is ``earlier`` (a split searched within itself), no row its own."""
    plain, mirror = pictures
    cosine = top_k(Rows(x, held), Rows(x, earlier), k, exclude_self=same)[0]
    # the tiny picture mirrored or not: the k best of both lists together
    ia, sa = top_k(plain[held], plain[earlier], k, exclude_self=same)
    ib, sb = top_k(mirror[held], plain[earlier], k, exclude_self=same)
    both, sims = np.concatenate([ia, ib], axis=1), np.concatenate([sa, sb], axis=1)
    picture = np.take_along_axis(both, np.argsort(-sims, axis=1, kind="stable"), axis=1)
    out = []
    for r in range(len(held)):
        near = earlier[cosine[r]].tolist()  # top_k's rows are distinct
        seen = list(dict.fromkeys(earlier[picture[r]].tolist()))
        out.append(near + [j for j in seen if j not in near][:k])
    return out


def find_leaks(
    root: str | Path,
    rows: pd.DataFrame,
    vectors: np.ndarray,
    splits: Sequence[str],
    *,
    threshold: float = THRESHOLD,
    candidates: int = CANDIDATES,
    smalls: dict[str, Thumb | None] | None = None,
    tinies: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    workers: int | None = None,
    store: PairStore | None = None,
) -> pd.DataFrame:
    """Per embedded image (``rows``: path, label, sha256, sizes optional; ``vectors`` row for row;
    ``splits`` each row's split): ``leak_of`` (the earlier-split image it copies most surely,
    empty for none), ``source_split``, ``leak_score`` (0..1), ``leak`` and ``leak_kind``. Train
    images are never flagged; a val image is searched among train, a test image among train and
    val (without a train split, val is the source and never flagged). ``smalls`` and ``tinies``
    keep thumbnails and tiny pictures by path across calls. Below ``threshold`` a score is an
    upper bound (its best match, no runner-up sought; 0 where no candidate passed
    :func:`could_match`): the leaks and their scores are those of matching every pair in full.
    ``workers``: processes for the pair checks (None: :func:`_workers` decides; the result is
    the same); ``store``: pair checks kept across runs (the same result)."""
    splits = np.asarray([str(s) for s in splits], dtype=object)
    n = len(rows)
    rank = np.array([split_rank(s) for s in splits])
    of, source = np.full(n, "", object), np.full(n, "", object)
    scores, leak, kinds = np.zeros(n, np.float32), np.zeros(n, bool), np.full(n, "", object)
    columns = {"leak_of": of, "source_split": source, "leak_score": scores, "leak": leak}
    columns["leak_kind"] = kinds  # filled in place below, one DataFrame at the end
    searched = _held_out(rank)
    if not searched.any():
        return pd.DataFrame(columns)
    paths = rows["path"].astype(str).to_numpy(dtype=object)
    sha = rows["sha256"].astype(str).to_numpy(dtype=object) if "sha256" in rows else paths
    smalls = {} if smalls is None else smalls
    tinies = {} if tinies is None else tinies
    with _Spread(workers) as spread:
        plain, mirror = _tiny_pictures(root, paths, smalls, tinies, rank >= 0, spread)
        by_sha: dict[str, int] = {}
        for i in np.flatnonzero(rank >= 0)[np.argsort(rank[rank >= 0], kind="stable")]:
            by_sha.setdefault(sha[i], int(i))
        family: dict[int, int] = {}  # a leak -> the train image it copies (or its source)
        for r in sorted(set(rank[searched].tolist())):  # a later split knows an earlier's leaks
            held = np.flatnonzero(rank == r)
            earlier = np.flatnonzero((rank >= 0) & (rank < r))
            near = _candidates(
                vectors, (plain, mirror), held, earlier, min(candidates, len(earlier))
            )
            looked = {
                int(i): near[row]
                for row, i in enumerate(held)
                if not (by_sha.get(sha[i], i) != i and rank[by_sha[sha[i]]] < r)
            }
            verified, cache = _verify_all(looked, smalls, paths, threshold, spread, family, store)
            for i in held:
                score, j, kind = verified.get(int(i), (0.0, -1, ""))
                same = by_sha.get(sha[i], i)
                if same != i and rank[same] < r:
                    score, j, kind = 1.0, same, "same bytes"
                if j < 0:
                    continue
                scores[i], kinds[i] = max(score, 0.0), kind
                if score < threshold:
                    continue
                if j in family:  # a copy of a val copy: the train image is what leaked
                    j = family[j]
                    direct = cache.get(_key(i, j))  # its own match with it, where one was made
                    kind = direct[1] if direct and kind != "same bytes" else kind
                of[i], source[i], leak[i] = paths[j], splits[j], True
                family[int(i)] = j
                kinds[i] = kind if kind == "same bytes" else _refined(kind, rows, i, j)
    return pd.DataFrame(columns)


def _verified(
    me: int,
    near: Sequence[int],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    cache: _Pairs,
    at_least: float = -np.inf,
    family: dict[int, int] | None = None,
) -> tuple[float, int, str]:
    """The surest copy of row ``me`` among its candidate rows ``near``: (its
    :func:`leak_score` against the runner-up, its row, the kind of match); (0, -1, "") for
    none. Matches come through ``cache`` (:func:`_pair`). A best match whose score could not
    reach ``at_least`` even without a runner-up is returned with that upper bound, its
    runner-up unsought (each check costs a match). From ``at_least`` :data:`SCREEN_FROM` on, a
    pair first passes :func:`could_match` (a pair that fails it matches below ``at_least``; no
    candidate passing: (0, -1, "")); where the best match may reach ``at_least`` and the
    runner-up found is below :data:`SCREEN_FROM`, the pairs that failed are matched in full
    after all (one of them may be the runner-up), so a score that may reach ``at_least`` is the
    one matching every pair gives."""
    screen = at_least >= SCREEN_FROM
    rows = [int(j) for j in near if smalls.get(paths[j]) is not None]

    def ranked(screened: bool) -> list[tuple[float, str, int]]:
        found = [(_pair(cache, smalls, paths, me, j, screened), j) for j in rows]
        return sorted(((*f, j) for f, j in found if f is not None), key=lambda t: -t[0])

    def runner_up(tried: list[tuple[float, str, int]]) -> float:
        best = tried[0][2]
        shrunk = _at_detail_of(smalls[paths[me]], smalls[paths[best]])
        if shrunk is not None:  # the best was judged at its coarser detail: so are the others
            for _, _, k in tried[1:]:
                if (me, best, k) not in cache.at_detail:
                    cache.at_detail[me, best, k] = match(shrunk, smalls[paths[k]])[0]
            again = [(cache.at_detail[me, best, k], kind, k) for _, kind, k in tried[1:]]
            tried = [tried[0], *sorted(again, key=lambda t: -t[0])]
        return _runner_up(tried, smalls, paths, cache, screen, family)

    tried = ranked(screen)
    if not tried:
        return (0.0, -1, "")
    if leak_score(tried[0][0], 0.0) < at_least:
        return (leak_score(tried[0][0], 0.0), tried[0][2], tried[0][1])
    second = runner_up(tried)
    if second < SCREEN_FROM and len(tried) < len(rows):  # a failed pair may be the runner-up
        tried = ranked(False)
        second = runner_up(tried)
    return (leak_score(tried[0][0], second), tried[0][2], tried[0][1])


def _at_detail_of(me: Thumb, best: Thumb) -> Thumb | None:
    """``me`` shrunk to the detail its :func:`match` with ``best`` was judged at, where
    ``best`` has fewer pixels on its longer side than ``me`` is compared at (:data:`WORK`);
    None where the pair was judged at ``me``'s own detail. At 10 pixels every sneaker looks
    like every other: a 28-pixel look-alike whose best candidate was a 10-pixel copy matched
    it at 0.73 while its runner-ups, judged at 28 pixels, stayed far lower, and the ratio test
    passed a false near duplicate; its runner-ups are judged at 10 pixels too."""
    (pixels, (w, h)), (_, (bw, bh)) = me, best
    theirs = max(bw, bh)
    if theirs >= 0.9 * min(WORK, max(w, h)):
        return None
    scale = theirs / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), np.uint8), size


def near_duplicates(
    root: str | Path,
    rows: pd.DataFrame,
    vectors: np.ndarray,
    scopes: Sequence[str],
    *,
    threshold: float = THRESHOLD,
    candidates: int = CANDIDATES,
    smalls: dict[str, Thumb | None] | None = None,
    tinies: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    workers: int | None = None,
    store: PairStore | None = None,
) -> pd.DataFrame:
    """Near-duplicate groups within each scope (``scopes``: each row's split, or one value for
    a dataset without splits), found as leaks are: the same candidates (:func:`_candidates`,
    one search per image among its own scope) and the same verification and ratio test
    (:func:`match`, :func:`leak_score` at or above ``threshold``), same bytes without
    looking. A group is a connected component of verified pairs, each image adding one pair
    (its surest copy), cut by :func:`_groups` so that a chain of look-alikes cannot merge a
    class. Columns, row for row with ``rows``: ``near_duplicate_group`` (-1: none),
    ``near_duplicate_of`` (its surest copy in the group), ``near_duplicate_score`` and
    ``near_duplicate_kind``. The pair checks go first (:func:`_prefilled`: a cheap first test,
    on ``workers`` processes; the result is the same as one by one); ``store``: pair checks
    kept across runs (the same result)."""
    scopes = np.asarray([str(s) for s in scopes], dtype=object)
    n = len(rows)
    paths = rows["path"].astype(str).to_numpy(dtype=object)
    sha = rows["sha256"].astype(str).to_numpy(dtype=object) if "sha256" in rows else paths
    smalls = {} if smalls is None else smalls
    tinies = {} if tinies is None else tinies
    with _Spread(workers) as spread:
        plain, mirror = _tiny_pictures(root, paths, smalls, tinies, spread=spread)
        edges: dict[int, tuple[float, int, str]] = {}
        searches = []
        for scope in dict.fromkeys(scopes):
            members = np.flatnonzero(scopes == scope)
            if len(members) < 2:
                continue
            twins: dict[str, list[int]] = {}
            for i in members:
                twins.setdefault(sha[i], []).append(int(i))
            k = min(candidates, len(members) - 1)
            near = _candidates(vectors, (plain, mirror), members, members, k, same=True)
            searches.append((members, twins, near))
        looked = {
            int(i): [j for j in near[row] if j != i]
            for members, twins, near in searches
            for row, i in enumerate(members)
            if len(twins[sha[i]]) == 1
        }
        verified, cache = _verify_all(looked, smalls, paths, threshold, spread, store=store)
    for members, twins, _ in searches:
        for i in members:
            same = twins[sha[i]]
            if len(same) > 1:  # the same bytes: a pair without looking
                edges[int(i)] = (1.0, same[1] if same[0] == i else same[0], "same bytes")
                continue
            if int(i) not in verified:
                continue
            score, j, kind = verified[int(i)]
            if j >= 0 and score >= threshold:
                edges[int(i)] = (score, j, _refined(kind, rows, int(i), j))
    group, partner = _groups(n, edges, smalls, paths, threshold, cache)
    of, scores, kinds = np.full(n, "", object), np.zeros(n, np.float32), np.full(n, "", object)
    for i, (score, j, kind) in partner.items():
        of[i], scores[i], kinds[i] = paths[j], score, kind
    return pd.DataFrame(
        {
            "near_duplicate_group": group,
            "near_duplicate_of": of,
            "near_duplicate_score": scores,
            "near_duplicate_kind": kinds,
        }
    )


def _groups(
    n: int,
    edges: dict[int, tuple[float, int, str]],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    threshold: float,
    cache: dict[tuple[int, int], tuple[float, str] | None],
) -> tuple[np.ndarray, dict[int, tuple[float, int, str]]]:
    """Group numbers (-1: none) of the connected components of ``edges`` (row -> its verified
    copy), and each grouped row's (score, partner row, kind). Against chaining (a crop of a
    look-alike of a mirror of ...): a component of three or more is kept whole only where each
    member also matches the component's hub (the member with most verified pairs) at or above
    ``threshold`` itself, or is the hub's own pair; the others are cut off and grouped among
    themselves the same way. A group is so the copies of one image, never a chain through a
    class. ``cache``: :func:`_verified`'s pairs (:func:`_pair`; a member's match with the hub
    is often known); from ``threshold`` :data:`SCREEN_FROM` on, a pair first passes
    :func:`could_match`."""
    parent = list(range(n))
    screen = threshold >= SCREEN_FROM

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, (_, j, _) in edges.items():
        parent[root(i)] = root(j)
    components: dict[int, list[int]] = {}
    for i in sorted({i for i in edges} | {e[1] for e in edges.values()}):
        components.setdefault(root(i), []).append(i)
    pending = list(components.values())
    groups: list[list[int]] = []
    partner: dict[int, tuple[float, int, str]] = {}
    while pending:
        members = pending.pop()
        inside = set(members)
        pairs = [(i, edges[i]) for i in members if i in edges and edges[i][1] in inside]
        if len(members) < 2 or not pairs:
            continue
        degree = dict.fromkeys(members, 0)
        for i, (_, j, _) in pairs:
            degree[i] += 1
            degree[j] += 1
        hub = max(members, key=lambda m: (degree[m], -m))
        kept = [hub]
        for m in members:
            if m == hub:
                continue
            if (m in edges and edges[m][1] == hub) or (hub in edges and edges[hub][1] == m):
                kept.append(m)
            elif len(members) > 2 and smalls.get(paths[m]) is not None:
                score, kind = _pair(cache, smalls, paths, m, hub, screen) or (-np.inf, "")
                if score >= threshold:
                    kept.append(m)
                    partner[m] = (score, hub, kind)
        if len(kept) > 1:
            groups.append(sorted(kept))
        held = set(kept)
        rest = [m for m in members if m not in held]
        if len(rest) > 1:  # the cut-off members, grouped among themselves by their own pairs
            cut = set(rest)
            sub = {i: edges[i] for i in rest if i in edges and edges[i][1] in cut}
            pending += [list(c) for c in _components(rest, sub)]
    group = np.full(n, -1, np.int64)
    for number, members in enumerate(sorted(groups)):
        group[members] = number
    out: dict[int, tuple[float, int, str]] = {}
    for i in np.flatnonzero(group >= 0).tolist():
        if i in edges and group[edges[i][1]] == group[i]:
            out[i] = edges[i]
        elif i in partner:
            out[i] = partner[i]
        else:  # the source of the group's pairs: its surest pair pointing at it
            into = [(e[0], k, e[2]) for k, e in edges.items() if e[1] == i and group[k] == group[i]]
            out[i] = max(into)
    return group, out


def _components(members: list[int], edges: dict[int, tuple[float, int, str]]) -> list[set[int]]:
    """The connected components of ``edges`` among ``members`` (lone members left out)."""
    linked: dict[int, set[int]] = {m: set() for m in members}
    for i, (_, j, _) in edges.items():
        linked[i].add(j)
        linked[j].add(i)
    seen: set[int] = set()
    out = []
    for m in members:
        if m in seen or not linked[m]:
            continue
        stack, part = [m], set()
        while stack:
            a = stack.pop()
            if a not in part:
                part.add(a)
                stack += list(linked[a] - part)
        seen |= part
        out.append(part)
    return out


def _runner_up(
    tried: list[tuple[float, str, int]],
    smalls: dict[str, Thumb | None],
    paths: np.ndarray,
    cache: dict[tuple[int, int], tuple[float, str] | None],
    screen: bool,
    family: dict[int, int] | None = None,
) -> float:
    """The best :func:`match` among the other candidates that are not copies of the best one
    themselves (a source with its own near duplicate in train stays unambiguous); 0 for none.
    At most two others are checked against the best (each check costs a match; through
    ``cache``, :func:`_pair`). ``screen``: the best reaches :data:`SCREEN_FROM`, so a pair
    failing :func:`could_match` is below it. ``family``: row -> the row it is a known copy of
    (an earlier held-out split's leak): one of the best's family is no runner-up, unchecked
    (a val copy of a train image matched that image a little less well than the test copy
    did, and was its runner-up)."""
    family = family or {}
    root = family.get(tried[0][2], tried[0][2])
    others = [t for t in tried[1:] if family.get(t[2], t[2]) != root]
    for checked, (score, _, j) in enumerate(others):
        if checked >= 2:
            return score
        found = _pair(cache, smalls, paths, j, tried[0][2], screen)
        if found is None or found[0] < tried[0][0]:
            return score
    return 0.0


def _refined(kind: str, rows: pd.DataFrame, i: int, j: int) -> str:
    """``resized`` becomes ``re-encoded`` when both images have the same size."""
    if kind != "resized" or not {"width", "height"} <= set(rows):
        return kind
    same = (rows["width"].iat[i], rows["height"].iat[i]) == (
        rows["width"].iat[j],
        rows["height"].iat[j],
    )
    return "re-encoded" if same else kind


def leak_pairs(rows: pd.DataFrame, splits: Sequence[str], leaks: pd.DataFrame) -> pd.DataFrame:
    """The leak pairs, most certain first: ``leaks.csv``'s :data:`LEAK_COLUMNS`."""
    labels = dict(zip(rows["path"], rows["label"], strict=True))
    split_of = np.asarray(splits, dtype=object)
    on = leaks["leak"].to_numpy(bool)
    table = pd.DataFrame(
        {
            "path": rows["path"].to_numpy(dtype=object)[on],
            "split": split_of[on],
            "leak_of": leaks["leak_of"].to_numpy(dtype=object)[on],
            "source_split": leaks["source_split"].to_numpy(dtype=object)[on],
            "kind": leaks["leak_kind"].to_numpy(dtype=object)[on],
            "score": leaks["leak_score"].to_numpy(np.float32)[on],
            "label": rows["label"].to_numpy(dtype=object)[on],
        }
    )
    table["source_label"] = table["leak_of"].map(labels)
    return table.sort_values(["score", "path"], ascending=[False, True], kind="stable")[
        list(LEAK_COLUMNS)
    ].reset_index(drop=True)


def write_leaks(pairs: pd.DataFrame, path: str | Path) -> None:
    """``reports/<name>/leaks.csv``, written atomically."""
    text = pairs.to_csv(index=False, float_format="%.4f")
    write_atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _compute(context: Context) -> pd.DataFrame:
    """The split and leak columns; none at all for a dataset without splits."""
    facts = context.facts
    if "split" not in facts:
        return pd.DataFrame(index=facts.index)
    n = len(facts)
    out = pd.DataFrame({"split": facts["split"].fillna("").astype(str).to_numpy(dtype=object)})
    if "leak" in facts:
        out["leak_of"] = facts["leak_of"].fillna("").astype(str).to_numpy(dtype=object)
        out["leak_score"] = pd.to_numeric(facts["leak_score"]).fillna(0).to_numpy(np.float32)
        out["leak"] = facts["leak"].fillna(False).astype(bool).to_numpy()
        out["leak_kind"] = facts["leak_kind"].fillna("").astype(str).to_numpy(dtype=object)
    else:  # splits, but no search run (a caller without pixels): nothing found
        out["leak_of"], out["leak_kind"] = "", ""
        out["leak_score"], out["leak"] = np.zeros(n, np.float32), False
    labels = dict(zip(context.rows["path"], context.rows["label"].astype(str), strict=True))
    own = context.rows["label"].astype(str).to_numpy(dtype=object)
    dup = facts["duplicate_of"].fillna("").astype(str).to_numpy(dtype=object)
    other = np.where(out["leak_of"].to_numpy(dtype=object) != "", out["leak_of"], dup)
    theirs = np.array([labels.get(p, "") if p else "" for p in other], dtype=object)
    conflict = (theirs != "") & (theirs != own) & (own != UNLABELLED) & (theirs != UNLABELLED)
    out["conflicting_labels_of"] = np.where(conflict, other, "")
    out["conflicting_labels_score"] = np.where(
        conflict, np.where(out["leak"], out["leak_score"], 1.0), 0.0
    ).astype(np.float32)
    out["conflicting_labels"] = conflict
    return out


def _leak_reasons(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    """ "copies train/cat/1.png (mirrored, score 0.97)"."""
    return [
        f"copies {table['leak_of'].iat[i]} ({table['leak_kind'].iat[i]}, score "
        f"{float(table['leak_score'].iat[i]):.2f})"
        for i in at
    ]


def _conflict_reasons(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    labels = dict(zip(context.rows["path"], context.rows["label"].astype(str), strict=True))
    return [
        f"a copy of {table['conflicting_labels_of'].iat[i]}, labelled "
        f"{labels.get(table['conflicting_labels_of'].iat[i], '?')}"
        for i in at
    ]


FAMILY = Family(
    name="leaks",
    order=65,
    columns=(
        Column("split", "train, val, test (or the split's own name); only with splits", text=True),
        Column("leak_of", "the earlier-split image it copies (empty: none)", text=True),
        Column("leak_score", "0..1: colour match with the candidate, against the runner-up's"),
        Column("leak", "a held-out image that copies a train image (or test a val one)"),
        Column("leak_kind", "the kind of match: " + ", ".join(KINDS), text=True),
        Column("conflicting_labels_of", "its copy that carries another label", text=True),
        Column("conflicting_labels_score", "the copy's leak score (1 for the same bytes)"),
        Column("conflicting_labels", "a copy of an image with another label"),
    ),
    compute=_compute,
    types=(
        IssueType("leak", 1.0, _leak_reasons, doc="a held-out image that copies a train image"),
        IssueType(
            "conflicting_labels", 1.0, _conflict_reasons, doc="copies that carry different labels"
        ),
    ),
)


def kept_leaks(facts: pd.DataFrame) -> np.ndarray:
    """Rows whose decisions tag them ``keep:leak`` (the ``tags`` column apply_decisions writes):
    a person looked and kept the image, so the next run counts it as no leak anywhere."""
    if "tags" not in facts:
        return np.zeros(len(facts), bool)
    keep = KEEP_PREFIX + "leak"
    return facts["tags"].fillna("").astype(str).map(lambda t: keep in split_tags(t)).to_numpy(bool)


def dataset_leaks(
    root: str | Path,
    rows: pd.DataFrame,
    vectors: np.ndarray,
    manifest: pd.DataFrame,
    *,
    threshold: float = THRESHOLD,
    near_duplicate_limit: int = NEAR_DUPLICATE_LIMIT,
    checks: str | Path | None = None,
) -> pd.DataFrame:
    """The copies among the embedded images ``rows``, row for row with ``rows`` plus
    ``path``: :func:`near_duplicates` within each split (within the whole dataset without
    splits; above ``near_duplicate_limit`` images not searched: the findings then group
    identical perceptual hashes, as cleanvision does), and with splits ``split`` and
    :func:`find_leaks`' columns (a dataset without splits gets no split or leak columns). One
    thumbnail per image serves both searches. ``checks``: the file the pair checks are kept in
    across runs (:class:`~embedscope.findings.pair_store.PairStore`; a rerun matches only the
    pairs it has not met, with the same result). ``attrs["search"]`` holds what the searches
    cost, for ``metrics.json``: wall seconds and images searched of each, and the pair checks
    matched and reused (from earlier runs, or from this one where two images are one picture)."""
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"leak_threshold must be in (0, 1], not {threshold!r}")
    if isinstance(near_duplicate_limit, bool) or not isinstance(near_duplicate_limit, int):
        raise ValueError(
            f"near_duplicate_limit must be a whole number, not {near_duplicate_limit!r}"
        )
    facts = manifest.set_index("path").reindex(rows["path"]).reset_index()
    smalls: dict[str, Thumb | None] = {}
    tinies: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cost: dict[str, float | int | str] = {"images": len(facts)}
    store = PairStore(checks, CHECKS_DIGEST)
    found = pd.DataFrame(index=range(len(facts)))
    if "split" in manifest:
        splits = facts["split"].fillna("").astype(str)
        start = time.perf_counter()
        found = find_leaks(
            root,
            facts,
            vectors,
            splits,
            threshold=float(threshold),
            smalls=smalls,
            tinies=tinies,
            store=store,
        )
        cost["leak_search_seconds"] = round(time.perf_counter() - start, 2)
        cost["leak_images_searched"] = int(_held_out(splits.map(split_rank).to_numpy()).sum())
        found["leak"] &= ~kept_leaks(facts)  # a person kept it: no leak in leaks.csv or numbers
        found.insert(0, "split", splits.to_numpy())
    if len(facts) > near_duplicate_limit:
        cost["near_duplicate_search"] = (
            f"skipped: {len(facts):,} images, over near_duplicate_limit "
            f"({near_duplicate_limit:,}); near duplicates are identical perceptual hashes instead"
        )
    else:
        scopes = found["split"] if "split" in found else np.full(len(facts), "", object)
        start = time.perf_counter()
        near = near_duplicates(
            root,
            facts,
            vectors,
            scopes,
            threshold=float(threshold),
            smalls=smalls,
            tinies=tinies,
            store=store,
        )
        cost["near_duplicate_search_seconds"] = round(time.perf_counter() - start, 2)
        cost["near_duplicate_images_searched"] = len(facts)
        groups = near["near_duplicate_group"]
        cost["near_duplicate_groups"] = int(groups.max() + 1) if len(near) else 0
        found = pd.concat([found.reset_index(drop=True), near], axis=1)
    cost["pair_checks_matched"] = store.added
    cost["pair_checks_reused"] = store.found
    try:
        store.save()
    except OSError as exc:  # a cache: the report stands without it
        cost["pair_checks_not_kept"] = f"{type(exc).__name__}: {exc}"
    found.insert(0, "path", facts["path"].to_numpy())
    found.attrs["search"] = cost
    return found
