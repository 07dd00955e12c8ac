"""The point table: one declared schema, built from the stages' files, written once per map
and read back by every editor; a stale or damaged file is never shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_classes, tiny_clip

from embedscope.analyse import Analysis, analyse
from embedscope.embed import embed
from embedscope.findings import findings_table, read_findings, write_findings
from embedscope.ingest import ingest, load_manifest
from embedscope.layout import Layout
from embedscope.points import (
    FINDING_SCHEMA,
    NO_FINDINGS,
    PROMPT_SCHEMA,
    SCHEMA,
    load_points,
    neighbor_rows,
    point_table,
    write_points,
)
from embedscope.search import PROMPT_PREFIX, prompt_scores
from embedscope.store import load_embeddings


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, str]:
    """Three classes embedded by a tiny CLIP (prompt scores too), with 03_reduce's findings."""
    tmp = tmp_path_factory.mktemp("points")
    clip = str(tiny_clip(tmp / "clip"))
    layout = Layout("points", tmp / "data", tmp / "reports")
    ingest(str(make_classes(tmp / "images", per_class=4)), layout)
    embed(layout, clip, precision="fp32", progress=False)
    prompt_scores(layout, clip)
    rows = load_embeddings(layout, clip).rows
    write_findings(findings_table(rows, analyse(layout, clip), load_manifest(layout)[0]), layout)
    return layout, clip


def test_analyse_returns_a_typed_result_with_one_name_for_the_neighbours(report) -> None:
    layout, clip = report
    found = analyse(layout, clip, k=3)
    assert isinstance(found, Analysis) and "knn_accuracy" in found.report
    assert found.neighbors.shape == found.similarity.shape == (12, 3) and found.k == 3
    assert found["cluster"] is found.cluster and found["k"] == 3  # findings_table reads names
    for gone in ("neighbours", "report", "nothing"):
        with pytest.raises(KeyError):
            found[gone]


def test_point_table_has_the_declared_schema_and_every_stage_in_it(report) -> None:
    layout, clip = report
    table = point_table(layout, clip, "pca", 2, 0)
    prompts = [c for c in table.columns if c.startswith(PROMPT_PREFIX)]
    # findings' near-duplicate group rides along; no split or leak columns without splits
    assert list(table.columns) == [
        *SCHEMA, *prompts, "zero_shot_label", "zero_shot_disagrees"
    ]  # fmt: skip
    assert len(prompts) == 3
    dtypes = SCHEMA | FINDING_SCHEMA | PROMPT_SCHEMA
    dtypes |= {c: PROMPT_SCHEMA[PROMPT_PREFIX + "*"] for c in prompts}
    assert {c: str(t) for c, t in table.dtypes.items()} == {c: dtypes[c][0] for c in table}
    assert table["z"].isna().all() and len(table) == 12  # a 2D map
    near = neighbor_rows(table)
    assert near.shape == (12, analyse(layout, clip).k) and (near != np.arange(12)[:, None]).all()
    findings = read_findings(layout).set_index("path")
    assert table["reason"].tolist() == findings.loc[table["path"], "reason"].tolist()
    assert table.attrs["method"] == "pca" and table.attrs["dims"] == 2
    assert point_table(layout, clip, "pca", 3, 0)["z"].notna().all()


def test_the_file_is_written_once_read_back_and_names_no_directory(report) -> None:
    layout, clip = report
    table = point_table(layout, clip, "pca", 2, 0)
    path = write_points(layout, table)
    assert path == layout.reports_dir / "points-pca-2d.parquet"
    assert str(layout.data_root.parent).encode() not in path.read_bytes()
    stored = load_points(layout, clip, "pca", 2, 0)
    pd.testing.assert_frame_equal(stored, table)
    assert stored.attrs == table.attrs
    # what the editors see is the file: a change to it shows, in the Dash app too
    flagged = table.assign(reason="from the file", issues=["odd"] + [""] * (len(table) - 1))
    write_points(layout, flagged)
    assert set(load_points(layout, clip, "pca", 2, 0)["reason"]) == {"from the file"}
    from embedscope.explore.dash import create_app

    app = create_app(layout, model=clip, method="pca", dims=2)
    assert [o["value"] for o in app.layout["review-issue"].options] == ["", "odd"]


def test_a_stale_or_damaged_file_is_not_shown(report, tmp_path: Path) -> None:
    layout, clip = report
    old = point_table(layout, clip, "pca", 2, 0)
    write_points(layout, old.assign(reason="stale"))
    saved = layout.findings.read_bytes()
    try:
        layout.findings.unlink()  # findings changed since: recomputed, nothing to review
        fresh = load_points(layout, clip, "pca", 2, 0)
        assert (fresh[list(NO_FINDINGS)] == pd.Series(NO_FINDINGS)).all().all()
    finally:
        layout.findings.write_bytes(saved)
    assert set(load_points(layout, clip, "pca", 2, 0)["reason"]) == {"stale"}  # current again
    other_seed = load_points(layout, clip, "pca", 2, 7)  # another map: not this file
    assert other_seed.attrs["random_state"] == 7 and "stale" not in set(other_seed["reason"])
    layout.points("pca", 2).write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(load_points(layout, clip, "pca", 2, 0), old)
    assert list(layout.reports_dir.glob("points-pca-2d.parquet.damaged-*"))  # set aside


def test_the_docs_column_table_is_the_schema() -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
    section = page.read_text(encoding="utf-8").split("## The point table", 1)[1]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    documented = {r[0].strip("| `"): (r[1], r[2].removesuffix(" |")) for r in rows}
    assert documented == SCHEMA | FINDING_SCHEMA | PROMPT_SCHEMA
