"""One categorical palette for every view of a map: the page, the live panel, Dash and the
static plot show a class in the same colour."""

from __future__ import annotations

import colorsys

from embedscope.ingest import UNLABELLED

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
