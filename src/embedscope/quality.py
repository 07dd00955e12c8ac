"""Image-quality findings of cleanvision's types: dark, light, blurry, low information,
grayscale, odd aspect ratio, odd size, and (where no copy search runs) near duplicates by
perceptual hash.

The per-image statistics (:func:`image_stats`) are taken on the image ingest already decodes
to check it (a JPEG at its reduced draft size), shrunk to at most :data:`STATS_SIDE` pixels a
side (exposure and colour on :data:`EXPOSURE_SIDE`), so a 12-megapixel photo costs a few
milliseconds more and a cached re-run decodes nothing: the statistics live in the manifest
beside the file's size and date. The dataset-level scores and flags (:func:`quality_findings`)
are calibrated or cleanvision 0.3.7's, with one change of direction: every ``<type>_score``
here is 0..1 with **higher = more of a problem** (cleanvision's scores are the other way
round), so that all the kit's scores sort the same way.

Those are the ``"cleanvision"`` thresholds (:data:`THRESHOLD_MODES`): they reproduce
cleanvision's flags exactly, blind spots included (its blur score keeps the unfiltered one-pixel
border of its 64-pixel copy, so a blurred photo with a bright border reads as sharp; a photo
washed 90% toward white is not light). Exactly needs cleanvision's own statistics
(:func:`cleanvision_stats`: the full-size decode, as it reads a file), which ingest takes only
when it is run with ``quality_thresholds="cleanvision"`` too; without them that mode is
refused (a stand-in from the reduced copy put one image in 300 on the other side of a
threshold). The default, ``"calibrated"``, scores blur on the 256-pixel copy and exposure,
contrast and colour on a 128-pixel one (:data:`CALIBRATED`), with thresholds chosen on degraded
copies of images kept apart from the ones the bench reports (``scripts/bench_quality.py``; the
grid and the numbers are in docs/findings.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter, ImageStat
from scipy.ndimage import uniform_filter1d

from embedscope.images import to_rgb

#: Longest side, in pixels, of the copy the statistics are taken on.
STATS_SIDE = 256
#: cleanvision's size for blur detection: the image is shrunk to this longest side first.
BLUR_SIDE = 64
#: Longest side, in pixels, of the copy exposure and colour are measured on.
EXPOSURE_SIDE = 128
#: cleanvision's own statistics (:func:`cleanvision_stats`), which ingest takes only when asked
#: for ``quality_thresholds="cleanvision"`` (a full-size decode): NaN otherwise, and then
#: :func:`quality_findings` refuses that mode rather than approximate it.
CLEANVISION_COLUMNS = (
    "cv_brightness_p99",
    "cv_brightness_p5",
    "cv_entropy",
    "cv_blurriness",
    "cv_gray_hist_std",
)
#: The statistics ingest stores per image (manifest columns, floats; ``phash`` an int64).
STAT_COLUMNS = (
    "brightness_p99",
    "colour_spread",
    "phash",
    "brightness_p1",
    "blur_effect",
    "chroma_p99",
    "max_channel_p99",
    "min_channel_p5",
    "stats_version",
    *CLEANVISION_COLUMNS,
)
#: Image modes whose pixels cleanvision cannot read (two channels): their ``cv_*`` statistics
#: stay NaN, and ingest does not try them again on every run.
CLEANVISION_UNREAD_MODES = ("LA", "La", "PA")
#: Raised whenever a statistic's definition changes: ingest inspects again every file whose
#: manifest row holds statistics of another version (rows from before it existed included).
#: 2: ``brightness_p1``, ``blur_effect``, ``chroma_p99``, ``max_channel_p99`` and
#: ``min_channel_p5`` for the calibrated thresholds; 3: channel percentiles from histograms;
#: 4: exposure and colour on the :data:`EXPOSURE_SIDE` copy, cleanvision's stand-ins gone.
STATS_VERSION = 4
#: The two sets of quality thresholds :func:`quality_findings` knows.
THRESHOLD_MODES = ("calibrated", "cleanvision")
#: The calibrated thresholds (flag when a score is above them; scores 0..1, higher = worse),
#: chosen by ``scripts/bench_quality.py --calibrate`` on degraded copies of calibration images:
#: halfway between the 97th percentile of the originals (JPEG- and noise-damaged copies
#: included) and the 5th percentile of the degraded copies where the two do not overlap, else
#: at that 97th percentile.
#:
#: - blurry: Crete et al.'s blur effect (2007) of the grey copy, borders left out;
#: - dark: 1 - the 99th percentile of each pixel's largest channel (so a saturated red or
#:   blue, which perceived brightness calls dim, is not dark);
#: - light: the 5th percentile of each pixel's smallest channel: washed out toward white (a
#:   saturated yellow is not light);
#: - low_information: 1 - the contrast (99th - 1st percentile of brightness);
#: - grayscale: 1 - the 99th percentile of the largest channel difference / 255.
CALIBRATED = {
    "blurry": 0.42,
    "dark": 0.30,
    "light": 0.49,
    "low_information": 0.69,
    "grayscale": 0.89,
}
#: Width of the box filter of the blur effect (Crete et al.'s value).
BLUR_EFFECT_WIDTH = 11
#: The smallest side the blur effect is measured on (4 box widths).
BLUR_EFFECT_MIN_SIDE = 4 * BLUR_EFFECT_WIDTH
#: cleanvision 0.3.7's default thresholds, on its own scores (low = issue).
THRESHOLDS = {
    "dark": 0.32,
    "light": 0.05,
    "odd_aspect_ratio": 0.35,
    "low_information": 0.3,
    "blurry": 0.29,
    "odd_size": 0.5,
}
#: Largest difference between colour channels, in 0..255 grey levels, that still counts as grey
#: (JPEG chroma noise on a grey photo reaches a few levels).
GREY_TOLERANCE = 8
#: The quality issue types, in the order findings list them.
QUALITY_TYPES = (
    "dark",
    "light",
    "blurry",
    "low_information",
    "grayscale",
    "odd_aspect_ratio",
    "odd_size",
    "near_duplicate",
)


def stats_copy(im: Image.Image) -> Image.Image:
    """What the statistics are taken on: ``im`` in RGB (any mode, transparency on white: the
    picture the model is shown), shrunk to at most :data:`STATS_SIDE` a side; an image that is
    that already is returned as it is, so ingest takes its thumbnail cell from the same copy."""
    rgb = to_rgb(im)
    if max(rgb.size) <= STATS_SIDE:
        return rgb
    return _shrunk(rgb, STATS_SIDE, reducing_gap=2.0)  # a box reduction first: a third faster


def image_stats(im: Image.Image) -> dict[str, float | int]:
    """The statistics of one decoded image that the calibrated quality scores and the near
    duplicates need, from its :func:`stats_copy` (``im``, which ingest makes anyway for the
    thumbnail cell): blur and the perceptual hash at that size, exposure and colour on a copy
    of at most :data:`EXPOSURE_SIDE` a side (a box average: a quarter of the pixels, and
    percentiles of 1% and 99% barely move)."""
    rgb = stats_copy(im)
    factor = max(rgb.size) // EXPOSURE_SIDE
    small = rgb.reduce(factor) if factor > 1 else rgb
    channels = np.asarray(small)
    red, green, blue = channels[..., 0], channels[..., 1], channels[..., 2]
    # cleanvision's perceived brightness of each pixel, 0..1, from per-level tables
    bright = np.sqrt(_RED2[red] + _GREEN2[green] + _BLUE2[blue]) / 255
    p1, p99 = np.percentile(bright, [1, 99])
    top = np.maximum(np.maximum(red, green), blue)  # (n, 3).max(axis=2) is 10x slower
    bottom = np.minimum(np.minimum(red, green), blue)
    chroma = top - bottom  # each pixel's largest difference between two channels
    grey = rgb.convert("L")  # the blur effect's and the perceptual hash's
    return {
        "brightness_p99": float(p99),
        "colour_spread": float(chroma.max()),
        "phash": phash(grey),
        "brightness_p1": float(p1),
        "blur_effect": blur_effect(np.asarray(grey, dtype=np.float32)),
        "chroma_p99": float(_level_percentile(chroma, 99)),
        "max_channel_p99": _level_percentile(top, 99) / 255,
        "min_channel_p5": _level_percentile(bottom, 5) / 255,
        "stats_version": STATS_VERSION,
    }


#: cleanvision's brightness weights applied to each squared 8-bit level (float32 tables).
_RED2, _GREEN2, _BLUE2 = (
    (w * np.arange(256, dtype=np.float64) ** 2).astype(np.float32) for w in (0.241, 0.691, 0.068)
)


def cleanvision_stats(im: Image.Image) -> dict[str, float]:
    """cleanvision 0.3.7's statistics for dark, light, low information and blurry, taken as it
    takes them, so that its flags come out exactly: on the whole decoded file in the mode it is
    stored in (no draft, no RGB conversion, no EXIF turn; a 2-D image's brightness is its level
    / 255), brightness percentiles in float64 on integer channels, the edge variance by
    ``ImageStat``. The reduced copy's statistics move a pixel's worth across its thresholds for
    about one image in 300. A mode cleanvision itself cannot read (``LA``) gives NaN."""
    out = dict.fromkeys(CLEANVISION_COLUMNS, float("nan"))
    arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        r, g, b = (arr[..., i].astype(np.int32) for i in range(3))  # 255**2 fits: a third of int64
        bright = np.sqrt(0.241 * (r * r) + 0.691 * (g * g) + 0.068 * (b * b)) / 255
    elif arr.ndim == 2:
        bright = arr / 255.0
    else:
        return out
    p5, p99 = np.percentile(bright, [5, 99])
    small = _shrunk(im, BLUR_SIDE) if max(im.size) > BLUR_SIDE else im
    grey = small.convert("L")
    edges = grey.filter(ImageFilter.FIND_EDGES)
    return {
        "cv_brightness_p99": float(p99),
        "cv_brightness_p5": float(p5),
        "cv_entropy": float(im.entropy()),
        "cv_blurriness": float(np.sqrt(ImageStat.Stat(edges).var[0])),
        "cv_gray_hist_std": float(np.std(grey.histogram())),
    }


def _level_percentile(levels: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of 8-bit levels (the lowest level with ``q``% at or below it),
    from their histogram: no sort."""
    cumulative = np.cumsum(np.bincount(levels.ravel(), minlength=256))
    return float(np.searchsorted(cumulative, q / 100 * cumulative[-1]))


