"""Which model (and which map) for these images? Several models and reducers on one manifest,
their quality numbers side by side, and small multiples of the maps (``05_compare``)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from embedscope.analyse import analyse, projection_quality
from embedscope.embed import embed
from embedscope.explore.palette import class_colour, class_order
from embedscope.explore.static import StaticPlot
from embedscope.layout import Layout
from embedscope.reduce import project
from embedscope.store import load_embeddings

QUALITY = [
    "knn_accuracy",
    "silhouette_embedding",
    "silhouette_projection",
    "trustworthiness",
    "clusters",
    "cluster_purity",
]


def compare(
    layout: Layout,
    models: Sequence[str],
    methods: Sequence[str] = ("pca", "umap"),
    *,
    dims: int = 2,
    random_state: int | None = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[tuple[str, str], pd.DataFrame]]:
    """One row of quality numbers per (model, method), and each projection for plotting.

    Embeddings and projections come from the same caches as the other notebooks, so models
    already embedded cost nothing here.
    """
    rows, maps = [], {}
    for model in models:
        facts = embed(layout, model, progress=progress)
        report = analyse(layout, model).report
        emb = load_embeddings(layout, model)
        for method in methods:
            coords, info = project(layout, method, dims, model=model, random_state=random_state)
            xy = coords[list("xyz"[:dims])].to_numpy()
            quality = projection_quality(emb.vectors, xy, emb.rows["label"])
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "dim": facts["dim"],
                    **{k: ({**report, **quality}).get(k) for k in QUALITY},
                    "reduce_seconds": info.get("seconds"),
                }
            )
            maps[(model, method)] = coords
    return pd.DataFrame(rows), maps


def small_multiples(maps: dict[tuple[str, str], pd.DataFrame], *, cols: int = 3) -> StaticPlot:
    """A grid of 2D maps (first two coordinates), one per (model, method), coloured by label in
    the explorer's palette, with one legend for the grid."""
    from matplotlib.lines import Line2D

    n = len(maps)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig = StaticPlot(figsize=(4 * cols + 1.6, 3.6 * rows), dpi=90, layout="constrained")
    classes = class_order(c for df in maps.values() for c in df["label"].astype(str))
    colours = {c: class_colour(c, k) for k, c in enumerate(classes)}
    for k, ((model, method), df) in enumerate(maps.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        colour = [colours[c] for c in df["label"].astype(str)]
        ax.scatter(df["x"], df["y"], s=4, c=colour, alpha=0.8)
        ax.set_title(f"{model} · {method}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 40:
        handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=c) for c in classes]
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig
