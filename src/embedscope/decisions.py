"""Curation decisions: one small CSV format shared by every editor and the next run.

``decisions.csv`` has exactly the columns ``path,label,tags``: ``path`` relative to the dataset
root as in the manifest, ``label`` the new label (empty: unchanged), ``tags`` free text separated
by ``;``, where the tag ``drop`` means "leave this image out". ``explorer.html``, the live panel
and the Dash app write it; ``01_download`` (``make run-all DECISIONS=...``) applies it to the
manifest, never to the source folder. Editors keep a :class:`DecisionLog` of operations, so
undo is one pop and the same log serialises into a Dash store.

Decisions add up over rounds: each dataset keeps every decision made for it in
``data/<name>/decisions.csv`` (:attr:`~embedscope.layout.Layout.decisions`). A ``DECISIONS=``
file merges into it (:func:`merge_decisions`: per path the later row replaces the earlier one
whole, since an editor writes an image's complete state; a row with neither label nor tags takes
the image's decisions back), and every run applies all of it. The editors open with it as their
starting state (``base``), so what they save is the complete set again, rows for images no
longer on the map (dropped) included.

The rules every editor follows live here, once: ``explorer.html`` receives them from
:func:`page_rules` (constants, messages) and from the points it is written with (which
suggestion can be accepted, the review queue), and a test drives the same edits through the page
and through :class:`DecisionLog` and compares the files byte for byte:

- a relabel to the image's own label is no decision (it takes back an earlier relabel);
- no image is given the placeholder label ``(unlabelled)``; "accept suggestion" applies only
  where the suggestion is a real label other than the image's own;
- a tag is one piece of text: one with ``;`` (the separator) is refused, never split;
- ``decisions.csv`` lists its rows sorted by path (code point order), whatever the editor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from embedscope.ingest import load_manifest, mark_duplicates
from embedscope.layout import Layout, locked, write_atomic, write_parquet
from embedscope.vocabulary import (  # the tag words and findings columns, re-exported here
    DECISION_COLUMNS,
    DROP,
    DROPPED_REASON,
    ISSUES,
    KEEP_PREFIX,
    ORIGINAL_LABEL,
    PRIORITY,
    REASON,
    SUGGESTED_LABEL,
    SUGGESTED_SHARE,
    TAG_SEPARATOR,
    UNLABELLED,
)

#: The columns of a decisions file, in this order.
COLUMNS = DECISION_COLUMNS
#: Characters ``str.strip`` removes: the page trims typed text with exactly these.
WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
#: What an editor says when it refuses an edit or has nothing to show; the same in all three.
MESSAGES = {
    "nothing_selected": "nothing selected: select some images first",
    "empty_label": "a new label cannot be empty",
    "placeholder_label": f"{UNLABELLED} is not a label: type the class name",
    "bad_tag": f"a tag must be non-empty text without {TAG_SEPARATOR!r}",
    "no_suggestion": "nothing to relabel: no selected image has a suggestion",
    "no_findings": "no findings: the review queue is empty",
    "queue_done": "nothing to review for this issue",
    "no_other": "nothing shown beside this image to drop",
    "reviewed": "{reviewed} of {total} reviewed",
    "position": "image {position} of {total}",
}
#: Column of :func:`dataset_decisions`: a decided path's label before decisions ("" if unknown).
WAS = "was"


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


def keep_tag(issue: str) -> str:
    """The tag that keeps an image unflagged for ``issue`` (``keep:label``, ``keep:blurry``)."""
    return check_tag(f"{KEEP_PREFIX}{str(issue).strip()}")


def check_label(label: str) -> str:
    """``label`` stripped, or a one-line refusal (empty, or the placeholder of no label)."""
    label = str(label).strip()
    if not label:
        raise ValueError(MESSAGES["empty_label"])
    if label == UNLABELLED:
        raise ValueError(MESSAGES["placeholder_label"])
    return label


def check_tag(tag: str) -> str:
    """``tag`` stripped, or a one-line refusal (empty, or holding the separator)."""
    tag = str(tag).strip()
    if not tag or TAG_SEPARATOR in tag:
        raise ValueError(MESSAGES["bad_tag"])
    return tag


def split_tags(text: str) -> list[str]:
    """The tags of one ``tags`` cell, stripped, empty ones and repeats left out."""
    return list(dict.fromkeys(t.strip() for t in str(text).split(TAG_SEPARATOR) if t.strip()))


def _csv_field(text: str) -> str:
    """RFC 4180: quoted (inner quotes doubled) when it holds a comma, quote or line break."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def decisions_csv(table: pd.DataFrame) -> str:
    """The CSV text of a decisions table (what every editor downloads or saves), written
    field by field with the page's rule (:func:`_csv_field`, ``\\n`` line ends) so both sides'
    files are the same bytes on every platform."""
    rows = [COLUMNS, *validate_decisions(table).itertuples(index=False)]
    return "".join(",".join(_csv_field(str(v)) for v in row) + "\n" for row in rows)


