"""Leak findings: held-out images (val, test) that copy an image of an earlier split.

A leak is searched in two steps (chosen by measurement, ``make bench`` section ``leaks``, see
docs/findings.md). Candidates: the :data:`CANDIDATES` nearest earlier-split images of each
held-out image by cosine on the kit's own vectors (a network sees through crops, mirrors and
colour changes), joined with as many by a tiny grey picture, mirrored or not (it sees through
heavy downscales and re-encodes); both searches go through :func:`embedscope.knn.top_k`, the
kit's one kNN search. Verification: each candidate pair is aligned on small thumbnails at the
copy's own detail (never upsampled), over mirror, position and every crop size down to
:data:`SMALLEST_CROP`, and scored by the colour correlation there (brightness and contrast
invariant); the score is then a ratio test against the runner-up candidate
(:func:`leak_score`). Same bytes are a leak without looking. A pair at or above ``threshold``
is a leak.

The splits come from the manifest's ``split`` column (:mod:`embedscope.ingest`): a dataset
without one gets no leak columns at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from embedscope.decisions import split_tags
from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.images import load_rgb
from embedscope.knn import top_k
from embedscope.layout import os_path, write_atomic
from embedscope.vocabulary import KEEP_PREFIX, UNLABELLED

#: The split every held-out split is compared with, then the order in which later splits are
#: compared with earlier ones (a test image copying a val image leaks too).
SPLIT_ORDER = ("train", "val", "test")
#: Default ``leak_threshold`` (chosen by the ``leaks`` bench on its calibration halves, apart
#: from the halves it reports): the :func:`leak_score` a candidate pair must reach.
THRESHOLD = 0.78
#: Exponent of the ambiguity in :func:`leak_score` (fitted with the threshold on the
#: calibration halves): how much a second, nearly as good match lowers the score.
AMBIGUITY = 0.75
#: Earlier-split images proposed per held-out image by each search: by cosine on the kit's
#: vectors (finds crops, mirrors, colour changes) and by a TINY x TINY grey picture, mirrored
#: or not (finds heavy downscales and re-encodes a network sees as a different picture).
CANDIDATES = 6
TINY = 8
#: Longest side of the RGB thumbnail kept per image, and longest side of the copy when compared.
THUMB = 48
WORK = 36
#: Smallest crop sought: a copy that shows this share of its source's side, or more.
SMALLEST_CROP = 0.78
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


def split_rank(split: str) -> int:
    """Where a split comes in :data:`SPLIT_ORDER` (an unknown held-out split after test; -1
    for no split: such an image is neither searched nor a source)."""
    if not split:
        return -1
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


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


def _inside(a: Thumb, b: Thumb) -> tuple[float, np.ndarray, np.ndarray, bool, float]:
    """``a`` sought as a region of ``b`` (a crop of :data:`SMALLEST_CROP` of the side or more,
    anywhere, mirrored or not), at ``a``'s own detail: ``b`` is scaled so that the region is
    as many pixels as ``a`` at every whole-pixel size. Returns the best grey correlation, the
    aligned region of ``b`` and ``a`` (RGB, float), whether mirrored, and the region's share."""
    (pa, (aw, ah)), (pb, (bw, bh)) = a, b
    f = min(1.0, WORK / max(aw, ah), bw / aw, bh / ah)  # compared pixels per native pixel of a
    cw, ch = max(2, round(aw * f)), max(2, round(ah * f))
    template = _resized(pa, cw, ch)
    grey = template.mean(axis=2)
    pair = _standard(np.stack([grey.ravel(), grey[:, ::-1].ravel()]))
    best: tuple[float, np.ndarray, np.ndarray, bool, float] = (-2.0, template, template, False, 1)
    for width in range(cw, round(cw / SMALLEST_CROP) + 1):
        height = max(ch, round(bh * width / bw))
        big = _resized(pb, width, height)
        windows = np.lib.stride_tricks.sliding_window_view(big.mean(axis=2), (ch, cw))
        scores = _standard(windows.reshape(-1, ch * cw)) @ pair.T
        at = np.unravel_index(int(scores.argmax()), scores.shape)
        if scores[at] > best[0] + 1e-6:
            y, x = divmod(int(at[0]), width - cw + 1)
            mirrored = bool(at[1])
            seen = template[:, ::-1] if mirrored else template
            best = (float(scores[at]), big[y : y + ch, x : x + cw], seen, mirrored, cw / width)
    return best


def match(copy: Thumb, source: Thumb) -> tuple[float, str]:
    """How surely ``copy`` copies ``source`` (:func:`small_copy`'s thumbnails), -1..1, and the
    kind of match its best alignment says: either image may be the crop of the other. The
    alignment is found on grey; the score is the colour correlation there (a red and a blue
    heart of the same shape are not copies)."""
    one, other = _inside(copy, source), _inside(source, copy)
    _, region, seen, mirrored, share = max(one, other, key=lambda r: r[0])
    u, v = _standard(np.stack([region.ravel(), seen.ravel()]))
    score = float(u @ v)
    if mirrored:
        kind = "mirrored"
    elif share < 0.97:
        kind = "cropped"
    else:
        contrast = abs(float(seen.std() / max(region.std(), 1e-6)) - 1) > 0.1
        shift = abs(float(seen.mean() - region.mean())) > 8 or contrast
        kind = "brightness/contrast" if shift else "resized"
    return score, kind


