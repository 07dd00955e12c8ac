"""One findings table: everything the kit thinks is wrong with a dataset, one row per image.

``reports/<name>/findings.csv`` joins the label issues (:mod:`embedscope.label_issues`, from
:func:`embedscope.analyse.analyse`), the exact duplicates ingest found, and the image-quality
issues (:mod:`embedscope.quality`, from ingest's statistics), with a one-line reason a person
reads and a ``review_priority`` to sort by: flagged images first, the surest first. A tag
``keep:<type>`` on an image (a decision, see :mod:`embedscope.decisions`) says a person looked
and kept it: that issue is no longer flagged for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.decisions import KEEP_PREFIX, split_tags
from embedscope.ingest import UNLABELLED
from embedscope.layout import Layout, write_atomic
from embedscope.quality import QUALITY_TYPES, STAT_COLUMNS, quality_findings

#: Every issue type, in the order a row's ``issues`` lists them.
ISSUE_TYPES = ("label", "exact_duplicate", *QUALITY_TYPES)
#: Separator of the ``issues`` column.
ISSUE_SEPARATOR = ";"
#: How much each issue type asks of a person, as the weight of its score in
#: ``review_priority``: a wrong label or a duplicate corrupts training and evaluation directly,
#: bad exposure or blur often makes an image useless, while odd shapes, odd sizes and missing
#: colour are mostly harmless facts about a file.
IMPORTANCE = {
    "label": 1.0,
    "exact_duplicate": 1.0,
    "near_duplicate": 0.9,
    "dark": 0.8,
    "light": 0.8,
    "blurry": 0.8,
    "low_information": 0.8,
    "grayscale": 0.5,
    "odd_aspect_ratio": 0.5,
    "odd_size": 0.5,
}


def findings_table(rows: pd.DataFrame, per_image: dict, manifest: pd.DataFrame) -> pd.DataFrame:
    """The findings of the embedded images ``rows`` (path, label), from :func:`analyse`'s
    ``per_image`` and the manifest (statistics, duplicates, tags), sorted by
    ``review_priority``."""
    facts = manifest.set_index("path").reindex(rows["path"])
    table = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy()})
    for col in ("mislabel_score", "label_issue", "suggested_label", "suggested_share"):
        table[col] = np.asarray(per_image[col])
    table["outlier_score"] = np.asarray(per_image["outlier_score"], np.float32)
    table["width"] = facts["width"].to_numpy()
    table["height"] = facts["height"].to_numpy()
    table["exact_duplicate_of"] = facts["duplicate_of"].fillna("").to_numpy()
    table["exact_duplicate"] = table["exact_duplicate_of"] != ""
    stats = facts.reindex(columns=[*STAT_COLUMNS, "width", "height"]).reset_index(drop=True)
    stats = stats.apply(pd.to_numeric, errors="coerce")
    quality = quality_findings(stats)
    table = pd.concat([table, quality], axis=1)
    table["label"] = table["label"].astype(object)

    kept = _kept(facts["tags"] if "tags" in facts else pd.Series("", index=facts.index))
    flags = pd.DataFrame(
        {
            "label": table["label_issue"].astype(bool),
            "exact_duplicate": table["exact_duplicate"],
            **{t: table[t].astype(bool) for t in QUALITY_TYPES},
        }
    )
    for t in ISSUE_TYPES:
        flags[t] &= ~kept.map(lambda ks, t=t: t in ks).to_numpy()
    table["label_issue"] = flags["label"].to_numpy()
    table["exact_duplicate"] = flags["exact_duplicate"].to_numpy()
    for t in QUALITY_TYPES:
        table[t] = flags[t].to_numpy()
    table["issues"] = [
        ISSUE_SEPARATOR.join(t for t, on in zip(ISSUE_TYPES, row, strict=True) if on)
        for row in flags[list(ISSUE_TYPES)].to_numpy(bool)
    ]
    twins = _twins(table)
    table["reason"] = [
        "; ".join(_reason(t, r, twins, per_image) for t in issues.split(ISSUE_SEPARATOR) if t)
        for r, issues in zip(table.itertuples(), table["issues"], strict=True)
    ]
    table["review_priority"] = _priority(table, flags).astype(np.float32)
    order = np.argsort(-table["review_priority"].to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _kept(tags: pd.Series) -> pd.Series:
    """The issue types each image's ``keep:<type>`` tags keep."""
    return tags.fillna("").map(
        lambda text: {t[len(KEEP_PREFIX) :] for t in split_tags(text) if t.startswith(KEEP_PREFIX)}
    )


def _score(table: pd.DataFrame, issue: str) -> pd.Series:
    if issue == "label":
        return table["mislabel_score"].astype(float)
    if issue == "exact_duplicate":
        return table["exact_duplicate"].astype(float)
    return table[f"{issue}_score"].astype(float).fillna(0.0)