def blur_effect(grey: np.ndarray, width: int = BLUR_EFFECT_WIDTH) -> float:
    """Crete et al.'s no-reference blur effect (2007), 0 (sharp) .. 1 (blurry): how little of
    the variation between neighbouring pixels a box blur of ``width`` pixels removes (a blurred
    image has little left to lose), the larger of rows and columns. The ``width`` pixels along
    each edge are left out, so a border (a frame, the edge of a resized copy) reads as nothing.
    A flat image is 1; one under :data:`BLUR_EFFECT_MIN_SIDE` pixels a side is not measured
    (NaN: never flagged), since too few pixels tell blur from a small picture."""
    if min(grey.shape) < BLUR_EFFECT_MIN_SIDE:
        return float("nan")
    worst = 0.0
    for axis, image in ((0, grey), (1, grey.T)):  # along rows of the transposed = columns
        smooth = uniform_filter1d(grey, width, axis=axis, mode="reflect")
        smooth = smooth if axis == 0 else smooth.T
        inner = slice(width, -width)
        sharp = np.abs(image[width + 1 : -width] - image[width : -width - 1])[:, inner]
        kept = np.abs(smooth[width + 1 : -width] - smooth[width : -width - 1])[:, inner]
        total = float(sharp.sum())
        if total <= 0:
            return 1.0
        # what the box blur leaves of each step, never more than the step itself
        worst = max(worst, float(np.minimum(sharp, kept).sum()) / total)
    return worst


