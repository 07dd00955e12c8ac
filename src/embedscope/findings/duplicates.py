"""Duplicate findings: the same bytes twice (ingest's content hash), and near-duplicate groups:
copies of one image within one split (within the whole dataset without splits), found by the
leak search's own candidates and verification (:func:`embedscope.findings.leaks.near_duplicates`,
run by ``dataset_leaks``): exact, re-encoded, resized, cropped, mirrored, brightness or
contrast changed. A caller that ran no search (no pixels at hand) gets cleanvision's groups, one
perceptual hash, instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.leaks import KINDS
from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.quality import near_duplicate_groups

#: ``near_duplicate_kind`` of a group found by perceptual hash alone (no search ran).
HASH_KIND = "same perceptual hash"


def _compute(context: Context) -> pd.DataFrame:
    facts = context.facts
    first = facts["duplicate_of"].fillna("").astype(str).to_numpy(dtype=object)
    if "near_duplicate_group" in facts:  # the search ran (dataset_leaks)
        groups = pd.to_numeric(facts["near_duplicate_group"]).fillna(-1).to_numpy(np.int64)
        scores = pd.to_numeric(facts["near_duplicate_score"]).fillna(0).to_numpy(np.float32)
        of = facts["near_duplicate_of"].fillna("").astype(str).to_numpy(dtype=object)
        kind = facts["near_duplicate_kind"].fillna("").astype(str).to_numpy(dtype=object)
    else:  # no search: cleanvision's groups, one perceptual hash, within one split
        hashes = facts["phash"] if "phash" in facts else pd.Series(np.nan, index=facts.index)
        within = facts.get("split")
        groups = near_duplicate_groups(pd.to_numeric(hashes, errors="coerce"), within)
        scores = (groups >= 0).astype(np.float32)
        of = np.full(len(groups), "", object)
        kind = np.where(groups >= 0, HASH_KIND, "").astype(object)
    return pd.DataFrame(
        {
            "exact_duplicate_of": first,
            "exact_duplicate": first != "",
            "exact_duplicate_score": (first != "").astype(np.float32),
            "near_duplicate_group": groups,
            "near_duplicate_of": of,
            "near_duplicate_kind": kind,
            "near_duplicate_score": np.where(groups >= 0, scores, 0).astype(np.float32),
            "near_duplicate": groups >= 0,
        }
    )


def _exact(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    return [f"same bytes as {table['exact_duplicate_of'].iat[i]}" for i in at]


def _near(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    """Its surest copy in the group (else the first other image by name), how many more, and
    the kind of match: "looks the same as a.png and 2 more (mirrored, score 0.97)"."""
    grouped = table[table["near_duplicate_group"] >= 0].groupby("near_duplicate_group")["path"]
    twins = {int(g): [*paths.iloc[:2], len(paths)] for g, paths in grouped}
    out = []
    for i in at:
        first, second, size = twins[int(table["near_duplicate_group"].iat[i])]
        other = table["near_duplicate_of"].iat[i] or (
            second if first == table["path"].iat[i] else first
        )
        more = f" and {size - 2} more" if size > 2 else ""
        kind = table["near_duplicate_kind"].iat[i]
        how = (
            kind
            if kind == HASH_KIND
            else f"{kind}, score {table['near_duplicate_score'].iat[i]:.2f}"
        )
        out.append(f"looks the same as {other}{more} ({how})")
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
        Column(
            "near_duplicate_group",
            "copies of one image within one split; same pHash where unsearched (-1: none)",
        ),
        Column("near_duplicate_of", "its surest copy in the group", text=True),
        Column("near_duplicate_kind", "the kind of match: " + ", ".join(KINDS), text=True),
        Column("near_duplicate_score", "the verified match with that copy (0..1)"),
        Column("near_duplicate", "a copy of another image of its split (any kind of copy)"),
    ),
    compute=_compute,
    types=(
        IssueType("exact_duplicate", 1.0, _exact, doc="the same bytes as another image"),
        IssueType("near_duplicate", 0.9, _near, doc="a copy of another image of its split"),
    ),
)