def _priority(table: pd.DataFrame, flags: pd.DataFrame) -> np.ndarray:
    """1 + the highest :data:`IMPORTANCE`-weighted score among an image's flagged issues
    (flagged images come first, the surest and weightiest first); for an image with no flag,
    its mislabel score (0..1)."""
    best = np.zeros(len(table))
    for t in ISSUE_TYPES:
        best = np.maximum(best, np.where(flags[t], IMPORTANCE[t] * _score(table, t), 0.0))
    return np.where(flags.any(axis=1), 1.0 + best, table["mislabel_score"].astype(float))


def _twins(table: pd.DataFrame) -> dict[int, list[str]]:
    """The first two paths and the size of each near-duplicate group."""
    grouped = table[table["near_duplicate_group"] >= 0].groupby("near_duplicate_group")["path"]
    return {int(g): [*paths.iloc[:2], len(paths)] for g, paths in grouped}


def _reason(issue: str, row, twins: dict, per_image: dict) -> str:
    """One human line for one flagged issue of one image."""
    if issue == "label":
        return _label_reason(row, per_image)
    if issue == "exact_duplicate":
        return f"same bytes as {row.exact_duplicate_of}"
    if issue == "near_duplicate":
        first, second, size = twins[int(row.near_duplicate_group)]
        other = second if first == row.path else first
        more = f" and {size - 2} more" if size > 2 else ""
        return f"looks the same as {other}{more} (same perceptual hash)"
    return {
        "dark": f"dark (its brightest pixels reach {1 - row.dark_score:.0%} brightness)",
        "light": f"light (its darkest pixels are at {row.light_score:.0%} brightness)",
        "blurry": f"blurry (blur score {row.blurry_score:.2f})",
        "low_information": f"low information (score {row.low_information_score:.2f})",
        "grayscale": "no colour (grey levels only)",
        "odd_aspect_ratio": f"odd aspect ratio ({row.width}x{row.height})",
        "odd_size": f"odd size for this dataset ({row.width}x{row.height})",
    }[issue]


def _label_reason(row, per_image: dict) -> str:
    """ "9 of 10 neighbours and the probe (0.93) say coat"."""
    say = row.suggested_label
    votes, k = int(per_image["neighbour_votes"][row.Index]), int(per_image["neighbours"])
    probe = per_image["probe_label"][row.Index]
    share = float(per_image["probe_share"][row.Index])
    if probe == say:
        return f"{votes} of {k} neighbours and the probe ({share:.2f}) say {say}"
    if probe:
        return f"{votes} of {k} neighbours say {say}; the probe says {probe}"
    return f"{votes} of {k} neighbours say {say}"


def issue_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many images each issue type flags (for ``metrics.json``)."""
    issues = table["issues"].str.split(ISSUE_SEPARATOR).explode()
    counts = issues[issues != ""].value_counts()
    return {t: int(counts.get(t, 0)) for t in ISSUE_TYPES} | {
        "images_flagged": int((table["issues"] != "").sum()),
        "labelled_images": int((table["label"] != UNLABELLED).sum()),
    }


def write_findings(table: pd.DataFrame, layout: Layout) -> None:
    """``reports/<name>/findings.csv``, written atomically."""
    text = table.to_csv(index=False, float_format="%.4f")
    write_atomic(layout.findings, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def top_findings(table: pd.DataFrame, n: int = 8) -> dict[str, pd.DataFrame]:
    """The ``n`` images a person should look at first for each issue type that flags any."""
    issues = table["issues"].str.split(ISSUE_SEPARATOR)
    out = {}
    for issue in ISSUE_TYPES:
        rows = table[issues.map(lambda found, issue=issue: issue in found)]
        key = "mislabel_score" if issue == "label" else f"{issue}_score"
        if len(rows):
            by = key if key in rows else "review_priority"
            out[issue] = rows.sort_values(by, ascending=False, kind="stable").head(n)
    return out


#: The findings columns the editors carry per point (the review queue reads them).
POINT_COLUMNS = ("label_issue", "issues", "reason", "review_priority")


def read_findings(layout: Layout) -> pd.DataFrame:
    """``findings.csv`` as written by ``03_reduce`` (text cells stay text, empty never NaN)."""
    if not layout.findings.is_file():
        raise FileNotFoundError(f"no {layout.findings}: run 03_reduce for {layout.name!r} first")
    table = pd.read_csv(layout.findings, dtype={"path": str, "label": str}, keep_default_na=False)
    for col in ("suggested_label", "issues", "reason", "exact_duplicate_of"):
        table[col] = table[col].astype(str)
    return table


def with_findings(points: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """``points`` (one row per image, with ``path``) plus the :data:`POINT_COLUMNS`."""
    extra = findings.set_index("path")[list(POINT_COLUMNS)]
    return points.join(extra, on="path")