def _shrunk(im: Image.Image, side: int, reducing_gap: float | None = None) -> Image.Image:
    """``im`` resized so its longest side is ``side``, as cleanvision resizes for blur
    (``reducing_gap``, Pillow's box reduction first: faster, for the kit's own copy only)."""
    ratio = max(im.size) / side
    size = (max(int(im.width // ratio), 1), max(int(im.height // ratio), 1))
    return im.resize(size, reducing_gap=reducing_gap)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    return np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))


_DCT32 = _dct_matrix(32)


def phash(im: Image.Image) -> int:
    """The 64-bit perceptual hash cleanvision uses for near duplicates (imagehash's ``phash``,
    hash size 8): greyscale 32x32, 2-D DCT, the 8x8 lowest frequencies against their median."""
    pixels = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">i8")[0])


def quality_findings(stats: pd.DataFrame, thresholds: str = "calibrated") -> pd.DataFrame:
    """Per-image ``<type>_score`` (0..1, higher = worse) and ``<type>`` flags for every quality
    type, from the :data:`STAT_COLUMNS` plus ``width``, ``height`` and ``mode`` (the file's
    image mode, which cleanvision's grayscale reads; without it, grey by colour spread) of each
    image, with the ``thresholds`` of :data:`THRESHOLD_MODES` (``"cleanvision"``: its flags
    exactly, from the statistics ingest takes in that mode; refused without them).

    Rows without statistics (an image ingest has not inspected since this version) get NaN
    scores and no flags."""
    if thresholds not in THRESHOLD_MODES:
        raise ValueError(
            f"quality_thresholds must be one of {', '.join(THRESHOLD_MODES)}, not {thresholds!r}"
        )
    stats = stats.reindex(columns=[*stats.columns, *(c for c in STAT_COLUMNS if c not in stats)])
    if thresholds == "calibrated":
        scored = {
            name: (score, score > CALIBRATED[name])
            for name, score in calibrated_scores(stats).items()
        }
    else:
        scored = cleanvision_scores(stats)
    width, height = stats["width"].astype(float), stats["height"].astype(float)
    aspect = np.minimum(width / height, height / width)
    scored["odd_aspect_ratio"] = (1 - aspect, aspect < THRESHOLDS["odd_aspect_ratio"])
    size, odd = _size_scores(np.sqrt(width * height))
    scored["odd_size"] = (1 - size, odd)
    out = pd.DataFrame(index=stats.index)
    for name in QUALITY_TYPES[:-1]:
        score, flag = scored[name]
        out[f"{name}_score"] = np.asarray(score, np.float32)
        out[name] = pd.Series(flag, index=stats.index).fillna(False).astype(bool)
    groups = near_duplicate_groups(stats["phash"])
    out["near_duplicate_group"] = groups
    out["near_duplicate_score"] = (groups >= 0).astype(np.float32)
    out["near_duplicate"] = groups >= 0
    return out