def leak_score(best: float, second: float) -> float:
    """The pair's score from its correlation ``best`` and the next candidate's ``second``:
    ``1 - (1 - best) / (1 - second) ** AMBIGUITY``. A copy matches its source far better than
    any other image (a ratio test: its distance is small next to the runner-up's); a
    look-alike of a uniform class (trousers) matches several about as well."""
    second = float(np.clip(second, 0.0, 1.0 - 1e-3))
    return float(np.clip(1.0 - (1.0 - best) / (1.0 - second) ** AMBIGUITY, 0.0, 1.0))


def _candidates(
    x: np.ndarray,
    pictures: tuple[np.ndarray, np.ndarray],
    held: np.ndarray,
    earlier: np.ndarray,
    k: int,
) -> list[list[int]]:
    """Per held-out row, its candidate rows of ``earlier`` (cosine first, then the tiny
    picture's, each mirrored or not), without repeats; all through the kit's one kNN search."""
    plain, mirror = pictures
    cosine = top_k(x[held], x[earlier], k)[0]
    # the tiny picture mirrored or not: the k best of both lists together
    ia, sa = top_k(plain[held], plain[earlier], k)
    ib, sb = top_k(mirror[held], plain[earlier], k)
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
) -> pd.DataFrame:
    """Per embedded image (``rows``: path, label, sha256, sizes optional; ``vectors`` row for
    row; ``splits`` each row's split): ``leak_of`` (the earlier-split image it copies most
    surely, empty for none), ``source_split``, ``leak_score`` (0..1), ``leak`` and
    ``leak_kind``. Train images are never flagged; a val image is searched among train, a test
    image among train and val. ``smalls`` caches thumbnails by path across calls."""
    splits = np.asarray([str(s) for s in splits], dtype=object)
    n = len(rows)
    rank = np.array([split_rank(s) for s in splits])
    out = pd.DataFrame(
        {
            "leak_of": np.full(n, "", object),
            "source_split": np.full(n, "", object),
            "leak_score": np.zeros(n, np.float32),
            "leak": np.zeros(n, bool),
            "leak_kind": np.full(n, "", object),
        }
    )
    if n == 0 or not (rank > 0).any() or not (rank == 0).any():
        return out
    paths = rows["path"].astype(str).to_numpy(dtype=object)
    sha = rows["sha256"].astype(str).to_numpy(dtype=object) if "sha256" in rows else paths
    smalls = {} if smalls is None else smalls
    for p in paths[rank >= 0]:
        if p not in smalls:
            smalls[p] = load_small(root, p)
    flat = np.zeros(TINY * TINY, np.float32)
    pictures = [tiny(smalls[p]) if smalls.get(p) is not None else (flat, flat) for p in paths]
    plain = np.stack([p[0] for p in pictures])
    mirror = np.stack([p[1] for p in pictures])

    by_sha: dict[str, int] = {}
    for i in np.flatnonzero(rank >= 0)[np.argsort(rank[rank >= 0], kind="stable")]:
        by_sha.setdefault(sha[i], int(i))
    for r in sorted(set(rank[rank > 0])):
        held = np.flatnonzero(rank == r)
        earlier = np.flatnonzero((rank >= 0) & (rank < r))
        near = _candidates(vectors, (plain, mirror), held, earlier, min(candidates, len(earlier)))
        for row, i in enumerate(held):
            found = (0.0, -1, "")
            same = by_sha.get(sha[i], i)
            mine = smalls.get(paths[i])
            if same != i and rank[same] < r:
                found = (1.0, same, "same bytes")
            elif mine is not None:
                tried = [
                    (*match(mine, smalls[paths[j]]), int(j))
                    for j in near[row]
                    if smalls.get(paths[j]) is not None
                ]
                if tried:
                    tried.sort(key=lambda t: -t[0])
                    found = (
                        leak_score(tried[0][0], _runner_up(tried, smalls, paths)),
                        tried[0][2],
                        tried[0][1],
                    )
            score, j, kind = found
            if j < 0:
                continue
            out.loc[i, ["leak_score", "leak_kind"]] = [np.float32(max(score, 0.0)), kind]
            if score >= threshold:
                out.loc[i, ["leak_of", "source_split", "leak"]] = [paths[j], splits[j], True]
            if kind != "same bytes" and score >= threshold:
                out.loc[i, "leak_kind"] = _refined(kind, rows, i, j)
    return out


def _runner_up(tried: list[tuple[float, str, int]], smalls: dict, paths: np.ndarray) -> float:
    """The best correlation among the other candidates that are not copies of the best one
    themselves (a source with its own near duplicate in train stays unambiguous); 0 for none.
    At most two others are checked against the best (each check costs a match)."""
    best = smalls[paths[tried[0][2]]]
    for checked, (score, _, j) in enumerate(tried[1:]):
        if checked >= 2 or match(smalls[paths[j]], best)[0] < tried[0][0]:
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
) -> pd.DataFrame | None:
    """:func:`find_leaks` of the embedded images ``rows`` with the manifest's splits and
    sizes, row for row with ``rows`` plus ``path`` and ``split``; None for a dataset without
    splits (it then gets no split or leak columns)."""
    if "split" not in manifest:
        return None
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"leak_threshold must be in (0, 1], not {threshold!r}")
    facts = manifest.set_index("path").reindex(rows["path"]).reset_index()
    splits = facts["split"].fillna("").astype(str)
    found = find_leaks(root, facts, vectors, splits, threshold=float(threshold))
    found["leak"] &= ~kept_leaks(facts)  # a person kept it: no leak in leaks.csv or the numbers
    found.insert(0, "path", facts["path"].to_numpy())
    found.insert(1, "split", splits.to_numpy())
    return found
