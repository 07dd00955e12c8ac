"""The live JupyterLab explorer's Python side: hover, click, filter, colour, selection.

The events are dispatched the way plotly's FigureWidget delivers them from the browser; the
widgets are real ipywidgets / anywidget objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_classes, png_bytes
from plotly.callbacks import InputDeviceState, Points

from embedscope.decisions import read_decisions
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
    pts["suggested_label"] = [
        "green" if r.startswith("blue/blue_0") else r.split("/")[0] for r in rels
    ]
    pts["suggested_share"] = 0.75
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


def test_selection_gallery_and_decisions_round_trip(tmp_path: Path) -> None:
    live = _explorer(tmp_path)
    assert live.gallery.children == () and "0 selected" in live.counter.value
    live.buttons["drop"].click()  # nothing selected: refused, said as text
    assert "nothing selected" in live.message.value and live.decisions.empty
    red = live.fig.data[2]  # a box selection in the map arrives per trace
    red._dispatch_on_selection(Points(point_inds=[0, 1, 3], trace_index=2), InputDeviceState())
    rows = [int(red.customdata[i]) for i in (0, 1, 3)]
    assert live.selected.index.tolist() == sorted(rows)
    assert len(live.gallery.children) == 3
    tile_text = [[c.value for c in t.children[2:]] for t in live.gallery.children]
    assert [t[1] for t in tile_text] == live.points["path"][sorted(rows)].tolist()  # as text
    assert [f"red/{EVIL}"] in [t[1:] for t in tile_text]  # the hostile name, as typed
    assert all(t.children[0].value[:2] == b"\xff\xd8" for t in live.gallery.children)
    last = live.gallery.children[-1]
    last.children[1].click()  # the tile's "view": as a click on its point
    assert live.path.value == last.children[3].value and live._clicked == sorted(rows)[-1]
    assert live.image.value != live._thumb(sorted(rows)[-1], live.size)  # the larger view
    live.new_label.value = "objects"  # a new label, typed in
    live.buttons["relabel"].click()
    assert live.gallery.children[0].children[2].value == "red → objects"
    evil = int(live.points.index[live.points["path"] == f"red/{EVIL}"][0])
    live.drop(rows=[evil])
    live.tag("blurry")
    live.tag("oops", rows=[0])
    live.undo()  # takes back "oops"
    assert "3 relabelled, 1 dropped" in live.counter.value
    table = live.decisions
    assert list(table.columns) == ["path", "label", "tags"]
    by = table.set_index("path")
    assert by.loc[f"red/{EVIL}"].tolist() == ["objects", "drop;blurry"]
    assert set(by.index) == set(by.index[by["label"] == "objects"])
    assert set(by.index) == set(live.points["path"][sorted(rows)])
    blue0 = int(live.points.index[live.points["path"].str.startswith("blue/blue_0")][0])
    live.select([blue0, evil])  # only blue_0's suggestion differs from its label
    assert [c.value for c in live.gallery.children[0].children[2:]][-1] == "suggests green (75%)"
    live.buttons["accept suggestion"].click()
    assert live.decisions.set_index("path")["label"][live.points["path"][blue0]] == "green"
    live.undo()
    with pytest.raises(ValueError, match="no selected image has a suggestion"):
        live.accept_suggestion(rows=[evil])
    out = live.save_decisions(tmp_path / "curated" / "decisions.csv")
    pd.testing.assert_frame_equal(read_decisions(out), table)
    state = InputDeviceState()
    for k, trace in enumerate(live.fig.data):  # a new box arrives at every trace: it replaces
        trace._dispatch_on_selection(Points(point_inds=[0] if k else [], trace_index=k), state)
    assert len(live.selected) == len(live.fig.data) - 1
    live.buttons["clear selection"].click()
    assert live.gallery.children == () and live.selected.empty