def calibrated_scores(stats: pd.DataFrame) -> dict[str, pd.Series]:
    """The calibrated scores (0..1, higher = worse) of the types :data:`CALIBRATED` flags; a
    manifest without the newer statistics gives NaN (no flag)."""
    stats = stats.reindex(columns=[*stats.columns, *(c for c in STAT_COLUMNS if c not in stats)])
    return {
        "blurry": stats["blur_effect"],
        "dark": 1 - stats["max_channel_p99"],
        "light": stats["min_channel_p5"],
        "low_information": 1 - (stats["brightness_p99"] - stats["brightness_p1"]),
        "grayscale": 1 - np.minimum(stats["chroma_p99"] / 255, 1),
    }


def cleanvision_scores(stats: pd.DataFrame) -> dict[str, tuple[pd.Series, pd.Series]]:
    """``(score, flag)`` of dark, light, blurry, low information and grayscale as cleanvision
    0.3.7 computes them with its default thresholds (its scores turned round), blind spots
    included, from its own statistics (:data:`CLEANVISION_COLUMNS`). Without them (ingest ran
    in the calibrated mode) this is refused: a stand-in would be cleanvision only nearly."""
    if stats.reindex(columns=CLEANVISION_COLUMNS).isna().all().all() and len(stats):
        raise ValueError(
            'quality_thresholds="cleanvision" needs cleanvision\'s own statistics, which ingest '
            'takes only in that mode: run 01_download with quality_thresholds="cleanvision"'
        )
    dark = stats["cv_brightness_p99"]
    light = 1 - stats["cv_brightness_p5"]
    low_info = np.minimum(0.1 * stats["cv_entropy"], 1.0)
    blur = 1 - np.exp(-0.01 * stats["cv_blurriness"])
    std = 1 - np.exp(-0.01 * stats["cv_gray_hist_std"])
    blur = np.minimum(blur + np.where(std <= 0.18, 0.0, std), 1.0)
    out = {
        name: (1 - theirs, theirs < THRESHOLDS[name])
        for name, theirs in (
            ("dark", dark),
            ("light", light),
            ("blurry", blur),
            ("low_information", low_info),
        )
    }
    spread = stats["colour_spread"]
    # cleanvision's grayscale: the file is stored in mode L, nothing else
    grey = stats["mode"] == "L" if "mode" in stats else spread <= GREY_TOLERANCE
    out["grayscale"] = (1 - np.minimum(spread / 255, 1), grey)
    return out


