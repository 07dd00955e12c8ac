"""The decisions format on real manifests: read, check, apply, log, undo, save."""

from __future__ import annotations

import multiprocessing
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
    counts_line,
    dataset_decisions,
    describe,
    keep_tag,
    merge_decisions,
    own_labels,
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


def test_a_file_round_trip_a_plain_rerun_keeps_it_and_deleting_starts_over(
    tmp_path: Path,
) -> None:
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
    assert layout.decisions.read_text() == path.read_text()  # kept for the dataset
    # the next run without decisions ingests the folders again, then applies the kept ones
    again = ingest(str(root), layout)
    assert again["status"].eq("ok").all() and again["tags"].eq("").all()
    manifest, report = apply_to_dataset(layout, None)
    assert (report["file"], report["kept"], report["decisions"]) == (None, str(layout.decisions), 3)
    by = manifest.set_index("path")
    assert by.loc["red/red_1.jpg", ["label", "original_label"]].tolist() == ["green", "red"]
    assert describe(report).startswith(f"decisions kept in {layout.decisions}: 3 applied")
    layout.decisions.unlink()  # start over
    ingest(str(root), layout)
    manifest, report = apply_to_dataset(layout, None)
    assert report["decisions"] == 0 and describe(report) == "no decisions file"
    assert manifest.set_index("path").loc["red/red_1.jpg", "label"] == "red"


def test_rounds_merge_later_rows_win_and_an_empty_row_takes_back(tmp_path: Path) -> None:
    """Per path a later file's row replaces the kept one whole; ``path,,`` takes it back; rows
    for paths the dataset lacks are kept (the file may come back)."""
    root, layout = _dataset(tmp_path)
    files = {
        "r1": "path,label,tags\nred/red_1.jpg,green,blurry\nblue/blue_0.png,,drop\nnope.png,,drop",
        "r2": "path,label,tags\nred/red_1.jpg,,check\ngreen/green_0.png,blue,\n",
        "r3": "path,label,tags\nblue/blue_0.png,,\ngreen/green_0.png,, x ;x\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.csv").write_text(text)
        ingest(str(root), layout)
        manifest, report = apply_to_dataset(layout, tmp_path / f"{name}.csv")
    assert layout.decisions.read_text().splitlines() == [
        "path,label,tags",
        "green/green_0.png,,x",  # r3's row replaced r2's relabel whole
        "nope.png,,drop",
        "red/red_1.jpg,,check",  # r2's row replaced r1's (label and tag)
    ]  # blue/blue_0.png: r3 took its drop back
    by = manifest.set_index("path")
    assert by.loc["blue/blue_0.png", "status"] == "ok" and by.loc["red/red_1.jpg", "label"] == "red"
    assert (report["merged"], report["decisions"], report["unknown_paths"]) == (2, 3, ["nope.png"])
    kept = read_decisions(layout.decisions)
    assert merge_decisions(kept, kept).equals(kept), "merging the complete set changes nothing"
    twice = pd.DataFrame([("a.png", "", "drop"), ("a.png", "", "")], columns=COLUMNS)
    assert merge_decisions(kept, twice).set_index("path").loc["a.png", "tags"] == "drop"


def _merge_one(args: tuple[Layout, Path]) -> int:
    return apply_to_dataset(*args)[1]["merged"]


def test_concurrent_merges_into_one_dataset_lose_nothing(tmp_path: Path) -> None:
    root, layout = _dataset(tmp_path)
    ingest(str(root), layout)
    files = []
    for k in range(6):
        files.append(tmp_path / f"d{k}.csv")
        files[-1].write_text(f"path,label,tags\nimg{k}.png,,tag{k}\n")
    with multiprocessing.get_context("fork").Pool(6) as pool:
        assert pool.map(_merge_one, [(layout, f) for f in files]) == [1] * 6
    assert read_decisions(layout.decisions)["path"].tolist() == [f"img{k}.png" for k in range(6)]


def test_editors_start_from_the_kept_decisions(tmp_path: Path) -> None:
    """DecisionLog's base: the table is the complete set, a kept relabel is taken back by
    relabelling to the label before it (a ``path,,`` row), counters and progress skip those."""
    root, layout = _dataset(tmp_path)
    ingest(str(root), layout)
    (tmp_path / "d.csv").write_text(
        "path,label,tags\nred/red_1.jpg,green,\nblue/blue_0.png,,drop\nred/red_0.png,,x\n"
    )
    manifest, _ = apply_to_dataset(layout, tmp_path / "d.csv")
    base = dataset_decisions(layout)
    assert base["was"].tolist() == ["blue", "red", "red"]
    points = manifest[manifest["status"] == "ok"][["path", "label"]]  # what the map shows
    labels = own_labels(points, base)
    assert labels["red/red_1.jpg"] == "red" and labels["green/green_0.png"] == "green"
    log = DecisionLog(labels=labels, base=base)
    assert log.table.equals(read_decisions(layout.decisions)), "opens with the complete set"
    log.tag(["red/red_1.jpg"], "later")
    log.relabel(["red/red_1.jpg"], "red")  # its label before the kept relabel: taken back
    log.relabel(["green/green_1.jpg"], "blue")
    assert log.table.values.tolist() == [
        ["blue/blue_0.png", "", "drop"],  # not on the map: carried as it is
        ["green/green_1.jpg", "blue", ""],
        ["red/red_0.png", "", "x"],
        ["red/red_1.jpg", "", "later"],
    ]
    log.ops.clear()
    log.relabel(["red/red_1.jpg"], "red")
    table = log.table
    assert table.set_index("path").loc["red/red_1.jpg"].tolist() == ["", ""]  # takes it back
    assert counts_line(table) == "2 decided (0 relabelled, 1 dropped)"
    queue = ReviewQueue(points.assign(issues=["label"] * len(points)))
    assert queue.progress(table) == f"1 of {len(points)} reviewed"


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
