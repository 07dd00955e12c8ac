"""Stage 5 — explore: the 3D map a person looks at, as files that survive sharing.

``explorer.html`` is one offline page: plotly.js inlined from the installed plotly package, the
points as JSON, and the thumbnails as a few sprite-atlas images, so hovering a point shows its
image without a server or a live kernel. Plotly cannot put an image in its own hover label, so
the page draws its own card on ``plotly_hover``; every label and path goes in as text, never HTML.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from embedscope.images import load_rgb
from embedscope.ingest import UNLABELLED
from embedscope.layout import write_atomic

if TYPE_CHECKING:
    from IPython.display import HTML

#: Columns that are the map itself, never offered in "colour by".
POSITION_COLUMNS = ("x", "y", "z", "label", "path")
#: Bookkeeping columns other stages carry along that are meaningless as colours.
IGNORED_COLUMNS = ("row", "sha256")
#: A non-numeric (or small-integer) column with more distinct values than this is not offered.
MAX_CATEGORIES = 40
#: Neighbours shown per point: a 4 x 3 grid stays readable and keeps the JSON small.
MAX_NEIGHBORS = 12
#: Atlas cell codes for points without a picture.
UNREADABLE, NO_THUMBNAIL = -2, -1
#: Cells per atlas side: 64 x 64 cells of 64 px is 4096 px, within every browser's image limit.
ATLAS_COLS = 64
#: WebP, not JPEG: on 10,000 photo thumbnails JPEG q80 made a 20.1 MB page, WebP q70 (method 6,
#: same look at this size) 14.8 MB including the 4.8 MB plotly.js, and 15.8 MB on noisier
#: generated images (make bench), so q60 keeps a margin. Every current browser decodes WebP.
ATLAS_FORMAT, ATLAS_QUALITY = "WEBP", 60
#: From this many images thumbnails are made in worker processes (threads below: no start-up).
PROCESS_POOL_MIN = 256
#: Class colours, shared by the page and the static plot so both show a class the same way.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
    "#9c755f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#8c564b",
    "#e377c2", "#aec7e8", "#ffbb78", "#98df8a",
)  # fmt: skip
MISSING_COLOUR = "#b8bec8"


def write_explorer(
    points: pd.DataFrame,
    image_root: str | Path,
    out: str | Path,
    *,
    title: str = "embedscope",
    neighbors: np.ndarray | None = None,
    thumb_size: int = 64,
    max_thumbnails: int = 20_000,
) -> Path:
    """Write the self-contained explorer page for ``points`` to ``out`` (atomically).

    ``points`` has x, y, optional z (a 2D map when absent or all NaN), label, path relative to
    ``image_root`` and any extra columns to colour by. ``neighbors`` (N, k) row positions feed
    the click panel. Beyond ``max_thumbnails`` points an evenly spread subset keeps thumbnails,
    so every class keeps some pictures while the file stays small enough to share.
    """
    from plotly.offline import get_plotlyjs

    missing = {"x", "y", "path"} - set(points.columns)
    if missing:
        raise ValueError(f"points lacks column(s) {sorted(missing)}")
    if thumb_size < 8:
        raise ValueError(f"thumb_size must be at least 8 pixels, got {thumb_size}")
    points = points.reset_index(drop=True)
    n = len(points)
    paths = points["path"].astype(str).tolist()
    labels = _labels(points)
    classes = sorted(set(labels), key=lambda c: (c == UNLABELLED, c))
    code = {c: k for k, c in enumerate(classes)}
    near = _neighbors(neighbors, n)  # checked before the slow part

    thumbs = np.full(n, NO_THUMBNAIL, dtype=np.int64)
    keep = _spread(n, max(0, min(max_thumbnails, n)))
    root = Path(image_root)
    atlases, cells = build_atlases([root / paths[i] for i in keep], thumb_size)
    thumbs[keep] = cells

    is3d = "z" in points.columns and bool(points["z"].notna().any())
    data: dict[str, Any] = {
        "title": str(title),
        "is3d": is3d,
        "x": _numbers(points["x"], 6),
        "y": _numbers(points["y"], 6),
        "z": _numbers(points["z"], 6) if is3d else None,
        "label": [code[c] for c in labels],
        "classes": classes,
        "colours": [_class_colour(c, k) for k, c in enumerate(classes)],
        "path": paths,
        "columns": _extra_columns(points),
        "neighbors": near,
        "thumb": thumbs.tolist(),
        "cell": thumb_size,
        "cols": ATLAS_COLS,
        "palette": list(PALETTE),
        "missingColour": MISSING_COLOUR,
    }
    atlas_css = "\n".join(
        f".es-a{k}{{background-image:url({uri})}}" for k, uri in enumerate(atlases)
    )
    template = files("embedscope").joinpath("explorer.html").read_text(encoding="utf-8")
    page = _fill(
        template,
        {
            "__TITLE__": html.escape(str(title)),
            "__ATLASES__": atlas_css,
            "__DATA__": _json_for_script(data),
            "__PLOTLY__": get_plotlyjs(),
        },
    )
    return write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def build_atlases(
    paths: list[Path], size: int = 64, cols: int = ATLAS_COLS
) -> tuple[list[str], list[int]]:
    """Sprite atlases (data URIs, ``cols`` x ``cols`` cells each) and each path's cell number,
    ``UNREADABLE`` where the file does not decode. Full sheets are encoded on a thread while
    the next one fills."""
    per_atlas = cols * cols
    index: list[int] = []
    sheets: list[Future[str]] = []
    sheet = Image.new("RGB", (1, 1))
    filled = 0
    with ThreadPoolExecutor(2) as encoder:
        for raw in _cells(paths, size):
            if raw is None:
                index.append(UNREADABLE)
                continue
            k = filled % per_atlas
            if k == 0:
                sheet = Image.new("RGB", (cols * size, cols * size), (255, 255, 255))
            sheet.paste(
                Image.frombytes("RGB", (size, size), raw), ((k % cols) * size, (k // cols) * size)
            )
            index.append(filled)
            filled += 1
            if k == per_atlas - 1:
                sheets.append(encoder.submit(_encode, sheet))
        if filled % per_atlas:  # the last, partly filled sheet keeps only the rows it uses
            rows = -(-(filled % per_atlas) // cols)
            sheets.append(encoder.submit(_encode, sheet.crop((0, 0, cols * size, rows * size))))
        return [f.result() for f in sheets], index


def _cells(paths: list[Path], size: int) -> Iterator[bytes | None]:
    """Thumbnail cells in order, decoded on every core.

    Processes for big folders: on the 2-CPU build box, 2,000 photo JPEGs took 1.41 s serial,
    0.96 s on 2 threads and 0.77 s on 2 processes (1,440 WebP icons: 1.66 / 1.02 / 0.90 s), as
    the per-image Python work holds the GIL even though Pillow releases it to decode and resize.
    Small lists stay on threads, where no worker has to start.
    """
    workers = os.cpu_count() or 1
    work = partial(_cell_bytes, size=size)
    if len(paths) < PROCESS_POOL_MIN or workers == 1:
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(work, paths)
    else:
        chunk = max(8, min(64, len(paths) // (workers * 8)))
        with ProcessPoolExecutor(workers) as pool:
            yield from pool.map(work, paths, chunksize=chunk)


def _cell_bytes(path: Path, size: int) -> bytes | None:
    """A cell as raw RGB bytes: 12 KB that cross a process boundary faster than a PIL image."""
    cell = thumbnail_cell(path, size)
    return None if cell is None else cell.tobytes()


def thumbnail_cell(path: Path, size: int) -> Image.Image | None:
    """A ``size`` x ``size`` cell: the whole image scaled to fit, centred on white; None when
    the file is unreadable. JPEGs decode at reduced scale (``draft``), ~8x faster on photos."""
    try:
        im = load_rgb(path, draft=(size, size))
    except ValueError:
        return None
    im.thumbnail((size, size), Image.Resampling.BICUBIC)
    if im.width < size and im.height < size:  # small icons fill the cell instead of a dot
        im = ImageOps.contain(im, (size, size), Image.Resampling.BICUBIC)
    cell = Image.new("RGB", (size, size), (255, 255, 255))
    cell.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return cell


def thumbnail_jpeg(path: Path, size: int, quality: int = 85) -> bytes | None:
    """:func:`thumbnail_cell` as JPEG bytes, for the live panel, the Dash routes and tables."""
    cell = thumbnail_cell(path, size)
    if cell is None:
        return None
    buf = io.BytesIO()
    cell.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def show_inline(html_path: str | Path, *, height: int = 700) -> HTML:
    """Embed the whole explorer page in the notebook output as an ``<iframe srcdoc>``, so the
    executed notebook carries the explorer itself: it works after sharing, with no server.

    JupyterLab runs it only for trusted notebooks (``jupyter trust``; ``make run-all`` signs the
    notebooks it executes); untrusted, the output is sanitised and the frame stays empty.
    """
    from IPython.display import HTML

    page = Path(html_path).read_text(encoding="utf-8")
    return HTML(  # wrapped in a <div>: IPython warns about HTML that starts with <iframe
        f'<div class="embedscope-explorer"><iframe srcdoc="{html.escape(page, quote=True)}" '
        'sandbox="allow-scripts allow-downloads" '
        f'style="width:100%;height:{int(height)}px;border:0"></iframe></div>'
    )


class StaticPlot(Figure):
    """A matplotlib Figure that also renders itself as PNG in IPython, even where no pyplot
    backend registered a display hook (it is built without pyplot, so it is Agg-safe)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def static_plot(points: pd.DataFrame, *, title: str = "", out: str | Path | None = None) -> Figure:
    """The map as a matplotlib scatter coloured by label (3D when z is present), for viewers
    that run no JavaScript such as GitHub's notebook preview; also written as PNG to ``out``."""
    fig = StaticPlot(figsize=(8, 6), dpi=100, layout="constrained")
    is3d = "z" in points.columns and bool(points["z"].notna().any())
    ax = fig.add_subplot(projection="3d" if is3d else None)
    labels = np.asarray(_labels(points), dtype=object)
    classes = sorted(set(labels), key=lambda c: (c == UNLABELLED, c))
    for k, label in enumerate(classes):
        sel = labels == label
        coords = [points["x"].to_numpy()[sel], points["y"].to_numpy()[sel]]
        if is3d:
            coords.append(points["z"].to_numpy()[sel])
        ax.scatter(*coords, s=5, alpha=0.8, label=label, color=_class_colour(label, k), lw=0)
    ax.set_title(title, fontsize=11)
    if is3d:
        ax.set(xticklabels=[], yticklabels=[], zticklabels=[])
    else:
        ax.set(xticks=[], yticks=[])
    if len(classes) <= 30:
        fig.legend(loc="outside right upper", fontsize=8, markerscale=2.5, frameon=False)
    if out is not None:
        png = fig._repr_png_()
        write_atomic(out, lambda tmp: tmp.write_bytes(png))
    return fig