def write_decisions(table: pd.DataFrame, path: str | Path, point: str | None = None) -> Path:
    """Write a decisions table to ``path`` atomically (``point``: a fault point, for tests)."""
    text = decisions_csv(table)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), len(text), point)


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
    if ORIGINAL_LABEL not in out.columns:  # what a relabel changed, for the editors' "was"
        out[ORIGINAL_LABEL] = out["label"]
    where = pd.Series(out.index, index=out["path"].astype(str))
    known = table["path"].isin(where.index)
    table, unknown = table[known], table.loc[~known, "path"].tolist()
    at = where[table["path"]].to_numpy(dtype=np.int64)  # int even when empty
    tags = table["tags"].map(split_tags)
    new = table["label"].to_numpy() != ""
    relabel = new & (table["label"].to_numpy() != out.loc[at, "label"].astype(str).to_numpy())
    out.loc[at[relabel], "label"] = table["label"].to_numpy()[relabel]
    drop = (
        tags.map(lambda t: DROP in t).to_numpy(dtype=bool)
        & (out.loc[at, "status"] == "ok").to_numpy()
    )
    out.loc[at[drop], ["status", "reason"]] = ["skipped", DROPPED_REASON]
    out.loc[at, "tags"] = table["tags"].to_numpy()
    if drop.any():
        out = mark_duplicates(out)  # a dropped original no longer stands for its copies
    report = {
        "decisions": int(len(decisions)),
        "relabelled": int(relabel.sum()),
        "dropped": int(drop.sum()),
        "tagged": int(tags.map(lambda t: any(x != DROP for x in t)).astype(bool).sum()),
        "unknown": len(unknown),
        "unknown_paths": unknown,
    }
    return out, report


def merge_decisions(kept: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    """``kept`` with ``later``'s decisions on top, one row per path sorted by path.

    Per path the later row replaces the kept one whole (label and tags): an editor's file holds
    each image's complete state. A path whose later rows have neither label nor tags has its
    decisions taken back (no row left). Several rows for one path in one file fold first, as
    :func:`apply_decisions` folds them."""
    state = {p: (lab, tags) for p, lab, tags in _per_path(validate_decisions(kept)).values}
    for path, label, tags in _per_path(validate_decisions(later)).itertuples(index=False):
        tags = TAG_SEPARATOR.join(split_tags(tags))
        if label or tags:
            state[path] = (label, tags)
        else:
            state.pop(path, None)
    rows = [r for r in sorted((p, *v) for p, v in state.items()) if r[1] or r[2]]
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=object).astype(str)


def read_kept(layout: Layout) -> pd.DataFrame:
    """The decisions ``data/<name>/decisions.csv`` keeps (an empty table when it has none)."""
    return _read_or_empty(layout.decisions)


def _read_or_empty(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS), dtype=str)
    return read_decisions(path)


