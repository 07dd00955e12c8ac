"""Files beside the page: a static matplotlib plot for viewers that run no JavaScript, and the
older project's ``embedding_image_df.csv``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from embedscope.explore.palette import colour_groups
from embedscope.layout import write_atomic


class StaticPlot(Figure):
    """A matplotlib Figure that also renders itself as PNG in IPython, even where no pyplot
    backend registered a display hook (it is built without pyplot, so it is Agg-safe)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def static_plot(points: pd.DataFrame, *, title: str = "", out: str | Path | None = None) -> Figure:
    """The map as a matplotlib scatter coloured by label, or by cluster where the labels tell
    nothing apart (3D when z is present), for viewers
    that run no JavaScript such as GitHub's notebook preview; also written as PNG to ``out``."""
    fig = StaticPlot(figsize=(8, 6), dpi=100, layout="constrained")
    is3d = "z" in points.columns and bool(points["z"].notna().any())
    ax = fig.add_subplot(projection="3d" if is3d else None)
    _, groups, classes, colours = colour_groups(points)  # labels, or clusters (no/one label)
    labels = np.asarray(groups, dtype=object)
    for label, colour in zip(classes, colours, strict=True):
        sel = labels == label
        coords = [points["x"].to_numpy()[sel], points["y"].to_numpy()[sel]]
        if is3d:
            coords.append(points["z"].to_numpy()[sel])
        ax.scatter(*coords, s=5, alpha=0.8, label=label, color=colour, lw=0)
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


def write_embedding_csv(points: pd.DataFrame, out: str | Path) -> Path:
    """The older project's ``embedding_image_df.csv``: x, y, z, image_path, label (z empty in
    2D). ``image_path`` is relative to the dataset root (as in the manifest), so a shared report
    carries no path of the machine that made it."""
    df = pd.DataFrame(
        {
            "x": points["x"],
            "y": points["y"],
            "z": points.get("z", np.nan),
            "image_path": points["path"],
            "label": points["label"],
        }
    )
    return write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))
