"""make bench's JupyterLab rows of ``explorer_scale`` (scripts/bench_explorer_lab.py): the
notebook it runs and the table it adds (the real run is the bench's, minutes at 100,000 points)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from bench_explorer_lab import write_notebook
from bench_explorer_scale import explorer_scale_table


def test_the_bench_notebook_builds_the_live_panel_on_the_bench_points(tmp_path: Path) -> None:
    nb = nbformat.read(str(write_notebook(tmp_path / "panel.ipynb", 1234)), as_version=4)
    build, show = (c.source for c in nb.cells)
    assert "scale_points(1234)" in build and "NumberedCells(1234, " in build
    assert "from embedscope.explore.live import LiveExplorer" in build and show == "live"
    compile(build, "build", "exec")  # the cell is valid Python


def test_the_table_has_a_column_per_jupyterlab_size() -> None:
    results = {
        "targets_at_1m": {},
        "jupyterlab": {
            "jupyterlab_100000": {"points": 100000, "seconds_run_to_all_drawn": 99.3},
            "jupyterlab_1000000": {"points": 1000000, "seconds_run_to_all_drawn": 900.0},
        },
    }
    table = explorer_scale_table(results)
    assert "| live panel in JupyterLab | jupyterlab_100000 | jupyterlab_1000000 |" in table
    assert "| seconds_run_to_all_drawn | 99.3 | 900.0 |" in table
