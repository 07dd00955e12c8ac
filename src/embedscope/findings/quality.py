"""Image-quality findings (:mod:`embedscope.quality` computes the scores from the statistics
ingest stores): dark, light, blurry, low information, grayscale, odd aspect ratio and odd size,
with calibrated thresholds, or cleanvision's exactly (``quality_thresholds="cleanvision"``).
Near duplicates, which cleanvision counts here too, are in the duplicates family.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.quality import CALIBRATED, STAT_COLUMNS, THRESHOLDS, quality_findings

#: The types, in the order a row's ``issues`` lists them, with their weight in
#: ``review_priority``: bad exposure or blur often makes an image useless, while odd shapes,
#: odd sizes and missing colour are mostly harmless facts about a file.
WEIGHTS = {
    "dark": 0.8,
    "light": 0.8,
    "blurry": 0.8,
    "low_information": 0.8,
    "grayscale": 0.5,
    "odd_aspect_ratio": 0.5,
    "odd_size": 0.5,
}
#: One line per type, from the row's scores and size.
TEXT = {
    "dark": lambda r: f"dark (its brightest pixels reach {1 - r.dark_score:.0%} brightness)",
    "light": lambda r: f"light (its darkest pixels are at {r.light_score:.0%} brightness)",
    "blurry": lambda r: f"blurry (blur score {r.blurry_score:.2f})",
    "low_information": lambda r: f"low information (score {r.low_information_score:.2f})",
    "grayscale": lambda r: "no colour (a greyscale file)",
    "odd_aspect_ratio": lambda r: f"odd aspect ratio ({r.width}x{r.height})",
    "odd_size": lambda r: f"odd size for this dataset ({r.width}x{r.height})",
}
#: The same, for the calibrated scores where they say something else.
CALIBRATED_TEXT = {
    "blurry": lambda r: (
        f"blurry (blur effect {r.blurry_score:.2f}; sharp photos stay under {CALIBRATED['blurry']})"
    ),
    "low_information": lambda r: (
        f"low contrast (its brightness spans {1 - r.low_information_score:.0%} of the range)"
    ),
    "grayscale": lambda r: (
        f"almost no colour (channels differ by {1 - r.grayscale_score:.0%} at most)"
    ),
    "light": lambda r: (
        f"washed out (its darkest pixels' channels are all over {r.light_score:.0%})"
    ),
    "dark": lambda r: f"dark (its brightest pixels' channels reach {1 - r.dark_score:.0%} at most)",
}
DOCS = {
    "dark": (
        f"too dark: its brightest pixels' channels all under {1 - CALIBRATED['dark']:.0%} "
        f"(cleanvision: {THRESHOLDS['dark']:.0%})"
    ),
    "light": (
        f"washed out: its darkest pixels' channels all over {CALIBRATED['light']:.0%} "
        f"(cleanvision: {1 - THRESHOLDS['light']:.0%})"
    ),
    "blurry": f"blurry: blur effect over {CALIBRATED['blurry']} (cleanvision: its edge score)",
    "low_information": (
        f"low contrast: brightness spans under {1 - CALIBRATED['low_information']:.0%} "
        "(cleanvision: low entropy)"
    ),
    "grayscale": (
        f"(almost) no colour: channels differ by under {1 - CALIBRATED['grayscale']:.0%} "
        "(cleanvision: mode L)"
    ),
    "odd_aspect_ratio": "far from square",
    "odd_size": "far from the dataset's usual size",
}


def _compute(context: Context) -> pd.DataFrame:
    facts = context.facts
    stats = facts.reindex(columns=[*STAT_COLUMNS, "width", "height"]).reset_index(drop=True)
    stats = stats.apply(pd.to_numeric, errors="coerce")
    if "mode" in facts:
        stats["mode"] = facts["mode"].to_numpy(dtype=object)
    found = quality_findings(stats, context.quality_thresholds)
    out = pd.DataFrame({"width": facts["width"].to_numpy(), "height": facts["height"].to_numpy()})
    own = [c for c in found.columns if c.removesuffix("_score") in WEIGHTS]
    return pd.concat([out, found[own].reset_index(drop=True)], axis=1)


def _reason(name: str):
    def reasons(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
        calibrated = context.quality_thresholds == "calibrated"
        text = CALIBRATED_TEXT.get(name, TEXT[name]) if calibrated else TEXT[name]
        return [text(row) for row in table.iloc[at].itertuples()]

    return reasons


_SCORE_DOCS = "0..1, higher = worse (calibrated, or cleanvision's score turned round)"

FAMILY = Family(
    name="quality",
    order=50,
    columns=(
        Column("width", "pixels"),
        Column("height", "pixels"),
        *(
            column
            for name in ("dark", "light", "blurry", "low_information", "odd_aspect_ratio")
            for column in (Column(f"{name}_score", _SCORE_DOCS), Column(name, DOCS[name]))
        ),
        Column("odd_size_score", _SCORE_DOCS),
        Column("odd_size", DOCS["odd_size"]),
        Column("grayscale_score", "1 - the largest difference between colour channels, 0..1"),
        Column("grayscale", DOCS["grayscale"]),
    ),
    compute=_compute,
    types=tuple(
        IssueType(name, weight, _reason(name), doc=DOCS[name]) for name, weight in WEIGHTS.items()
    ),
)
