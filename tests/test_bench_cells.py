"""make bench's synthetic thumbnail cells (scripts/bench_explorer_scale.py): each point's cell
carries its own number, so the bench can tell the hovered point's picture from any other."""

from __future__ import annotations

import numpy as np
import pytest
from bench_explorer_scale import NumberedCells, difference, matches


def test_cells_draw_each_points_own_number() -> None:
    cells = NumberedCells(5_000, "photo", bases=16)
    twins = [1234 + 16 * k for k in range(8)]  # one base picture, eight numbers
    assert len({cells.base_of(i) for i in twins}) == 1
    pictures = [np.asarray(cells[i], np.int16) for i in twins]
    assert cells[1234].size == (64, 64) and cells[1234].mode == "RGB"
    assert difference(cells[1234], cells[1234]) == 0  # made again, the same
    for a in range(len(twins)):
        for b in range(a + 1, len(twins)):
            changed = np.abs(pictures[a] - pictures[b]).sum(axis=2).any(axis=1)
            assert changed.any(), (twins[a], twins[b])
            assert np.flatnonzero(changed).min() >= 32  # only where the number is written
    shown = cells[1234].resize((160, 160))  # as a hover card scales it
    assert matches(shown, cells, 1234)["ok"] and not matches(shown, cells, 1250)["ok"]
    with pytest.raises(IndexError):
        cells[5_000]
    emoji = list(NumberedCells(3, "emoji"))
    assert len(emoji) == 3 and difference(emoji[0], emoji[1]) > 0


def test_a_written_reports_files_serve_as_cells_and_sit_in_their_vectors_clusters(
    tmp_path,
) -> None:
    """The ``pipeline_vectors`` section's probe: point i of a report's points table is its own
    file's picture (and no other file's), and the generated files sit in their vectors'
    cluster folders, so the labels agree with the vectors."""
    import pandas as pd
    from bench_explorer_scale import FileCells
    from bench_pipeline_scale import realistic_vectors, small_images

    paths = small_images(tmp_path / "images", 60, classes=4)
    _, cluster = realistic_vectors(60, clusters_only=True)
    assert [p.split("/")[0] for p in paths] == [f"c{c % 4}" for c in cluster]
    report = tmp_path / "report"
    report.mkdir()
    pd.DataFrame({"path": paths[::-1]}).to_parquet(report / "points-pca-3d.parquet")
    cells = FileCells(report, tmp_path / "images")
    assert len(cells) == 60 and cells[0].size == (32, 32)
    shown = cells[7].resize((128, 128))  # as a hover card scales it
    assert matches(shown, cells, 7)["ok"] and not matches(shown, cells, 8)["ok"]
    with pytest.raises(IndexError):
        cells[60]
