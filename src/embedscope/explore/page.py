"""``explorer.html``: one offline page that survives sharing.

The page's own ``scatter.js`` (a software point renderer: a million points orbit without a GPU),
``explorer.js`` and ``explorer.css`` are inlined at write time; per-point numbers travel as
base64 typed arrays inside the page's JSON, the thumbnails as a few sprite sheets, so hovering a
point shows its image without a server or a live kernel. Above ``inline_limit`` points the page
gets a sibling folder ``<page stem>-files/`` of files a ``file://`` page may load (``<script>``
chunks of neighbour lists, thumbnail sheets), so the page itself stays small enough to open
quickly; the two travel together. Every label and path goes in as text, never HTML. The page
also selects (box and lasso in 2D and 3D, or by rule), shows the selection as a gallery,
records decisions (relabel, tag, drop; kept in the browser under :func:`report_key`) and
downloads them as ``decisions.csv`` for the next run. Its review queue walks the flagged
images (the ``issues`` column) one at a time, with keys. The rules of decisions and of the
queue come from :mod:`embedscope.decisions`, computed there or handed to the script as data,
never restated.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import math
import re
import secrets
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from embedscope.decisions import (
    COLUMNS,
    ISSUES,
    REASON,
    TAG_SEPARATOR,
    ReviewQueue,
    offered,
    own_labels,
    page_rules,
    split_tags,
    validate_decisions,
)
from embedscope.explore.atlas import (
    ATLAS_COLS,
    LARGE_CELL,
    LARGE_COLS,
    Thumbnails,
    large_sheets,
    thumbnail_sheets,
)
from embedscope.explore.palette import (
    MISSING_COLOUR,
    PALETTE,
    by_cluster,
    class_colour,
    class_order,
    cluster_colours,
)
from embedscope.layout import write_atomic
from embedscope.vocabulary import SUGGESTED_LABEL, SUGGESTED_SHARE, UNLABELLED

if TYPE_CHECKING:
    from IPython.display import HTML

#: Columns that are the map itself, never offered in "colour by".
POSITION_COLUMNS = ("x", "y", "z", "label", "path")
#: Bookkeeping columns other stages carry along that are meaningless as colours (the point
#: table's ``neighbors`` travel as the click panel's lists instead).
IGNORED_COLUMNS = ("row", "sha256", "neighbors")
#: Per-point suggestion from analyse (neighbours' weighted majority label and its share): shown
#: in the gallery and hover card and accepted as a decision, not offered as a colour.
SUGGESTION_COLUMNS = (SUGGESTED_LABEL, SUGGESTED_SHARE)
#: Per-point findings text: shown in the review queue, not offered as a colour; and what the
#: queue shows beside an image (a leak's source, a near-duplicate group), as rows instead.
FINDING_TEXT_COLUMNS = (ISSUES, REASON, "leak_of", "near_duplicate_group")
#: A non-numeric (or small-integer) column with more distinct values than this is not offered.
MAX_CATEGORIES = 40
#: Neighbours shown per point: a 4 x 3 grid stays readable.
MAX_NEIGHBORS = 12
#: Up to this many points the page is one file; above, it has a sibling ``<stem>-files/`` folder
#: (thumbnail sheets, neighbour chunks).
INLINE_LIMIT = 20_000
#: Characters of a page that hold its markup, style and the head of its data (title, folder,
#: count): what :func:`show_inline` reads of a page that may weigh 50 MB.
PAGE_HEAD = 1 << 16
#: Points per neighbour chunk file in folder mode (12 neighbours: ~1 MB of script each).
NEIGHBOR_CHUNK = 16_384
#: Flagged images (the review queue's first, most urgent) that also get a larger cell
#: (:data:`~embedscope.explore.atlas.LARGE_CELL` px), so blur and small details can be judged in
#: the review queue; the rest of the queue shows its 64-px cell enlarged. A 192-px cell is
#: ~2.4 KB (the sample's emoji) to ~5 KB (a photo) against ~0.5 KB for a 64-px one: a one-file
#: page gains at most ~7 MB (base64), about half of what its 20,000 small cells weigh; in folder
#: mode the sheets are files the page loads only when the queue shows one of their images.
MAX_LARGE, MAX_LARGE_FOLDER = 1_000, 20_000


def write_explorer(
    points: pd.DataFrame,
    image_root: str | Path,
    out: str | Path,
    *,
    title: str = "embedscope",
    neighbors: np.ndarray | None = None,
    thumb_size: int = 64,
    thumbnails: Thumbnails = None,
    inline_limit: int = INLINE_LIMIT,
    decisions: pd.DataFrame | None = None,
) -> Path:
    """Write the explorer page for ``points`` to ``out`` (atomically).

    ``decisions`` (:func:`~embedscope.decisions.dataset_decisions`: the dataset's kept
    decisions, already applied to ``points``, with each path's label before them) are where
    the page's decisions start: shown as decisions, and in its download, rows for images not on
    the map (dropped) included.

    ``points`` has x, y, optional z (a 2D map when absent or all NaN), label, path relative to
    ``image_root`` and any extra columns to colour by; ``suggested_label`` with
    ``suggested_share`` (from analyse) travel as each point's suggestion instead. ``neighbors``
    (N, k) row positions feed the click panel (up to 12 per point). Every point gets its
    thumbnail cell, from ``thumbnails`` (the dataset's thumbnail cache, or any cells in point
    order; see :func:`~embedscope.explore.atlas.thumbnail_sheets`) or else decoded from its
    file. Up to ``inline_limit`` points the page is one file; above, its thumbnail sheets
    (``thumbs/``) and neighbour lists (``nbr/``, loaded when a point needs them) are files in
    ``<page stem>-files/`` beside the page, which travels with that folder.
    """
    out = Path(out)
    folder = out.parent / f"{out.stem}-files" if len(points) > inline_limit else None
    # this page's files are named apart from the page still in place (which keeps showing its
    # own until this one replaces it), then the earlier page's files go
    stem = f"{secrets.token_hex(4)}-" if folder else ""
    data = explorer_data(
        points,
        image_root,
        title=title,
        neighbors=neighbors,
        thumb_size=thumb_size,
        thumbnails=thumbnails,
        decisions=decisions,
        folder=folder,
        stem=stem,
    )
    here = files("embedscope.explore")
    page = _fill(
        here.joinpath("explorer.html").read_text(encoding="utf-8"),
        {
            "__TITLE__": html.escape(str(title)),
            "__CSS__": here.joinpath("explorer.css").read_text(encoding="utf-8"),
            "__DATA__": _json_for_script(data),
            "__SCATTER__": here.joinpath("scatter.js").read_text(encoding="utf-8"),
            "__SCRIPT__": here.joinpath("explorer.js").read_text(encoding="utf-8"),
        },
    )
    body = page.encode("utf-8")
    write_atomic(out, lambda tmp: tmp.write_bytes(body), len(body), point="explorer:write")
    _remove_earlier_files(out.parent / f"{out.stem}-files", stem if folder else None)
    return out


def explorer_data(
    points: pd.DataFrame,
    image_root: str | Path,
    *,
    title: str = "embedscope",
    neighbors: np.ndarray | None = None,
    thumb_size: int = 64,
    thumbnails: Thumbnails = None,
    decisions: pd.DataFrame | None = None,
    folder: Path | None = None,
    stem: str = "",
    max_large: int | None = None,
) -> dict[str, Any]:
    """What ``explorer.js`` draws (:func:`write_explorer`'s arguments): the page inlines it as
    JSON, the JupyterLab panel (:mod:`~embedscope.explore.live`) sends it as binary parts.
    ``folder``: the thumbnail sheets and neighbour chunks go there as files (else inline).
    ``max_large``: flagged rows given a larger cell (default :data:`MAX_LARGE`, or
    :data:`MAX_LARGE_FOLDER` in folder mode, where a page loads a sheet only when shown; the
    panel sends every sheet at start, so it keeps the one-file cap)."""
    missing = {"x", "y", "path"} - set(points.columns)
    if missing:
        raise ValueError(f"points lacks column(s) {sorted(missing)}")
    if thumb_size < 8:
        raise ValueError(f"thumb_size must be at least 8 pixels, got {thumb_size}")
    points = points.reset_index(drop=True)
    n = len(points)
    paths = points["path"].astype(str).tolist()
    labels = labels_of(points)
    seed, own = _seed(points, labels, decisions)
    classes = class_order(labels)
    classes += [c for c in class_order(own) if c not in set(classes)]  # relabelled away
    code = {c: k for k, c in enumerate(classes)}
    near = valid_neighbors(neighbors, n)  # checked before the slow part
    atlases, thumbs = thumbnail_sheets(
        points, image_root, thumbnails, folder, size=thumb_size, stem=stem
    )
    queue = ReviewQueue(points)
    if max_large is None:
        max_large = MAX_LARGE if folder is None else MAX_LARGE_FOLDER
    large = _large(paths, queue, image_root, folder, stem, first=len(atlases), limit=max_large)
    atlases += large.pop("sheets", [])

    is3d = "z" in points.columns and bool(points["z"].notna().any())
    columns = _extra_columns(points)
    data: dict[str, Any] = {
        "title": str(title),
        "is3d": is3d,
        "folder": f"{folder.name}/" if folder else None,
        "count": n,
        "x": _typed(_numbers(points["x"], 6), "f4"),
        "y": _typed(_numbers(points["y"], 6), "f4"),
        "z": _typed(_numbers(points["z"], 6), "f4") if is3d else None,
        "label": _typed([code[c] for c in own]),
        "seed": seed,
        "classes": classes,
        "colours": [class_colour(c, k) for k, c in enumerate(classes)],
        "path": paths,
        "columns": columns,
        "colourBy": _colour_by(points, columns),
        "suggested": _suggestions(points, labels),
        "review": queue.page_data(),
        "rules": page_rules(),
        "key": report_key(title, paths, labels),
        "neighbors": place_neighbors(near, folder, stem),
        "thumb": _typed(thumbs),
        "sheets": atlases,
        "cell": thumb_size,
        "cols": ATLAS_COLS,
        "large": large or None,
        "palette": list(PALETTE),
        "missingColour": MISSING_COLOUR,
    }
    return data


def _large(
    paths: list[str],
    queue: ReviewQueue,
    image_root: str | Path,
    folder: Path | None,
    stem: str,
    first: int,
    limit: int,
) -> dict[str, Any]:
    """The larger cells of the first ``limit`` flagged rows and of the images the queue shows
    beside them (a leak's train copy, a group's members): their ``sheets`` (to follow the small
    ones, from sheet ``first`` on), and for the script each such row and its cell number (-2:
    the original was unreadable); {} when nothing is flagged."""
    rows = queue.rows[:limit]
    rows = list(dict.fromkeys([*rows, *(j for r in rows for j in queue.others[r])]))
    if not rows:
        return {}
    sheets, cells = large_sheets([paths[r] for r in rows], image_root, folder, stem=f"{stem}large-")
    return {
        "sheets": sheets,
        "first": first,
        "cell": LARGE_CELL,
        "cols": LARGE_COLS,
        "rows": _typed(rows, "i4"),
        "cells": _typed(cells, "i4"),
    }


def explorer_markup() -> str:
    """The explorer's markup (``explorer.html``'s body before its scripts), which the panel
    puts in its shadow root: one copy of the editor's HTML."""
    page = files("embedscope.explore").joinpath("explorer.html").read_text(encoding="utf-8")
    body = page.split("<body>", 1)[1]
    return body.split('<script type="application/json"', 1)[0]


#: The sub-folders of a page's ``-files`` folder, all of them written by :func:`write_explorer`.
FOLDER_PARTS = ("thumbs", "nbr")


def _remove_earlier_files(folder: Path, stem: str | None) -> None:
    """Once the page is in place: the files of earlier pages of this name (all of them when
    the page is now one file, ``stem`` None; temp files of a killed write too). Only the
    folder's own sub-folders are touched, and the folder goes only when it is then empty."""
    for part in FOLDER_PARTS:
        sub = folder / part
        if not sub.is_dir():
            continue
        for entry in sub.iterdir():
            if stem is None or not entry.name.startswith(stem):
                entry.unlink(missing_ok=True)
        if stem is None:
            with contextlib.suppress(OSError):
                sub.rmdir()
    if stem is None:
        with contextlib.suppress(OSError):
            folder.rmdir()


def show_inline(html_path: str | Path, *, height: int = 700) -> HTML:
    """Embed the whole explorer page in the notebook output as an ``<iframe srcdoc>``, so the
    executed notebook carries the explorer itself: it works after sharing, with no server.

    A page with a ``-files`` folder (above ``inline_limit`` points) cannot reach that folder
    from inside the notebook, so it is not embedded: one line says what the page shows and
    where it is, with a link. JupyterLab runs the frame only for trusted notebooks (``jupyter
    trust``; ``make run-all`` signs the notebooks it executes); untrusted, the output is
    sanitised and the frame stays empty.
    """
    from IPython.display import HTML

    path = Path(html_path)
    with path.open(encoding="utf-8") as fh:  # a folder-mode page is large: its head says so
        head = re.search(r'"folder":("(?:[^"\\]|\\.)*"),"count":(\d+)', fh.read(PAGE_HEAD))
    if head:  # folder mode
        name, folder = html.escape(path.name), html.escape(json.loads(head.group(1)))
        return HTML(  # names no directory of this machine: the notebook is shared too
            f'<div class="embedscope-explorer">The explorer of {int(head.group(2)):,} points '
            "is too large to show inside the notebook: open "
            f'<a href="{html.escape(quote(path.name))}" target="_blank">{name}</a> (in the '
            f"report folder, with the folder {folder} beside it) in a browser.</div>"
        )
    page = path.read_text(encoding="utf-8")
    return HTML(  # wrapped in a <div>: IPython warns about HTML that starts with <iframe
        f'<div class="embedscope-explorer"><iframe srcdoc="{html.escape(page, quote=True)}" '
        'sandbox="allow-scripts allow-downloads" '
        f'style="width:100%;height:{int(height)}px;border:0"></iframe></div>'
    )


def labels_of(points: pd.DataFrame) -> list[str]:
    if "label" not in points.columns:
        return [UNLABELLED] * len(points)
    raw = points["label"]
    return [UNLABELLED if pd.isna(v) or str(v) == "" else str(v) for v in raw.tolist()]


def _seed(
    points: pd.DataFrame, labels: list[str], decisions: pd.DataFrame | None
) -> tuple[dict[str, list], list[str]]:
    """The page's starting decisions, from the dataset's kept ones, folded as
    :class:`~embedscope.decisions.DecisionLog` folds its ``base``, and each point's own label
    (:func:`~embedscope.decisions.own_labels`): on the map, each decided point's row, new label
    (None: none) and tags; ``off``, the rows of images not on the map, as the file has them."""
    seed: dict[str, list] = {"rows": [], "labels": [], "tags": [], "off": []}
    if decisions is None or not len(decisions):
        return seed, labels
    paths = points["path"].astype(str).tolist()
    mine = own_labels(pd.DataFrame({"path": paths, "label": labels}), decisions)
    own = [mine[p] for p in paths]
    row = {p: i for i, p in enumerate(paths)}
    for path, label, tags in validate_decisions(decisions[list(COLUMNS)]).values:
        label, tags = label.strip(), split_tags(tags)
        if path not in row:
            seed["off"].append([path, label, TAG_SEPARATOR.join(tags)])
            continue
        seed["rows"].append(row[path])
        seed["labels"].append(None if label in ("", own[row[path]]) else label)
        seed["tags"].append(tags)
    return seed, own


def _numbers(values: pd.Series, digits: int) -> np.ndarray:
    """Floats rounded to ``digits`` significant digits of the column's scale (whatever the
    units, the page shows what the data means, not float32 noise); NaN and infinities become
    NaN, which the page never draws."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.full(len(arr), np.nan)
    scale = float(np.abs(arr[finite]).max()) or 1.0
    decimals = max(0, digits - 1 - math.floor(math.log10(scale)))
    return np.where(finite, np.round(arr, decimals), np.nan)


def _typed(values: Any, dtype: str | None = None) -> dict[str, str]:
    """A per-point array as the page decodes it: little-endian bytes in base64 with their type
    (``f4``; integers in the smallest of ``i1``, ``i2``, ``i4`` that holds them), a quarter of
    the size of JSON numbers and parsed by the browser in one pass."""
    arr = np.asarray(values)
    if dtype is None:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        fits = (t for t in ("i1", "i2", "i4") if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
        dtype = next(fits)
    raw = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {"dtype": dtype, "b64": base64.b64encode(raw).decode("ascii")}


def _extra_columns(points: pd.DataFrame) -> list[dict[str, Any]]:
    """Every other column a user could colour by: numbers get a colour scale, labels-like
    columns (text, booleans, a few distinct integers such as cluster ids) get a legend."""
    out: list[dict[str, Any]] = []
    for name in points.columns:
        skip = (*POSITION_COLUMNS, *IGNORED_COLUMNS, *SUGGESTION_COLUMNS, *FINDING_TEXT_COLUMNS)
        if name in skip:
            continue
        col = points[name]
        distinct = col.dropna().unique()
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        few_ints = pd.api.types.is_integer_dtype(col) and len(distinct) <= MAX_CATEGORIES
        if numeric and not few_ints:
            values = _typed(_numbers(col, 4), "f4")
            out.append({"name": str(name), "kind": "number", "values": values})
        elif 0 < len(distinct) <= MAX_CATEGORIES:
            cats, codes = _categories(col)
            column = {"name": str(name), "kind": "category", "categories": cats}
            if name == "cluster":  # the colours Dash and the static picture give each cluster
                colour = cluster_colours(int(c) for c in cats)
                column["colours"] = [colour[int(c)] for c in cats]
            out.append(column | {"codes": _typed(codes)})
    return out


def _colour_by(points: pd.DataFrame, columns: list[dict[str, Any]]) -> str:
    """The "colour by" the page opens with: ``label``, or the cluster column's position when
    the labels tell nothing apart (:func:`~embedscope.explore.palette.by_cluster`)."""
    names = [c["name"] for c in columns]
    return str(names.index("cluster")) if by_cluster(points) and "cluster" in names else "label"


def _suggestions(points: pd.DataFrame, labels: list[str]) -> dict[str, Any] | None:
    """Suggested label per point as a code into ``names`` (-1: none) and its share, when
    analyse provided both columns; ``offered``: the rows whose suggestion can be accepted."""
    if not set(SUGGESTION_COLUMNS) <= set(points.columns):
        return None
    names, codes = _categories(points["suggested_label"])
    can = np.flatnonzero(offered(labels, points["suggested_label"])).tolist()
    share = _typed(_numbers(points["suggested_share"], 3), "f4")
    return {"names": names, "codes": _typed(codes), "share": share, "offered": _typed(can, "i4")}


def _categories(col: pd.Series) -> tuple[list[str], list[int]]:
    """Distinct values as text in natural order, and each row's code into them (-1: missing)."""
    text = [None if pd.isna(v) or str(v) == "" else str(v) for v in col.tolist()]
    cats = sorted({t for t in text if t is not None}, key=_natural)
    pos = {c: k for k, c in enumerate(cats)}
    return cats, [-1 if t is None else pos[t] for t in text]


def report_key(title: str, paths: list[str], labels: list[str]) -> str:
    """Names the page's saved decisions in the browser's storage: the title plus a digest of
    what the decisions refer to (paths and their labels), so two reports never share them and
    a report rebuilt after its decisions were applied starts clean."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels, strict=True):
        digest.update(f"{path}\0{label}\n".encode())
    return f"{title} · {digest.hexdigest()[:16]}"


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def valid_neighbors(neighbors: np.ndarray | None, n: int) -> np.ndarray | None:
    """Up to :data:`MAX_NEIGHBORS` valid neighbour rows per point, (N, k) int32 with -1 after
    the last one (self and out-of-range entries dropped, order kept); None without any."""
    if neighbors is None:
        return None
    arr = np.asarray(neighbors)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"neighbors must have shape ({n}, k), got {arr.shape}")
    arr = arr.astype(np.int64)
    valid = (arr >= 0) & (arr < n) & (arr != np.arange(n)[:, None])
    k = min(MAX_NEIGHBORS, int(valid.sum(axis=1).max(initial=0)))
    if k == 0:
        return None
    rank = np.cumsum(valid, axis=1) - 1  # where each valid entry goes in its row
    keep = valid & (rank < k)
    out = np.full((n, k), -1, dtype=np.int32)
    rows, cols = np.nonzero(keep)
    out[rows, rank[rows, cols]] = arr[rows, cols]
    return out


def place_neighbors(
    near: np.ndarray | None, folder: Path | None, stem: str = ""
) -> dict[str, Any] | None:
    """The page's neighbour lists: inline, or in folder mode written as ``nbr/<stem><c>.js`` chunks
    of :data:`NEIGHBOR_CHUNK` points (``<script>`` files, the one thing besides images a
    ``file://`` page may load) that the page loads when a point needs its neighbours."""
    if near is None:
        return None
    n, k = near.shape
    if folder is None:
        return {"k": k, "inline": _typed(near, "i4")}
    chunks = folder / "nbr"
    chunks.mkdir(parents=True, exist_ok=True)
    count = -(-n // NEIGHBOR_CHUNK)
    for c in range(count):
        rows = _typed(near[c * NEIGHBOR_CHUNK : (c + 1) * NEIGHBOR_CHUNK], "i4")["b64"]
        body = f'embedscopeChunk("nbr",{c},"{rows}");\n'.encode("ascii")
        write_atomic(chunks / f"{stem}{c}.js", lambda tmp, b=body: tmp.write_bytes(b), len(body))
    return {"k": k, "chunk": NEIGHBOR_CHUNK, "prefix": f"{quote(folder.name)}/nbr/{stem}"}


def _json_for_script(obj: Any) -> str:
    """JSON that cannot end its <script> element early (``</script>``, ``<!--``), whatever a
    file name contains: every <, > and & travels as a \\u escape, which JSON.parse undoes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fill(template: str, values: dict[str, str]) -> str:
    """Substitute each placeholder once, in one pass, so text inserted for one placeholder
    (a script, a title) is never searched for the next one."""
    out, rest = [], template
    for key, value in values.items():
        head, sep, rest = rest.partition(key)
        if not sep:
            raise ValueError(f"template lacks {key}")
        out += [head, value]
    return "".join([*out, rest])
