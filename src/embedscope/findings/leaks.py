"""Leak findings: held-out images (val, test) that copy an image of an earlier split.

A leak is searched in two steps (chosen by measurement, ``make bench`` section ``leaks``): the
candidates of each held-out image are its :data:`CANDIDATES` nearest earlier-split images by
cosine on the kit's own vectors (for almost every copy its source is the nearest: ranking
works where no cosine threshold does), and each candidate pair is then verified on small grey
copies of the two images: the best normalised cross-correlation (brightness and contrast
invariant) over the copy mirrored or not, and placed at every position of the other at a few
scales (a crop, centred or not). Same bytes are a leak without looking. The score is that
correlation; a pair at or above ``threshold`` is a leak.

The splits come from the manifest's ``split`` column (:mod:`embedscope.ingest`): a dataset
without one gets no leak columns at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.images import load_rgb
from embedscope.knn import normalize
from embedscope.layout import os_path, write_atomic
from embedscope.vocabulary import UNLABELLED

#: The split every held-out split is compared with, then the order in which later splits are
#: compared with earlier ones (a test image copying a val image leaks too).
SPLIT_ORDER = ("train", "val", "test")
#: Default ``leak_threshold``: the normalised cross-correlation a candidate pair must reach
#: (chosen by the ``leaks`` bench on its calibration sets, apart from the sets it reports).
THRESHOLD = 0.92
#: Weight of the ambiguity (how nearly the next candidate matches as well) in the score.
AMBIGUITY = 0.1
#: Nearest earlier-split images by cosine verified per held-out image.
CANDIDATES = 5
#: Side of the small grey copy each image is compared on, and the scales at which one image is
#: slid over the other (a crop to 85 % of the side is found at 0.85).
SIDE = 48
SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
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


def split_rank(split: str) -> int:
    """Where a split comes in :data:`SPLIT_ORDER` (an unknown held-out split after test; -1
    for no split: such an image is neither searched nor a source)."""
    if not split:
        return -1
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)


def small_copy(image: Image.Image) -> np.ndarray:
    """The grey ``SIDE`` x ``SIDE`` float32 copy a pair is compared on (the whole image,
    squeezed to a square: a crop of it keeps its place and proportions on that square)."""
    grey = image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX)
    return np.asarray(grey, np.float32)


def load_small(root: str | Path, rel: str) -> tuple[np.ndarray, int] | None:
    """:func:`small_copy` of a dataset file (JPEGs decoded at a reduced draft size) and its
    shorter native side; None for a file that cannot be read now (it was ok at ingest: it
    then simply finds no leak)."""
    try:
        image = load_rgb(os_path(root, rel), draft=(4 * SIDE, 4 * SIDE))
    except (OSError, ValueError):
        return None
    return small_copy(image), min(image.size)


def _standard(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (flattened patches) at zero mean and unit norm (flat: all zeros)."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-3 * np.sqrt(x.shape[-1]), x / np.maximum(norm, 1e-12), 0.0)


def _resized(x: np.ndarray, side: int) -> np.ndarray:
    if side == len(x):
        return x
    return np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.BOX), np.float32)


def _slide(big: np.ndarray, small: np.ndarray) -> tuple[float, bool, float]:
    """The best correlation of ``small`` (and its mirror) over every placement in ``big``
    at each of :data:`SCALES`: (score, mirrored, scale)."""
    best = (-1.0, False, 1.0)
    side = len(big)
    for scale in SCALES:
        s = round(side * scale)
        template = _resized(small, s)
        pair = _standard(np.stack([template.ravel(), template[:, ::-1].ravel()]))
        windows = np.lib.stride_tricks.sliding_window_view(big, (s, s)).reshape(-1, s * s)
        scores = _standard(windows) @ pair.T
        at = np.unravel_index(int(scores.argmax()), scores.shape)
        value = float(scores[at])
        if value > best[0] + 1e-6:
            best = (value, bool(at[1]), scale)
    return best


def match(copy: tuple[np.ndarray, int], source: tuple[np.ndarray, int]) -> tuple[float, str]:
    """How surely ``copy`` copies ``source`` (:func:`load_small`'s pairs), -1..1, and the kind
    of match its best alignment says: either image may be the crop of the other. Both are
    compared at the detail the smaller one holds (a 14-pixel copy of a 28-pixel image is
    compared at 14 pixels: upsampled it would differ from its own source by blur)."""
    side = max(12, min(SIDE, copy[1], source[1]))
    a, b = _resized(copy[0], side), _resized(source[0], side)
    one = _slide(b, a)
    other = _slide(a, b)
    score, mirrored, scale = max(one, other, key=lambda r: r[0])
    if mirrored:
        kind = "mirrored"
    elif scale < 1.0:
        kind = "cropped"
    else:
        ra, rb = a.ravel(), b.ravel()
        contrast = abs(float(ra.std() / max(rb.std(), 1e-6)) - 1) > 0.1
        shift = abs(float(ra.mean() - rb.mean())) > 8 or contrast
        kind = "brightness/contrast" if shift else "resized"
    return score, kind


def leak_score(best: float, second: float) -> float:
    """The pair's score from its correlation ``best`` and the next candidate's ``second``:
    the correlation less :data:`AMBIGUITY` times how nearly the next earlier image matches as
    well (``(1 - best) / (1 - second)``, at most 1). A copy matches its source far better than
    any other image; a look-alike of a uniform class matches several about as well."""
    ratio = min(1.0, (1.0 - best) / max(1.0 - second, 1e-3))
    return float(np.clip(best - AMBIGUITY * ratio, 0.0, 1.0))


def find_leaks(
    root: str | Path,
    rows: pd.DataFrame,
    vectors: np.ndarray,
    splits: Sequence[str],
    *,
    threshold: float = THRESHOLD,
    candidates: int = CANDIDATES,
    smalls: dict[str, tuple[np.ndarray, int] | None] | None = None,
) -> pd.DataFrame:
    """Per embedded image (``rows``: path, label, sha256, sizes optional; ``vectors`` row for
    row; ``splits`` each row's split): ``leak_of`` (the earlier-split image it copies most
    surely, empty for none), ``source_split``, ``leak_score`` (0..1), ``leak`` and
    ``leak_kind``. Train images are never flagged; a val image is searched among train, a test
    image among train and val. ``smalls`` caches small copies by path across calls."""
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
    x = normalize(vectors)
    smalls = {} if smalls is None else smalls

    def small(i: int) -> tuple[np.ndarray, int] | None:
        if paths[i] not in smalls:
            smalls[paths[i]] = load_small(root, paths[i])
        return smalls[paths[i]]

    by_sha: dict[str, int] = {}
    for i in np.flatnonzero(rank >= 0)[np.argsort(rank[rank >= 0], kind="stable")]:
        by_sha.setdefault(sha[i], int(i))
    for r in sorted(set(rank[rank > 0])):
        held = np.flatnonzero(rank == r)
        earlier = np.flatnonzero((rank >= 0) & (rank < r))
        k = min(candidates, len(earlier))
        sims = x[held] @ x[earlier].T
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, i in enumerate(held):
            found = (0.0, -1, "")
            same = by_sha.get(sha[i], i)
            if same != i and rank[same] < r:
                found = (1.0, same, "same bytes")
            else:
                mine = small(i)
                if mine is None:
                    continue
                order = near[row][np.argsort(-sims[row, near[row]])]
                tried = []
                for j in earlier[order]:
                    theirs = small(int(j))
                    if theirs is not None:
                        tried.append((*match(mine, theirs), int(j)))
                if tried:
                    tried.sort(key=lambda t: -t[0])
                    second = tried[1][0] if len(tried) > 1 else 0.0
                    found = (leak_score(tried[0][0], second), tried[0][2], tried[0][1])
            score, j, kind = found
            if j < 0:
                continue
            out.loc[i, ["leak_score", "leak_kind"]] = [np.float32(max(score, 0.0)), kind]
            if score >= threshold:
                out.loc[i, ["leak_of", "source_split", "leak"]] = [paths[j], splits[j], True]
            if kind != "same bytes" and score >= threshold:
                out.loc[i, "leak_kind"] = _refined(kind, rows, i, j)
    return out


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
        Column("leak_score", "0..1: pixel match with the candidate, less its ambiguity"),
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
    found.insert(0, "path", facts["path"].to_numpy())
    found.insert(1, "split", splits.to_numpy())
    return found