def write_embedding_csv(points: pd.DataFrame, image_root: str | Path, out: str | Path) -> Path:
    """The older project's ``embedding_image_df.csv``: x, y, z, image_path, label (z empty in
    2D), with absolute image paths so the file works from anywhere on this machine."""
    root = Path(image_root)
    df = pd.DataFrame(
        {
            "x": points["x"],
            "y": points["y"],
            "z": points.get("z", np.nan),
            "image_path": [str(root / p) for p in points["path"]],
            "label": points["label"],
        }
    )
    return write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))


# --- helpers -------------------------------------------------------------------------------


def _encode(sheet: Image.Image) -> str:
    buf = io.BytesIO()
    options = {"method": 6} if ATLAS_FORMAT == "WEBP" else {"optimize": True}
    sheet.save(buf, format=ATLAS_FORMAT, quality=ATLAS_QUALITY, **options)
    mime = f"image/{ATLAS_FORMAT.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` row positions spread evenly over ``n`` rows (rows are usually sorted by path, so
    taking the first ``k`` would leave whole classes without pictures)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _labels(points: pd.DataFrame) -> list[str]:
    if "label" not in points.columns:
        return [UNLABELLED] * len(points)
    raw = points["label"]
    return [UNLABELLED if pd.isna(v) or str(v) == "" else str(v) for v in raw.tolist()]


