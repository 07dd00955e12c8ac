"""The registry of finding families: what an issue type is, in one declaration.

A family (labels, duplicates, image quality, outliers, ...) is one module of this package with
a module-level ``FAMILY``: the columns it adds to ``findings.csv`` and how to compute them, and
its issue types, each with its name (the word in ``issues``, in ``keep:<type>`` tags and in the
editors' review filter), flag column ``<type>``, score column ``<type>_score`` (0..1, higher =
worse), weight in ``review_priority`` and one-line reason. The findings table, the counts in
``metrics.json``, the review queue's filter and the documentation's column table all follow it:
adding an issue type is adding (or editing) one module. :func:`register` adds a family from
elsewhere (a test's toy type, a user's own check).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.vocabulary import ISSUE_ALIASES, ISSUES, LABEL, PATH, PRIORITY, REASON


@dataclass(frozen=True)
class Context:
    """What a family computes its columns from, row for row with ``rows``."""

    #: The embedded images: ``path`` and ``label``.
    rows: pd.DataFrame
    #: :func:`embedscope.analyse.analyse`'s per-image results (any mapping of its names).
    per_image: Mapping
    #: The manifest's row of each image (statistics, size, duplicates, tags), index 0..n-1.
    facts: pd.DataFrame
    #: Which image-quality thresholds flag (:data:`embedscope.quality.THRESHOLD_MODES`).
    quality_thresholds: str = "calibrated"


#: ``reason(table, at, context)``: one line per row position in ``at`` (the rows flagged for
#: the type), from the findings table as computed so far.
Reason = Callable[[pd.DataFrame, np.ndarray, Context], list[str]]


@dataclass(frozen=True)
class IssueType:
    """One issue type: flag column ``name``, score column ``name + "_score"``."""

    name: str
    #: How much the type asks of a person: the weight of its score in ``review_priority``.
    weight: float
    reason: Reason
    #: Whether an unflagged image is still ranked by this score (the surest doubtful first).
    ranks_unflagged: bool = False
    #: What the column table in the documentation says the type flags.
    doc: str = ""

    @property
    def flag(self) -> str:
        return self.name

    @property
    def score(self) -> str:
        return f"{self.name}_score"


@dataclass(frozen=True)
class Column:
    """A column a family adds, with what the documentation says of it."""

    name: str
    doc: str
    #: Text cells (``read_findings`` keeps them text: empty, never NaN).
    text: bool = False


@dataclass(frozen=True)
class Family:
    """One family of findings: its columns (in ``findings.csv``'s order) and issue types."""

    name: str
    #: Where its columns and types come among the families (lower first).
    order: int
    columns: tuple[Column, ...]
    #: The columns' values for ``context.rows`` (a frame with at least every non-legacy column).
    compute: Callable[[Context], pd.DataFrame]
    types: tuple[IssueType, ...] = ()
    #: Old column -> the column it repeats: written for readers of earlier files.
    legacy: Mapping[str, str] = field(default_factory=dict)


#: Columns around the families' own: first, and the three every finding shares, last.
LEAD_COLUMNS = (
    Column(PATH, "the image, relative to the dataset root", text=True),
    Column(LABEL, "its label (after decisions)", text=True),
)
TAIL_COLUMNS = (
    Column(ISSUES, "the issue types that flag the image, `;`-separated", text=True),
    Column(REASON, "one line per issue, `; `-separated", text=True),
    Column(
        PRIORITY,
        "1 + the highest weighted score among the flagged issues (weights: see the issue "
        "types); for an image with no flag, its ranking score (the mislabel score), 0..1",
    ),
)

_FAMILIES: dict[str, Family] = {}
_DISCOVERED = False


def register(family: Family) -> Family:
    """Add ``family``; a type or column another family already has is refused (one line)."""
    taken_types = {t.name for f in _FAMILIES.values() for t in f.types}
    taken_columns = {c for f in _FAMILIES.values() for c in _names(f)}
    taken_columns |= {c.name for c in (*LEAD_COLUMNS, *TAIL_COLUMNS)}
    for t in family.types:
        if t.name in taken_types or t.name in ISSUE_ALIASES:
            raise ValueError(f"issue type {t.name!r} is already registered")
    clash = sorted(taken_columns & set(_names(family)))
    if family.name in _FAMILIES or clash:
        raise ValueError(f"family {family.name!r} or its columns {clash} already registered")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Forget the family ``name`` (a test's toy family, once the test is done)."""
    _FAMILIES.pop(name, None)


def _names(family: Family) -> list[str]:
    return [c.name for c in family.columns]


def _discover() -> None:
    """Register the ``FAMILY`` of every module of this package, once."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{package}.{info.name}")
        found = getattr(module, "FAMILY", None)
        if isinstance(found, Family) and found.name not in _FAMILIES:
            register(found)


def families() -> list[Family]:
    """The registered families, in their order."""
    _discover()
    return sorted(_FAMILIES.values(), key=lambda f: (f.order, f.name))


def issue_types() -> list[IssueType]:
    """Every registered issue type, in the order a row's ``issues`` lists them."""
    return [t for f in families() for t in f.types]


def columns() -> list[Column]:
    """Every column of ``findings.csv``, in order."""
    return [*LEAD_COLUMNS, *(c for f in families() for c in f.columns), *TAIL_COLUMNS]
