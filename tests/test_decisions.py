"""The decisions format on real manifests: read, check, apply, log, undo, save."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_classes, tree_digest

from embedscope.decisions import (
    COLUMNS,
    MESSAGES,
    DecisionLog,
    DecisionsError,
    ReviewQueue,
    apply_decisions,
    apply_to_dataset,
    describe,
    keep_tag,
    read_decisions,
)
from embedscope.ingest import DROPPED_REASON, ingest
from embedscope.layout import Layout

EVIL = '<img src=x onerror=alert(1)>; a,b "q".png'


def _dataset(tmp_path: Path) -> tuple[Path, Layout]:
    root = make_classes(tmp_path / "imgs", per_class=2, size=16)
    (root / "red" / "z_copy.png").write_bytes((root / "red" / "red_0.png").read_bytes())
    return root, Layout("set", tmp_path / "data", tmp_path / "reports")


def test_apply_relabels_drops_tags_and_reports_unknown_paths(tmp_path: Path) -> None:
    root, layout = _dataset(tmp_path)
    before = tree_digest(root)
    manifest = ingest(str(root), layout)
    assert (
        manifest.loc[manifest["path"] == "red/z_copy.png", "duplicate_of"].item() == "red/red_0.png"
    )
    table = pd.DataFrame(
        [
            ("blue/blue_0.png", "green", ""),  # relabel
            ("blue/blue_1.jpg", "blue", "odd"),  # same label: tag only, not a relabel
            ("red/red_0.png", "", "drop;keep an eye"),  # drop (and tag)
            ("green/green_0.png", "", " drop "),  # drop
            ("nope/missing.png", "red", "drop"),  # unknown: changes nothing
            ("blue/blue_0.png", "", "later"),  # second row for a path: merged
        ],
        columns=COLUMNS,
    )
    out, report = apply_decisions(manifest, table)
    assert report == {
        "decisions": 6,
        "relabelled": 1,
        "dropped": 2,
        "tagged": 3,
        "unknown": 1,
        "unknown_paths": ["nope/missing.png"],
    }
    by = out.set_index("path")
    assert by.loc["blue/blue_0.png", "label"] == "green"
    assert by.loc["blue/blue_0.png", "tags"] == "later"
    assert by.loc["red/red_0.png", ["status", "reason"]].tolist() == ["skipped", DROPPED_REASON]
    assert by.loc["red/red_0.png", "tags"] == "drop;keep an eye"
    assert by.loc["green/green_0.png", "status"] == "skipped"
    assert pd.isna(by.loc["red/z_copy.png", "duplicate_of"])  # its original is dropped
    assert by.loc["red/z_copy.png", "status"] == "ok" and len(out) == len(manifest)
    assert manifest["status"].eq("ok").all(), "the input manifest is not modified"
    text = describe({"file": "d.csv", **report})
    assert text.splitlines()[1] == "unknown path (nothing changed): 'nope/missing.png'"
    assert tree_digest(root) == before


def test_a_file_round_trip_and_a_plain_rerun_undoes_it(tmp_path: Path) -> None:
    root, layout = _dataset(tmp_path)
    ingest(str(root), layout)
    log = DecisionLog()
    log.relabel(["red/red_1.jpg"], "green")
    log.tag(["red/red_1.jpg", "blue/blue_1.jpg"], "blurry")
    log.drop(["green/green_1.jpg"])
    log.tag(["blue/blue_0.png"], "oops")
    assert log.undo() == {"op": "tag", "paths": ["blue/blue_0.png"], "value": "oops"}
    path = log.save(tmp_path / "out" / "decisions.csv")
    assert path.read_text().splitlines() == [  # sorted by path, whatever the order of edits
        "path,label,tags",
        "blue/blue_1.jpg,,blurry",
        "green/green_1.jpg,,drop",
        "red/red_1.jpg,green,blurry",
    ]
    manifest, report = apply_to_dataset(layout, path)
    assert (report["relabelled"], report["dropped"], report["tagged"]) == (1, 1, 2)
    assert pd.read_parquet(layout.manifest).equals(manifest)  # written back
    # the next run without decisions starts from the folders again
    again = ingest(str(root), layout)
    assert again["status"].eq("ok").all() and again["tags"].eq("").all()
    assert again.set_index("path").loc["red/red_1.jpg", "label"] == "red"
    assert apply_to_dataset(layout, None)[1]["decisions"] == 0


def test_hostile_names_survive_the_csv(tmp_path: Path) -> None:
    log = DecisionLog()
    log.relabel([f"red/{EVIL}"], 'new; label, "quoted"')
    log.save(tmp_path / "d.csv")
    back = read_decisions(tmp_path / "d.csv")
    assert back.values.tolist() == [[f"red/{EVIL}", 'new; label, "quoted"', ""]]


def test_bad_files_and_bad_edits_say_why_in_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.csv": None,
        "cols.csv": "path,label\na.png,b\n",
        "extra.csv": "path,label,tags,note\na.png,b,,x\n",
        "binary.csv": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
        "empty.csv": "",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(DecisionsError) as err:
            read_decisions(path)
        assert len(str(err.value).splitlines()) == 1 and name in str(err.value), name
    ok = tmp_path / "reordered.csv"
    ok.write_text("tags, path,label\ndrop,a.png,\n")  # column order and spaces do not matter
    assert read_decisions(ok).values.tolist() == [["a.png", "", "drop"]]
    log = DecisionLog()
    for bad in (
        lambda: log.relabel(["a"], "  "),
        lambda: log.tag(["a"], "x;y"),
        lambda: log.drop([]),
    ):
        with pytest.raises(ValueError):
            bad()
    assert log.ops == [] and log.undo() is None


def test_the_editor_rules() -> None:
    """The rules all three editors share (the page gets them from here; test_editors_agree
    proves it follows them)."""
    labels = {"red/a.png": "red", "red/b.png": "red", "x.png": "(unlabelled)"}
    log = DecisionLog(labels=labels)
    log.relabel(["red/a.png", "red/b.png"], "green")
    log.relabel(["red/a.png"], " red ")  # its own label again: the relabel is taken back
    assert log.table.values.tolist() == [["red/b.png", "green", ""]]
    log.tag(["red/a.png"], "later")
    log.relabel(["red/a.png"], "blue")
    log.relabel(["red/a.png"], "red")
    assert log.table.values.tolist() == [["red/a.png", "", "later"], ["red/b.png", "green", ""]]
    for bad, message in [
        (lambda: log.relabel(["x.png"], "(unlabelled)"), "placeholder_label"),
        (lambda: log.relabel(["x.png"], " \u3000"), "empty_label"),  # ideographic space
        (lambda: log.tag(["x.png"], "a; b"), "bad_tag"),
        (lambda: log.relabel([], "red"), "nothing_selected"),
        (lambda: log.relabel_each({}), "no_suggestion"),
    ]:
        with pytest.raises(ValueError, match=re.escape(MESSAGES[message])):
            bad()
    log.keep("x.png", ["label", "blurry", "label"])  # one step: one undo
    assert log.table.set_index("path").loc["x.png", "tags"] == "keep:label;keep:blurry"
    log.undo()
    assert "x.png" not in set(log.table["path"]) and keep_tag(" dark ") == "keep:dark"


def test_review_queue_order_filter_and_progress() -> None:
    points = pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png", "d.png", "e.png"],
            "label": ["red", "red", "blue", "blue", "blue"],
            "suggested_label": ["blue", "red", "red", "(unlabelled)", "blue"],
            "issues": ["label", "", "label;dark", "near_duplicate", "dark"],
            "reason": ["9 of 10 say blue", "", "too dark", "a copy", "too dark"],
            "review_priority": [0.5, 0.0, 0.9, 0.5, 0.1],
        }
    )
    queue = ReviewQueue(points)
    assert queue.rows == [2, 0, 3, 4]  # by priority, ties in row order
    assert queue.types == ["label", "dark", "near_duplicate"]
    assert queue.options()[0] == ("all issues (4)", "") and queue.entries("dark") == [2, 4]
    log = DecisionLog(labels=dict(zip(points["path"], points["label"], strict=True)))
    assert queue.decide(log, 0, "label", "accept") and queue.decide(log, 4, "", "keep")
    with pytest.raises(ValueError, match=MESSAGES["no_suggestion"]):
        queue.decide(log, 3, "", "accept")  # the suggestion is the placeholder
    assert not queue.decide(log, 2, "dark", "tag", "check")  # typed: the queue stays
    assert queue.progress(log.table) == "3 of 4 reviewed"
    assert queue.progress(log.table, "dark") == "2 of 2 reviewed"
    assert log.table.values.tolist() == [
        ["a.png", "blue", ""], ["c.png", "", "check"], ["e.png", "", "keep:dark"],
    ]  # fmt: skip
    assert queue.position("dark", "e.png") == 1 and queue.position("label", "zzz") == 0
    assert ReviewQueue(points.drop(columns="issues")).rows == []