def _numbers(values: pd.Series, digits: int) -> list[float | None]:
    """Floats rounded to ``digits`` significant digits of the column's scale (JSON stays small
    whatever the units); NaN and infinities become null, which plotly leaves out."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return [None] * len(arr)
    scale = float(np.abs(arr[finite]).max()) or 1.0
    decimals = max(0, digits - 1 - math.floor(math.log10(scale)))
    rounded = np.round(arr, decimals)
    return [float(v) if ok else None for v, ok in zip(rounded.tolist(), finite, strict=True)]


def _extra_columns(points: pd.DataFrame) -> list[dict[str, Any]]:
    """Every other column a user could colour by: numbers get a colour scale, labels-like
    columns (text, booleans, a few distinct integers such as cluster ids) get a legend."""
    out: list[dict[str, Any]] = []
    for name in points.columns:
        if name in POSITION_COLUMNS or name in IGNORED_COLUMNS:
            continue
        col = points[name]
        distinct = col.dropna().unique()
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        few_ints = pd.api.types.is_integer_dtype(col) and len(distinct) <= MAX_CATEGORIES
        if numeric and not few_ints:
            out.append({"name": str(name), "kind": "number", "values": _numbers(col, 4)})
        elif 0 < len(distinct) <= MAX_CATEGORIES:
            text = [None if pd.isna(v) else str(v) for v in col.tolist()]
            cats = sorted({t for t in text if t is not None}, key=_natural)
            pos = {c: k for k, c in enumerate(cats)}
            codes = [-1 if t is None else pos[t] for t in text]
            out.append({"name": str(name), "kind": "category", "categories": cats, "codes": codes})
    return out


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def _neighbors(neighbors: np.ndarray | None, n: int) -> list[list[int]] | None:
    """Valid neighbour rows per point, self and out-of-range entries dropped."""
    if neighbors is None:
        return None
    arr = np.asarray(neighbors)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"neighbors must have shape ({n}, k), got {arr.shape}")
    arr = arr.astype(np.int64)
    return [
        [j for j in row if 0 <= j < n and j != i][:MAX_NEIGHBORS]
        for i, row in enumerate(arr.tolist())
    ]


def _class_colour(label: str, k: int) -> str:
    """The palette in order, then evenly spaced hues; '(unlabelled)' is always grey."""
    if label == UNLABELLED:
        return MISSING_COLOUR
    if k < len(PALETTE):
        return PALETTE[k]
    hue = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.5, 0.55)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _json_for_script(obj: Any) -> str:
    """JSON that cannot end its <script> element early (``</script>``, ``<!--``), whatever a
    file name contains: every <, > and & travels as a \\u escape, which JSON.parse undoes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fill(template: str, values: dict[str, str]) -> str:
    """Substitute each placeholder once, in one pass, so text inserted for one placeholder
    (plotly.js, a title) is never searched for the next one."""
    out, rest = [], template
    for key, value in values.items():
        head, sep, rest = rest.partition(key)
        if not sep:
            raise ValueError(f"template lacks {key}")
        out += [head, value]
    return "".join([*out, rest])