def merge_into(path: str | Path, later: pd.DataFrame, point: str | None = None) -> pd.DataFrame:
    """Merge ``later`` into the kept decisions file ``path`` (:func:`merge_decisions`), under a
    lock on its folder, written atomically; returns what the file keeps now. Every writer of a
    dataset's decisions goes through here: a run's ``DECISIONS=`` and the JupyterLab panel."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):  # the folder: no lock file among the sample's images
        kept = merge_decisions(_read_or_empty(path), later)
        write_decisions(kept, path, point)
    return kept


#: The report of a run without decisions, given or kept.
NO_DECISIONS = {
    "file": None,
    "kept": None,
    "merged": 0,
    "decisions": 0,
    "relabelled": 0,
    "dropped": 0,
    "tagged": 0,
    "unknown": 0,
    "unknown_paths": [],
}


def apply_to_dataset(layout: Layout, decisions: str | Path | None) -> tuple[pd.DataFrame, dict]:
    """Merge a decisions file (if any) into ``data/<name>/decisions.csv``, apply everything
    that file keeps to ``data/<name>/manifest.parquet`` (both rewritten atomically) and return
    the manifest and the counts ``metrics.json`` records (``decisions``: rows applied, over
    every round; ``merged``: rows the given file had). The read-merge-write of the kept file
    runs under a lock, so concurrent runs of one dataset never lose a merge."""
    manifest, _ = load_manifest(layout)
    given = None if decisions is None or str(decisions) == "" else read_decisions(decisions)
    kept = read_kept(layout) if given is None else merge_into(layout.decisions, given)
    if given is None and not len(kept):
        return manifest, dict(NO_DECISIONS)
    manifest, report = apply_decisions(manifest, kept)
    write_parquet(layout.manifest, manifest, point="manifest:write")
    return manifest, {
        **NO_DECISIONS,
        "file": None if given is None else str(Path(decisions).expanduser().resolve()),
        "kept": str(layout.decisions),
        "merged": 0 if given is None else len(given),
        **report,
    }


def dataset_decisions(layout: Layout) -> pd.DataFrame:
    """What the editors open with: the decisions ``data/<name>/decisions.csv`` keeps (already
    applied to the points) and, in column ``was``, each path's label before any decision."""
    kept = read_kept(layout)
    manifest, _ = load_manifest(layout)
    column = ORIGINAL_LABEL if ORIGINAL_LABEL in manifest.columns else "label"
    before = manifest.set_index(manifest["path"].astype(str))[column].fillna(UNLABELLED)
    was = before.reindex(kept["path"]).fillna("").astype(str).to_numpy()
    return kept.assign(**{WAS: was})


def own_labels(points: pd.DataFrame, base: pd.DataFrame | None = None) -> dict[str, str]:
    """Path -> each point's own label, the one a relabel back to takes a decision back: its
    label, or for an image ``base`` (:func:`dataset_decisions`) relabelled, the label before."""
    labels = points["label"].fillna(UNLABELLED).astype(str).replace("", UNLABELLED)
    own = dict(zip(points["path"].astype(str), labels, strict=True))
    if base is not None and WAS in base.columns:
        for path, was in zip(base["path"], base[WAS], strict=True):
            if was and path in own:
                own[path] = was
    return own


def describe(report: dict) -> str:
    """What a decisions run did, one line, then one line per unknown path."""
    if report["file"] is None and not report.get("kept"):
        return "no decisions file"
    given = f"decisions from {report['file']}" if report["file"] else "decisions"
    if report.get("kept"):
        given += (
            f" merged into {report['kept']}" if report["file"] else f" kept in {report['kept']}"
        )
    head = (
        f"{given}: {report['decisions']} applied, {report['relabelled']} relabelled, "
        f"{report['dropped']} dropped, {report['tagged']} tagged, {report['unknown']} unknown"
    )
    lines = [f"unknown path (nothing changed): {p!r}" for p in report["unknown_paths"]]
    return "\n".join([head, *lines])


def offered(labels: Iterable, suggested: Iterable) -> np.ndarray:
    """Whether each image's suggestion can be accepted: a real label other than its own."""
    labels = pd.Series(list(labels), dtype=object).astype(str)
    new = pd.Series(list(suggested), dtype=object)
    ok = new.notna() & ~new.isin([""]) & (new.astype(str) != labels) & (new != UNLABELLED)
    return ok.to_numpy(dtype=bool)


