"""Stage 5 — explore: the 3D map a person looks at, as files that survive sharing.

``explorer.html`` is one offline page: plotly.js inlined from the installed plotly package, the
points as JSON, and the thumbnails as a few sprite-atlas images, so hovering a point shows its
image without a server or a live kernel. Plotly cannot put an image in its own hover label, so
the page draws a side panel on ``plotly_hover``; every label and path goes in as text, never HTML.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from embedscope.images import load_rgb
from embedscope.ingest import UNLABELLED
from embedscope.layout import write_atomic

#: Columns offered in the explorer's "colour by" switch when present.
SCORE_COLUMNS = ("cluster", "mislabel_score", "outlier_score")
UNREADABLE, NO_THUMBNAIL = -2, -1


def thumbnail(path: Path, size: int) -> Image.Image | None:
    """A ``size`` x ``size`` cell: the image shrunk to fit, centred on white; None if unreadable."""
    try:
        im = load_rgb(path)
    except ValueError:
        return None
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    cell = Image.new("RGB", (size, size), (255, 255, 255))
    cell.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return cell


def build_atlases(
    paths: list[Path], size: int = 64, cols: int = 64, quality: int = 70
) -> tuple[list[str], list[int]]:
    """Sprite atlases (WebP data URIs, ``cols`` x ``cols`` cells each) and each path's cell
    number (``UNREADABLE`` for files that no longer decode). Pillow releases the GIL while
    decoding and resizing, so threads use every core."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        cells = list(pool.map(lambda p: thumbnail(p, size), paths, chunksize=32))
    per_atlas = cols * cols
    index, atlases = [], []
    good = [c for c in cells if c is not None]
    for a in range(0, len(good), per_atlas):
        chunk = good[a : a + per_atlas]
        rows = -(-len(chunk) // cols)
        sheet = Image.new("RGB", (cols * size, rows * size), (255, 255, 255))
        for k, cell in enumerate(chunk):
            sheet.paste(cell, ((k % cols) * size, (k // cols) * size))
        buf = io.BytesIO()
        sheet.save(buf, format="WEBP", quality=quality, method=4)
        atlases.append("data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode())
    k = 0
    for cell in cells:
        index.append(UNREADABLE if cell is None else k)
        k += cell is not None
    return atlases, index


def _json_for_script(obj) -> str:
    """JSON that cannot end its <script> element early, whatever a file name contains."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _coords(values: pd.Series) -> list[float]:
    return np.round(values.to_numpy(dtype=np.float64), 5).tolist()


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
    """Write the self-contained explorer page for ``points`` (columns x, y, optional z,
    label, path relative to ``image_root``, optional score columns) to ``out``."""
    from plotly.offline import get_plotlyjs

    points = points.reset_index(drop=True)
    labels = points["label"].fillna(UNLABELLED).astype(str)
    paths = points["path"].astype(str)
    with_thumbs = min(len(points), max_thumbnails)
    atlases, cells = build_atlases([Path(image_root) / p for p in paths[:with_thumbs]], thumb_size)
    cells += [NO_THUMBNAIL] * (len(points) - with_thumbs)
    is3d = "z" in points and points["z"].notna().any()
    data = {
        "title": title,
        "x": _coords(points["x"]),
        "y": _coords(points["y"]),
        "z": _coords(points["z"]) if is3d else None,
        "label": labels.tolist(),
        "classes": sorted(labels.unique().tolist()),
        "path": paths.tolist(),
        "extra": {
            c: np.round(points[c].to_numpy(dtype=np.float64), 4).tolist()
            for c in SCORE_COLUMNS
            if c in points
        },
        "neighbors": None if neighbors is None else np.asarray(neighbors)[:, :8].tolist(),
        "thumb": cells,
        "atlases": atlases,
        "cell": thumb_size,
        "cols": 64,
    }
    template = files("embedscope").joinpath("explorer.html").read_text(encoding="utf-8")
    page = (
        template.replace("__TITLE__", html.escape(title))
        .replace("__DATA__", _json_for_script(data))
        .replace("__PLOTLY__", get_plotlyjs())
    )
    return write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def show_inline(html_path: str | Path, *, height: int = 720):
    """Embed the whole explorer page in the notebook output (an ``<iframe srcdoc>``), so the
    executed notebook carries it with no server. JupyterLab runs it once the notebook is trusted
    (``make run-all`` signs the notebooks it executes)."""
    from IPython.display import HTML

    page = Path(html_path).read_text(encoding="utf-8")
    return HTML(
        f'<div class="embedscope-explorer"><iframe srcdoc="{html.escape(page, quote=True)}" '
        f'sandbox="allow-scripts" style="width:100%;height:{int(height)}px;border:0">'
        "</iframe></div>"
    )


def static_plot(points: pd.DataFrame, *, title: str = "", out: str | Path | None = None):
    """A PNG of the map coloured by label, for viewers that run no JavaScript (GitHub's
    notebook preview); returned as an IPython image and written to ``out`` when given."""
    from IPython.display import Image as IPythonImage
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), dpi=100)
    is3d = "z" in points and points["z"].notna().any()
    ax = fig.add_subplot(projection="3d" if is3d else None)
    labels = points["label"].fillna(UNLABELLED).astype(str)
    for k, label in enumerate(sorted(labels.unique())):
        sel = points[labels == label]
        coords = [sel["x"], sel["y"]] + ([sel["z"]] if is3d else [])
        ax.scatter(*coords, s=6, alpha=0.8, label=label, color=_tab20(k))
    ax.set_title(title)
    if labels.nunique() <= 20:
        ax.legend(
            loc="upper left", fontsize=7, markerscale=2, frameon=False, bbox_to_anchor=(1.02, 1.0)
        )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if out is not None:
        write_atomic(out, lambda tmp: tmp.write_bytes(png))
    return IPythonImage(data=png, format="png")


def _tab20(k: int):
    from matplotlib import colormaps

    return colormaps["tab10" if k < 10 else "tab20"](k % 20)


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
