"""Curation decisions: one small CSV format shared by every editor and the next run.

``decisions.csv`` has exactly the columns ``path,label,tags``: ``path`` relative to the dataset
root as in the manifest, ``label`` the new label (empty: unchanged), ``tags`` free text separated
by ``;``, where the tag ``drop`` means "leave this image out". ``explorer.html``, the live panel
and the Dash app write it; ``01_download`` (``make run-all DECISIONS=...``) applies it to the
manifest, never to the source folder. Editors keep a :class:`DecisionLog` of operations, so
undo is one pop and the same log serialises into a Dash store.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from embedscope.ingest import DROPPED_REASON, UNLABELLED, load_manifest, mark_duplicates
from embedscope.layout import Layout, write_atomic, write_parquet

#: The columns of a decisions file, in this order.
COLUMNS = ("path", "label", "tags")
#: The tag that leaves an image out of the next run.
DROP = "drop"
#: Separator of the ``tags`` column.
TAG_SEPARATOR = ";"


class DecisionsError(ValueError):
    """A decisions file that cannot be used; the message is one line saying why."""


def read_decisions(path: str | Path) -> pd.DataFrame:
    """Read and check a decisions file; every cell comes back as text (empty, never NaN)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DecisionsError(f"decisions file {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DecisionsError(f"decisions file {path} is not a UTF-8 CSV file: {reason}") from None
    return validate_decisions(table, source=f"decisions file {path}")


def validate_decisions(table: pd.DataFrame, *, source: str = "decisions") -> pd.DataFrame:
    """``table`` with exactly the columns path,label,tags (in that order), all text."""
    found = [str(c).strip() for c in table.columns]
    if sorted(found) != sorted(COLUMNS):
        raise DecisionsError(
            f"{source} needs exactly the columns {','.join(COLUMNS)}; found {','.join(found)}"
        )
    table = table.set_axis(found, axis=1)[list(COLUMNS)]
    return table.fillna("").astype(str).reset_index(drop=True)


def split_tags(text: str) -> list[str]:
    """The tags of one ``tags`` cell, stripped, empty ones and repeats left out."""
    return list(dict.fromkeys(t.strip() for t in str(text).split(TAG_SEPARATOR) if t.strip()))


def decisions_csv(table: pd.DataFrame) -> str:
    """The CSV text of a decisions table (what every editor downloads or saves)."""
    return validate_decisions(table).to_csv(index=False)


def write_decisions(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a decisions table to ``path`` atomically."""
    text = decisions_csv(table)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _per_path(table: pd.DataFrame) -> pd.DataFrame:
    """One row per path: the last non-empty label wins, tags are united in order."""
    rows = {}
    for path, label, tags in table[list(COLUMNS)].itertuples(index=False):
        old = rows.get(path, ("", []))
        rows[path] = (label.strip() or old[0], list(dict.fromkeys(old[1] + split_tags(tags))))
    return pd.DataFrame(
        [(p, label, TAG_SEPARATOR.join(tags)) for p, (label, tags) in rows.items()],
        columns=list(COLUMNS),
    )


def apply_decisions(manifest: pd.DataFrame, decisions: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A copy of ``manifest`` with the decisions applied, and what they changed.

    Relabelled rows take the new label; ``drop`` turns an ``ok`` row into ``skipped`` with the
    reason ``dropped by decision``; all tags land in a ``tags`` column. Paths the manifest does
    not have change nothing and are listed in ``unknown_paths``.
    """
    table = _per_path(validate_decisions(decisions))
    out = manifest.copy()
    out["tags"] = out["tags"] if "tags" in out.columns else ""
    where = pd.Series(out.index, index=out["path"].astype(str))
    known = table["path"].isin(where.index)
    table, unknown = table[known], table.loc[~known, "path"].tolist()
    at = where[table["path"]].to_numpy()
    tags = table["tags"].map(split_tags)
    new = table["label"].to_numpy() != ""
    relabel = new & (table["label"].to_numpy() != out.loc[at, "label"].astype(str).to_numpy())
    out.loc[at[relabel], "label"] = table["label"].to_numpy()[relabel]
    drop = tags.map(lambda t: DROP in t).to_numpy() & (out.loc[at, "status"] == "ok").to_numpy()
    out.loc[at[drop], ["status", "reason"]] = ["skipped", DROPPED_REASON]
    out.loc[at, "tags"] = table["tags"].to_numpy()
    if drop.any():
        out = mark_duplicates(out)  # a dropped original no longer stands for its copies
    report = {
        "decisions": int(len(decisions)),
        "relabelled": int(relabel.sum()),
        "dropped": int(drop.sum()),
        "tagged": int(tags.map(lambda t: any(x != DROP for x in t)).sum()),
        "unknown": len(unknown),
        "unknown_paths": unknown,
    }
    return out, report


#: The report of a run without a decisions file.
NO_DECISIONS = {
    "file": None,
    "decisions": 0,
    "relabelled": 0,
    "dropped": 0,
    "tagged": 0,
    "unknown": 0,
    "unknown_paths": [],
}


def apply_to_dataset(layout: Layout, decisions: str | Path | None) -> tuple[pd.DataFrame, dict]:
    """Apply a decisions file to ``data/<name>/manifest.parquet`` (rewritten atomically) and
    return the manifest and the counts ``metrics.json`` records; ``None`` changes nothing."""
    manifest, _ = load_manifest(layout)
    if decisions is None or str(decisions) == "":
        return manifest, dict(NO_DECISIONS)
    manifest, report = apply_decisions(manifest, read_decisions(decisions))
    write_parquet(layout.manifest, manifest, point="manifest:write")
    return manifest, {"file": str(Path(decisions).expanduser().resolve()), **report}


def describe(report: dict) -> str:
    """What a decisions run did, one line, then one line per unknown path."""
    if report["file"] is None:
        return "no decisions file"
    head = (
        f"decisions from {report['file']}: {report['relabelled']} relabelled, "
        f"{report['dropped']} dropped, {report['tagged']} tagged, {report['unknown']} unknown"
    )
    lines = [f"unknown path (nothing changed): {p!r}" for p in report["unknown_paths"]]
    return "\n".join([head, *lines])


def suggestions(points: pd.DataFrame, rows: Iterable[int]) -> dict[str, str]:
    """Path -> ``suggested_label`` of ``rows`` of a points table, where the suggestion is a
    real label other than the image's own (what "accept suggestion" relabels)."""
    if "suggested_label" not in points.columns:
        return {}
    sel = points.iloc[list(rows)]
    new = sel["suggested_label"].astype(str)
    keep = (new != sel["label"].astype(str)) & (new != UNLABELLED) & sel["suggested_label"].notna()
    return dict(zip(sel["path"][keep].astype(str), new[keep], strict=True))


def suggestion_text(point: pd.Series) -> str:
    """``suggests flags (73%)`` when a point's suggested label differs from its label."""
    new = point.get("suggested_label")
    if new is None or pd.isna(new) or new in (point["label"], UNLABELLED):
        return ""
    return f"suggests {new} ({float(point['suggested_share']):.0%})"


def counts_line(table: pd.DataFrame) -> str:
    """``N decided (a relabelled, b dropped)``: the counter every editor shows."""
    dropped = int(table["tags"].map(lambda t: DROP in split_tags(t)).sum())
    relabelled = int((table["label"] != "").sum())
    return f"{len(table)} decided ({relabelled} relabelled, {dropped} dropped)"


def _values(op: dict) -> list[str]:
    """An operation's value per path: one for all, or a list (one per path)."""
    value = op["value"]
    return list(value) if isinstance(value, list) else [value] * len(op["paths"])


class DecisionLog:
    """Decisions made in an editor, kept as a list of operations (plain JSON, so a Dash store
    can hold it): ``undo`` removes the last one and ``table`` folds them into the CSV format.

    Paths are the manifest's relative paths, as the points tables carry them.
    """

    def __init__(self, ops: Iterable[dict] | None = None) -> None:
        self.ops: list[dict] = [dict(op) for op in ops or ()]

    def _add(self, kind: str, paths: Iterable[str], value: str) -> None:
        paths = list(dict.fromkeys(str(p) for p in paths))
        if not paths:
            raise ValueError("nothing selected: select some images first")
        self.ops.append({"op": kind, "paths": paths, "value": value})

    def relabel(self, paths: Iterable[str], label: str) -> None:
        label = str(label).strip()
        if not label:
            raise ValueError("a new label cannot be empty")
        self._add("label", paths, label)

    def tag(self, paths: Iterable[str], tag: str) -> None:
        tag = str(tag).strip()
        if not tag or TAG_SEPARATOR in tag:
            raise ValueError(f"a tag must be non-empty text without {TAG_SEPARATOR!r}")
        self._add("tag", paths, tag)

    def drop(self, paths: Iterable[str]) -> None:
        self._add("tag", paths, DROP)

    def relabel_each(self, labels: dict[str, str]) -> None:
        """Give each path its own new label in one step (one undo): "accept suggestion"."""
        labels = {str(p): str(v).strip() for p, v in labels.items() if str(v).strip()}
        if not labels:
            raise ValueError("nothing to relabel: no selected image has a suggestion")
        self.ops.append({"op": "label", "paths": list(labels), "value": list(labels.values())})

    def undo(self) -> dict | None:
        """Forget the last operation; returns it (None when there was none)."""
        return self.ops.pop() if self.ops else None

    @property
    def table(self) -> pd.DataFrame:
        """One row per decided path, in the order they were first decided."""
        rows = [
            (path, *((value, "") if op["op"] == "label" else ("", value)))
            for op in self.ops
            for path, value in zip(op["paths"], _values(op), strict=True)
        ]
        return _per_path(pd.DataFrame(rows, columns=list(COLUMNS)))

    def save(self, path: str | Path) -> Path:
        return write_decisions(self.table, path)