def _size_scores(size: pd.Series, iqr_factor: float = 3.0) -> tuple[pd.Series, pd.Series]:
    """cleanvision's odd-size score and flag: distance of sqrt(area) from the middle of the
    ``iqr_factor`` x IQR fences, normalised by their width (1 in the middle, 0 past a fence;
    flagged below 0.5). When every image but a few has one size there are no fences: the
    distance is normalised by that size and any other size is flagged, by how far it is."""
    known = size.dropna()
    if known.empty:
        return pd.Series(np.nan, index=size.index), pd.Series(False, index=size.index)
    q1, q3 = np.percentile(known, [25, 75])
    low, high = q1 - iqr_factor * (q3 - q1), q3 + iqr_factor * (q3 - q1)
    middle, gap = (low + high) / 2, high - low
    score = 1 - np.clip(np.abs(size - middle) / (gap if gap > 0 else middle), 0, 1)
    return score, (score < (THRESHOLDS["odd_size"] if gap > 0 else 1.0)).fillna(False)


def near_duplicate_groups(hashes: pd.Series, within: pd.Series | None = None) -> np.ndarray:
    """Group number per image (-1: none) of images sharing one perceptual hash, as cleanvision
    groups near duplicates; images without a hash are never grouped. ``within``: each image's
    split, row for row: images group only within one (a copy across splits is a leak)."""
    valid = hashes.notna().to_numpy()
    values = hashes.fillna(0).astype("int64").to_numpy()
    groups = np.full(len(values), -1)
    if not valid.any():
        return groups
    scope = (
        np.zeros(len(values), np.int64)
        if within is None
        else pd.factorize(within.fillna("").astype(str).to_numpy())[0]
    )
    keys = np.stack([scope[valid], values[valid]], axis=1)
    codes, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)[1:]
    codes = codes.reshape(-1)
    shared = counts[codes] > 1
    _, numbered = np.unique(codes[shared], return_inverse=True)
    at = np.flatnonzero(valid)
    groups[at[shared]] = numbered
    return groups
