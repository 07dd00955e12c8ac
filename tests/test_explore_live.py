"""The live JupyterLab explorer's Python side: hover, click, filter, colour, selection.

The events are dispatched the way plotly's FigureWidget delivers them from the browser; the
widgets are real ipywidgets / anywidget objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from helpers import make_classes, png_bytes
from plotly.callbacks import InputDeviceState, Points

from embedscope.explore.live import LiveExplorer

EVIL = "<img src=x onerror=alert(1)>.png"


def _explorer(tmp_path: Path) -> LiveExplorer:
    root = make_classes(tmp_path / "imgs", per_class=3)
    (root / "red" / EVIL).write_bytes(png_bytes(colour=9))
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))
    rng = np.random.default_rng(0)
    pts = pd.DataFrame(rng.normal(size=(len(rels), 3)), columns=list("xyz"))
    pts["path"], pts["label"] = rels, [r.split("/")[0] for r in rels]
    pts["mislabel_score"] = np.linspace(0, 1, len(rels))
    nbrs = np.array([[(i + k) % len(rels) for k in range(1, 5)] for i in range(len(rels))])
    return LiveExplorer(pts, root, neighbors=nbrs)


def _event(live: LiveExplorer, trace_index: int, point: int) -> tuple:
    trace = live.fig.data[trace_index]
    return trace, Points(point_inds=[point], trace_index=trace_index), InputDeviceState()


def test_hover_click_filter_colour_and_selection(tmp_path: Path) -> None:
    live = _explorer(tmp_path)
    assert [t.name for t in live.fig.data] == ["blue", "green", "red"]
    trace, pts, state = _event(live, 2, 0)
    trace._dispatch_on_hover(pts, state)
    row = int(trace.customdata[0])
    assert live.caption.value == "red" and live.path.value == live.points["path"][row]
    assert live.image.value[:2] == b"\xff\xd8"  # a JPEG thumbnail of that image
    evil_row = int(live.points.index[live.points["path"] == f"red/{EVIL}"][0])
    live.show(evil_row)
    assert live.path.value == f"red/{EVIL}"  # a Label: shown as text
    trace._dispatch_on_click(pts, state)
    assert len(live.neighbour_box.children) == 4
    live.checks[0].value = False  # hide "blue"
    assert [t.name for t in live.fig.data] == ["green", "red"]
    live.colour.value = "mislabel_score"
    assert len(live.fig.data) == 1 and live.fig.data[0].marker.showscale
    sel = Points(point_inds=[0, 1], trace_index=0)
    live.fig.data[0]._dispatch_on_selection(sel, state)
    assert len(live.selected) == 2 and set(live.selected["label"]) <= {"green", "red"}
