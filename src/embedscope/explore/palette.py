"""One categorical palette for every view of a map: the page, the live panel, Dash and the
static plot show a class in the same colour."""

from __future__ import annotations

import colorsys

import pandas as pd

from embedscope.knn import labels_unjudged
from embedscope.vocabulary import UNLABELLED

#: Tableau 10 (less its grey), then colours picked greedily for distance: the first 12 are at
#: least 30 CIELAB units apart (the old list put #4e79a7 and #1f77b4, 10.5 apart, 1st and 10th).
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#2d2d2d", "#6a3d9a", "#86133e", "#0b6e4f", "#e31a1c", "#ffbe7d", "#b15928",
    "#1b3a6b", "#b2df8a", "#637939", "#7b4173",
)  # fmt: skip
#: Points without a label, and category values that are missing.
MISSING_COLOUR = "#b8bec8"


def class_colour(label: str, k: int) -> str:
    """The palette in order, then evenly spaced hues; '(unlabelled)' is always grey."""
    if label == UNLABELLED:
        return MISSING_COLOUR
    if k < len(PALETTE):
        return PALETTE[k]
    hue = (k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.5, 0.55)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def class_order(labels) -> list[str]:
    """Classes sorted by name with '(unlabelled)' last: the order colours are given out in."""
    return sorted(set(labels), key=lambda c: (c == UNLABELLED, c))


#: A cluster's name in a legend; HDBSCAN's noise (-1) is "no cluster", grey like no label.
NO_CLUSTER = "no cluster"


def by_cluster(points: pd.DataFrame) -> bool:
    """Whether a map is coloured by cluster rather than label: the labels tell nothing apart
    (no labels, or one class: :func:`~embedscope.knn.labels_unjudged`) and analyse's
    ``cluster`` column is there."""
    if "cluster" not in points.columns:
        return False
    labels = points["label"] if "label" in points.columns else pd.Series(UNLABELLED, points.index)
    text = [UNLABELLED if pd.isna(v) or str(v) == "" else str(v) for v in labels.tolist()]
    return labels_unjudged(text) is not None


def colour_groups(
    points: pd.DataFrame, key: str | None = None
) -> tuple[str, list[str], list[str], list[str]]:
    """A map's categorical colouring: ``(key, group per point, groups in legend order, their
    colours)``, by ``label`` or ``cluster`` (clusters in number order, "no cluster" last and
    grey); ``key`` None picks cluster where :func:`by_cluster` says so, else label."""
    if key == "cluster" or (key is None and by_cluster(points)):
        ids = pd.to_numeric(points["cluster"], errors="coerce").fillna(-1).astype(int).tolist()
        names = [NO_CLUSTER if c < 0 else f"cluster {c}" for c in ids]
        colour = cluster_colours(ids)
        found = sorted(colour, key=lambda c: (c < 0, c))  # clusters in number order, noise last
        order = [NO_CLUSTER if c < 0 else f"cluster {c}" for c in found]
        return "cluster", names, order, [colour[c] for c in found]
    labels = points["label"] if "label" in points.columns else pd.Series(UNLABELLED, points.index)
    names = [UNLABELLED if pd.isna(v) or str(v) == "" else str(v) for v in labels.tolist()]
    order = class_order(names)
    return "label", names, order, [class_colour(c, k) for k, c in enumerate(order)]


def cluster_colours(ids) -> dict[int, str]:
    """Each cluster id's colour, the same in every view (the page's "colour by cluster" too):
    the clusters in number order take the palette in order, HDBSCAN's noise (-1) is grey."""
    found = sorted({int(c) for c in ids})
    clusters = [c for c in found if c >= 0]
    out = {c: class_colour(f"cluster {c}", k) for k, c in enumerate(clusters)}
    return out | ({-1: MISSING_COLOUR} if found and found[0] < 0 else {})
