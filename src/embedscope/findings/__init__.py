"""One findings table: everything the kit thinks is wrong with a dataset, one row per image.

``reports/<name>/findings.csv`` joins the columns of every registered family of findings
(:mod:`embedscope.findings.registry`; one module of this package each: :mod:`.labels`,
:mod:`.duplicates`, :mod:`.quality`, :mod:`.outliers`, :mod:`.leaks`), with a one-line reason a
person reads and a ``review_priority`` to sort by: flagged images first, the surest first. A tag
``keep:<type>`` on an image (a decision, see :mod:`embedscope.decisions`) says a person looked
and kept it: that issue is no longer flagged for it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from embedscope.decisions import split_tags
from embedscope.findings.registry import (
    Column,
    Context,
    Family,
    IssueType,
    columns,
    families,
    issue_types,
    register,
    unregister,
)
from embedscope.layout import Layout, write_atomic
from embedscope.vocabulary import (
    ISSUE_SEPARATOR,
    ISSUES,
    KEEP_PREFIX,
    PRIORITY,
    REASON,
    UNLABELLED,
    issue_type,
)

__all__ = [
    "IMPORTANCE",
    "ISSUE_SEPARATOR",
    "ISSUE_TYPES",
    "POINT_COLUMNS",
    "Column",
    "Context",
    "Family",
    "IssueType",
    "columns",
    "families",
    "findings_table",
    "issue_counts",
    "issue_types",
    "read_findings",
    "register",
    "top_findings",
    "unregister",
    "with_findings",
    "write_findings",
]

#: The issue types of the families this package ships, in the order a row's ``issues`` lists
#: them (:func:`issue_types` has the registered ones, a family added since included).
ISSUE_TYPES = tuple(t.name for t in issue_types())
#: How much each of those types asks of a person: the weight of its score in
#: ``review_priority`` (declared by each type's family module).
IMPORTANCE = {t.name: t.weight for t in issue_types()}


def findings_table(
    rows: pd.DataFrame,
    per_image,
    manifest: pd.DataFrame,
    *,
    quality_thresholds: str = "calibrated",
    leaks: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The findings of the embedded images ``rows`` (path, label), from :func:`analyse`'s
    per-image results and the manifest (statistics, duplicates, tags), sorted by
    ``review_priority``: every registered family's columns, then ``issues``, ``reason``,
    ``review_priority``. ``quality_thresholds="cleanvision"`` flags image quality exactly as
    cleanvision does (see :mod:`embedscope.quality`). ``leaks``
    (:func:`embedscope.findings.leaks.dataset_leaks`: leaks and near-duplicate groups, row for
    row with ``rows``) joins the facts.
    A family may leave its columns out (the leak family does for a dataset without splits):
    its types then flag nothing and are not counted."""
    facts = manifest.set_index("path").reindex(rows["path"]).reset_index()
    if leaks is not None:
        for column in leaks.columns.difference(["path", "split"]):
            facts[column] = leaks[column].to_numpy()
    context = Context(
        rows=rows.reset_index(drop=True),
        per_image=per_image,
        facts=facts,
        quality_thresholds=quality_thresholds,
    )
    table = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy()})
    table["label"] = table["label"].astype(object)
    known = families()
    for family in known:
        found = family.compute(context).reset_index(drop=True)
        for column in family.columns:
            if column.name not in family.legacy and column.name in found:
                table[column.name] = found[column.name].to_numpy()
    types = [t for f in known for t in f.types if t.flag in table]
    kept = _kept(facts["tags"] if "tags" in facts else pd.Series("", index=facts.index))
    flags = pd.DataFrame(
        {
            t.name: table[t.flag].fillna(False).astype(bool).to_numpy()
            & ~kept.map(lambda ks, t=t: t.name in ks).to_numpy(bool)
            for t in types
        },
        index=table.index,
    )
    for t in types:
        table[t.flag] = flags[t.name].to_numpy()
    for family in known:
        for old, new in family.legacy.items():
            table[old] = table[new]
    names = [t.name for t in types]
    table[ISSUES] = [
        ISSUE_SEPARATOR.join(t for t, on in zip(names, row, strict=True) if on)
        for row in flags[names].to_numpy(bool).reshape(len(table), len(names))
    ]
    lines: list[list[str]] = [[] for _ in range(len(table))]
    for t in types:
        at = np.flatnonzero(flags[t.name].to_numpy())
        for i, line in zip(at, t.reason(table, at, context), strict=True):
            lines[i].append(line)
    table[REASON] = ["; ".join(found) for found in lines]
    table[PRIORITY] = _priority(table, flags, types).astype(np.float32)
    table = table[[c.name for c in columns() if c.name in table]]
    order = np.argsort(-table[PRIORITY].to_numpy(), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _kept(tags: pd.Series) -> pd.Series:
    """The issue types each image's ``keep:<type>`` tags keep (an old type name counts as the
    type it became: ``keep:label`` keeps ``mislabel``)."""
    return tags.fillna("").map(
        lambda text: {
            issue_type(t[len(KEEP_PREFIX) :]) for t in split_tags(text) if t.startswith(KEEP_PREFIX)
        }
    )


def _score(table: pd.DataFrame, t: IssueType) -> np.ndarray:
    return pd.to_numeric(table[t.score], errors="coerce").fillna(0.0).to_numpy(float)


def _priority(table: pd.DataFrame, flags: pd.DataFrame, types: list[IssueType]) -> np.ndarray:
    """1 + the highest weighted score among an image's flagged issues (flagged images come
    first, the surest and weightiest first); for an image with no flag, the highest weighted
    score of the types that rank unflagged images (the mislabel score, 0..1)."""
    best = np.zeros(len(table))
    unflagged = np.zeros(len(table))
    for t in types:
        weighted = t.weight * _score(table, t)
        best = np.maximum(best, np.where(flags[t.name], weighted, 0.0))
        if t.ranks_unflagged:
            unflagged = np.maximum(unflagged, weighted)
    return np.where(flags.to_numpy(bool).any(axis=1), 1.0 + best, unflagged)


def issue_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many images each issue type flags (for ``metrics.json``)."""
    issues = table[ISSUES].str.split(ISSUE_SEPARATOR).explode()
    counts = issues[issues != ""].value_counts()
    present = [t for t in issue_types() if t.flag in table]
    return {t.name: int(counts.get(t.name, 0)) for t in present} | {
        "images_flagged": int((table[ISSUES] != "").sum()),
        "labelled_images": int((table["label"] != UNLABELLED).sum()),
    }


def write_findings(table: pd.DataFrame, layout: Layout) -> None:
    """``reports/<name>/findings.csv``, written atomically."""
    text = table.to_csv(index=False, float_format="%.4f")
    write_atomic(layout.findings, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def top_findings(table: pd.DataFrame, n: int = 8) -> dict[str, pd.DataFrame]:
    """The ``n`` images a person should look at first for each issue type that flags any."""
    issues = table[ISSUES].str.split(ISSUE_SEPARATOR)
    out = {}
    for t in issue_types():
        rows = table[issues.map(lambda found, name=t.name: name in found)]
        if len(rows):
            by = t.score if t.score in rows else PRIORITY
            out[t.name] = rows.sort_values(by, ascending=False, kind="stable").head(n)
    return out


#: The findings columns the editors carry per point (the review queue reads them).
POINT_COLUMNS = ("mislabel", ISSUES, REASON, PRIORITY, "near_duplicate_group")


def read_findings(layout: Layout) -> pd.DataFrame:
    """``findings.csv`` as written by ``03_reduce`` (text cells stay text, empty never NaN); a
    file written before a column was renamed gets the new name too."""
    if not layout.findings.is_file():
        raise FileNotFoundError(f"no {layout.findings}: run 03_reduce for {layout.name!r} first")
    table = pd.read_csv(layout.findings, dtype={"path": str, "label": str}, keep_default_na=False)
    for family in families():
        for old, new in family.legacy.items():
            if new not in table and old in table:
                table[new] = table[old]
    if "near_duplicate_group" not in table:  # written before the editors showed groups
        table["near_duplicate_group"] = -1
    for column in columns():
        if column.text and column.name in table:
            table[column.name] = table[column.name].astype(str)
    return table


def with_findings(
    points: pd.DataFrame, findings: pd.DataFrame, optional: Iterable[str] = ()
) -> pd.DataFrame:
    """``points`` (one row per image, with ``path``) plus the :data:`POINT_COLUMNS` and those
    of ``optional`` that ``findings`` has (columns only some datasets get, such as splits)."""
    carried = [*POINT_COLUMNS, *(c for c in optional if c in findings)]
    return points.join(findings.set_index("path")[carried], on="path")