def suggestions(points: pd.DataFrame, rows: Iterable[int]) -> dict[str, str]:
    """Path -> ``suggested_label`` of ``rows`` of a points table where it can be accepted
    (:func:`offered`): what "accept suggestion" relabels."""
    if SUGGESTED_LABEL not in points.columns:
        return {}
    sel = points.iloc[list(rows)]
    keep = offered(sel["label"], sel[SUGGESTED_LABEL])
    paths, labels = sel["path"][keep].astype(str), sel[SUGGESTED_LABEL][keep].astype(str)
    return dict(zip(paths, labels, strict=True))


def suggestion_text(point: pd.Series) -> str:
    """``suggests flags (73%)`` when a point's suggestion can be accepted."""
    new = point.get(SUGGESTED_LABEL)
    if new is None or not offered([point["label"]], [new])[0]:
        return ""
    return f"suggests {new} ({float(point[SUGGESTED_SHARE]):.0%})"


def counts_line(table: pd.DataFrame) -> str:
    """``N decided (a relabelled, b dropped)``: the counter every editor shows (rows that take
    an earlier round's decisions back are no decision)."""
    table = table[(table["label"] != "") | (table["tags"] != "")]
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

    Paths are the manifest's relative paths, as the points tables carry them; ``labels`` maps
    them to their own labels (:func:`own_labels`), so a relabel back to an image's own label
    takes the decision back. ``base`` (path,label,tags: the dataset's kept decisions, see
    :func:`dataset_decisions`) is where the log starts: ``table`` is the complete set, base
    rows no edit touched included, and a row with neither label nor tags for a base path this
    editor took back (no undo reaches past the base).
    """

    def __init__(
        self,
        ops: Iterable[dict] | None = None,
        labels: Mapping[str, str] | None = None,
        base: pd.DataFrame | None = None,
    ) -> None:
        self.ops: list[dict] = [dict(op) for op in ops or ()]
        self.labels = dict(labels or {})
        self.base: dict[str, tuple[str, list[str]]] = {}
        rows = () if base is None else validate_decisions(base[list(COLUMNS)]).values
        for path, label, tags in rows:
            label = label.strip()
            self.base[path] = ("" if label == self.labels.get(path) else label, split_tags(tags))

    def _add(self, kind: str, paths: Iterable[str], value: str | list[str]) -> None:
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError(MESSAGES["nothing_selected"])
        self.ops.append({"op": kind, "paths": paths, "value": value})

    def relabel(self, paths: Iterable[str], label: str) -> None:
        label = check_label(label)
        self._add("label", dict.fromkeys(paths), label)

    def tag(self, paths: Iterable[str], tag: str) -> None:
        tag = check_tag(tag)
        self._add("tag", dict.fromkeys(paths), tag)

    def drop(self, paths: Iterable[str]) -> None:
        self._add("tag", dict.fromkeys(paths), DROP)

    def keep(self, path: str, issues: Iterable[str]) -> None:
        """Tag one image ``keep:<issue>`` for each of ``issues``, in one step (one undo)."""
        tags = list(dict.fromkeys(keep_tag(i) for i in issues))
        if not tags:
            raise ValueError(MESSAGES["queue_done"])
        self._add("tag", [str(path)] * len(tags), tags)

    def relabel_each(self, labels: dict[str, str]) -> None:
        """Give each path its own new label in one step (one undo): "accept suggestion"."""
        labels = {str(p): check_label(v) for p, v in labels.items()}
        if not labels:
            raise ValueError(MESSAGES["no_suggestion"])
        self._add("label", labels, list(labels.values()))

    def undo(self) -> dict | None:
        """Forget the last operation; returns it (None when there was none)."""
        return self.ops.pop() if self.ops else None

    @property
    def table(self) -> pd.DataFrame:
        """One row per decided path, sorted by path: its new label (empty when it has none or
        was given its own back) and its tags in the order they were added."""
        state: dict[str, tuple[str, list[str]]] = dict(self.base)
        for op in self.ops:
            for path, value in zip(op["paths"], _values(op), strict=True):
                label, tags = state.get(path, ("", []))
                if op["op"] == "label":
                    label = "" if value == self.labels.get(path) else value
                elif value not in tags:
                    tags = [*tags, value]
                state[path] = (label, tags)
        rows = sorted((p, label, TAG_SEPARATOR.join(t)) for p, (label, t) in state.items())
        rows = [r for r in rows if r[1] or r[2] or r[0] in self.base]
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def save(self, path: str | Path) -> Path:
        return write_decisions(self.table, path)


#: The actions of a review queue: the keys a, k, d, t (the page binds them) and the typed ones.
#: ``drop_other`` drops what the queue shows beside an image (:meth:`ReviewQueue.beside`): a
#: leak's train copy, the other members of its near-duplicate group.
REVIEW_KEYS = {"a": "accept", "k": "keep", "d": "drop", "t": "drop_other"}
#: The most members of a near-duplicate group shown beside one of them (and dropped by t).
MAX_OTHERS = 24


class ReviewQueue:
    """The flagged images of a points table (``issues`` not empty), most urgent first
    (descending ``review_priority``, ties in row order), with the issue types they are
    flagged for, taken from the data: the review queue of every editor."""

    def __init__(self, points: pd.DataFrame) -> None:
        self.points = points.reset_index(drop=True)
        n = len(self.points)
        text = self._text(ISSUES)
        priority = pd.to_numeric(
            self.points[PRIORITY] if PRIORITY in self.points else pd.Series(np.zeros(n)),
            errors="coerce",
        )
        flagged = np.flatnonzero(text != "")
        order = flagged[np.lexsort((flagged, -priority.fillna(0).to_numpy()[flagged]))]
        self.rows: list[int] = order.tolist()
        self.issues = {r: split_tags(text[r]) for r in self.rows}
        self.reasons = dict(zip(self.rows, self._text(REASON)[self.rows].tolist(), strict=True))
        counts: dict[str, int] = {}
        for r in self.rows:
            for t in self.issues[r]:
                counts[t] = counts.get(t, 0) + 1
        #: Issue types, most frequent first (ties: the first met in queue order).
        self.types = sorted(counts, key=lambda t: -counts[t])
        self.counts = counts
        #: Row -> the rows shown beside it in the queue (:meth:`_others`): its leak's
        #: source first (``sources`` of them: 0 or 1), then its near-duplicate group.
        self.others, self.sources = self._others()

    def beside(self, row: int, issue: str = "") -> list[int]:
        """The rows shown beside ``row`` (and dropped by ``t``) under the filter ``issue``:
        reviewing leaks, only its train copy; near duplicates, only the rest of its group;
        else both (a leak that is also in a near-duplicate group in its own split)."""
        others, cut = self.others.get(row, []), self.sources.get(row, 0)
        if issue == "leak":
            return others[:cut]
        return others[cut:] if issue == "near_duplicate" else others

    def _others(self) -> tuple[dict[int, list[int]], dict[int, int]]:
        """The rows shown beside each flagged image, large: for a leak its source
        (``leak_of``), for a near duplicate the other members of its group (the first
        :data:`MAX_OTHERS`, in row order); [] for none. And how many of them lead as the
        leak's source (0 or 1)."""
        out: dict[int, list[int]] = {r: [] for r in self.rows}
        sources = dict.fromkeys(self.rows, 0)
        leaks = [r for r in self.rows if "leak" in self.issues[r]]
        if leaks and "leak_of" in self.points:
            paths = self.points["path"].astype(str)
            row_of = dict(zip(paths, range(len(paths)), strict=True))
            for r in leaks:
                source = row_of.get(str(self.points["leak_of"].iat[r] or ""))
                if source is not None:
                    out[r].append(source)
                    sources[r] = 1
        near = [r for r in self.rows if "near_duplicate" in self.issues[r]]
        if near and "near_duplicate_group" in self.points:
            raw = pd.to_numeric(self.points["near_duplicate_group"], errors="coerce")
            group = raw.fillna(-1).to_numpy(np.int64)
            grouped = np.flatnonzero(group >= 0)
            members: dict[int, list[int]] = {}
            for j in grouped[np.argsort(group[grouped], kind="stable")].tolist():
                members.setdefault(int(group[j]), []).append(j)
            for r in near:
                mine = members.get(int(group[r]), [])
                out[r] += [j for j in mine if j != r and j not in out[r]][:MAX_OTHERS]
        return out, sources

    def _text(self, column: str) -> np.ndarray:
        if column not in self.points:
            return np.full(len(self.points), "", dtype=object)
        return self.points[column].fillna("").astype(str).to_numpy(dtype=object)

    def options(self) -> list[tuple[str, str]]:
        """(text, value) of the issue filter: every issue, then each type with its count."""
        return [(f"all issues ({len(self.rows)})", "")] + [
            (f"{t} ({self.counts[t]})", t) for t in self.types
        ]

    def entries(self, issue: str = "") -> list[int]:
        """The queue's rows, in order, flagged for ``issue`` (every flagged row for "")."""
        return [r for r in self.rows if not issue or issue in self.issues[r]]

    def position(self, issue: str, path: str | None) -> int:
        """Where ``path`` stands among :meth:`entries` (the start when it is not there)."""
        paths = self.points["path"].astype(str).to_numpy()[self.entries(issue)].tolist()
        return paths.index(path) if path in paths else 0

    def progress(self, table: pd.DataFrame, issue: str = "") -> str:
        """``37 of 534 reviewed``: images of the (filtered) queue with a decision, or whose
        :meth:`beside` it all have one (``t`` dropped a leak's train copy: that leak is settled)."""
        entries = self.entries(issue)
        decided = set(table["path"][(table["label"] != "") | (table["tags"] != "")])
        paths = self.points["path"].astype(str).to_numpy()

        def settled(r: int) -> bool:
            others = self.beside(r, issue)
            return paths[r] in decided or (
                bool(others) and all(paths[j] in decided for j in others)
            )

        done = sum(settled(r) for r in entries)
        return MESSAGES["reviewed"].format(reviewed=done, total=len(entries))

    def decide(self, log: DecisionLog, row: int, issue: str, action: str, text: str = "") -> bool:
        """Record ``action`` for the image at ``row``: accept its suggestion, keep it (tag
        ``keep:<type>`` for the filtered issue, or for each issue it has), drop it, or set the
        typed ``label`` or ``tag``; ``drop_other`` drops the images shown beside it
        (:meth:`beside`). True when the queue moves on (accept, keep, drop, drop_other)."""
        path = str(self.points["path"][row])
        others = [str(self.points["path"].iat[j]) for j in self.beside(row, issue)]
        act = {
            "accept": lambda: log.relabel_each(suggestions(self.points, [row])),
            "keep": lambda: log.keep(path, [issue] if issue else self.issues[row]),
            "drop": lambda: log.drop([path]),
            "drop_other": lambda: log.drop(others) if others else _refuse("no_other"),
            "label": lambda: log.relabel([path], text),
            "tag": lambda: log.tag([path], text),
        }[action]
        act()
        return action in REVIEW_KEYS.values()

    def page_data(self) -> dict[str, Any]:
        """What ``explorer.html`` needs of the queue: rows in order, each one's issue types
        (as codes into ``types``) and reason, and the filter's options."""
        code = {t: k for k, t in enumerate(self.types)}
        return {
            "rows": self.rows,
            "types": self.types,
            "options": self.options(),
            "issues": [[code[t] for t in self.issues[r]] for r in self.rows],
            "reason": [self.reasons[r] for r in self.rows],
            "others": [self.others[r] for r in self.rows],
            "sources": [self.sources[r] for r in self.rows],
        }


def _refuse(message: str) -> NoReturn:
    """A review action that cannot apply: its one-line message, as the page says it."""
    raise ValueError(MESSAGES[message])


def page_rules() -> dict[str, Any]:
    """The constants and messages of these rules, as ``explorer.html``'s script reads them."""
    return {
        "unlabelled": UNLABELLED,
        "drop": DROP,
        "separator": TAG_SEPARATOR,
        "keepPrefix": KEEP_PREFIX,
        "whitespace": WHITESPACE,
        "keys": REVIEW_KEYS,
        "messages": MESSAGES,
    }
