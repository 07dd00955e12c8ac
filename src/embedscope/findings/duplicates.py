"""Duplicate findings: the same bytes twice (ingest's content hash), and images that look the
same (one perceptual hash, as cleanvision groups near duplicates). Leaks between splits join
this family.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.quality import near_duplicate_groups


def _compute(context: Context) -> pd.DataFrame:
    facts = context.facts
    first = facts["duplicate_of"].fillna("").astype(str).to_numpy(dtype=object)
    hashes = facts["phash"] if "phash" in facts else pd.Series(np.nan, index=facts.index)
    groups = near_duplicate_groups(pd.to_numeric(hashes, errors="coerce"))
    return pd.DataFrame(
        {
            "exact_duplicate_of": first,
            "exact_duplicate": first != "",
            "exact_duplicate_score": (first != "").astype(np.float32),
            "near_duplicate_group": groups,
            "near_duplicate_score": (groups >= 0).astype(np.float32),
            "near_duplicate": groups >= 0,
        }
    )


def _exact(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    return [f"same bytes as {table['exact_duplicate_of'].iat[i]}" for i in at]


def _near(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    """The first other image of the group by name, and how many more."""
    grouped = table[table["near_duplicate_group"] >= 0].groupby("near_duplicate_group")["path"]
    twins = {int(g): [*paths.iloc[:2], len(paths)] for g, paths in grouped}
    out = []
    for i in at:
        first, second, size = twins[int(table["near_duplicate_group"].iat[i])]
        other = second if first == table["path"].iat[i] else first
        more = f" and {size - 2} more" if size > 2 else ""
        out.append(f"looks the same as {other}{more} (same perceptual hash)")
    return out


FAMILY = Family(
    name="duplicates",
    order=60,
    columns=(
        Column(
            "exact_duplicate_of", "the first image with the same bytes (empty: none)", text=True
        ),
        Column("exact_duplicate", "the same bytes as an earlier image"),
        Column("exact_duplicate_score", "1 for an exact duplicate, else 0"),
        Column("near_duplicate_group", "images sharing one perceptual hash (-1: none)"),
        Column("near_duplicate_score", "1 in a near-duplicate group, else 0"),
        Column("near_duplicate", "looks the same as another image (same perceptual hash)"),
    ),
    compute=_compute,
    types=(
        IssueType("exact_duplicate", 1.0, _exact, doc="the same bytes as another image"),
        IssueType("near_duplicate", 0.9, _near, doc="the same perceptual hash as another image"),
    ),
)
