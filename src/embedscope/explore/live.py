"""Stage 5, live in JupyterLab: a plotly ``FigureWidget`` beside an ipywidgets panel.

Needs a running kernel (unlike ``explorer.html``, which survives sharing): hover shows the
image, click shows a larger one read from the original file and its nearest neighbours, a
dropdown changes the colouring, checkboxes filter classes, and a box or lasso selection comes
back to Python as a DataFrame (``LiveExplorer.selected``). Colours are the page's palette.
plotly >= 6 renders FigureWidget through ``anywidget``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.explore.atlas import preview_jpeg, thumbnail_jpeg
from embedscope.explore.palette import class_colour, class_order
from embedscope.ingest import UNLABELLED

_SCORES = ("cluster", "mislabel_score", "outlier_score")


class LiveExplorer:
    """Build with the points of ``04_explore`` (x, y, optional z, label, path, scores)."""

    def __init__(
        self,
        points: pd.DataFrame,
        image_root: str | Path,
        *,
        neighbors: np.ndarray | None = None,
        thumb_size: int = 160,
        preview_size: int = 640,
    ) -> None:
        import ipywidgets as w
        import plotly.graph_objects as go

        self.points = points.reset_index(drop=True).copy()
        self.points["label"] = self.points["label"].fillna(UNLABELLED).astype(str)
        self.root, self.neighbors, self.size = Path(image_root), neighbors, thumb_size
        self.preview_size = preview_size
        self.is3d = "z" in self.points and self.points["z"].notna().any()
        self.classes = class_order(self.points["label"])
        self.colours = {c: class_colour(c, k) for k, c in enumerate(self.classes)}
        self._selected: list[int] = []
        # the legend sits under the map, clear of plotly's toolbar at the top right
        legend = dict(orientation="h", x=0, xanchor="left", y=0, yanchor="top")
        self.fig = go.FigureWidget(
            layout=dict(
                height=600, margin=dict(l=0, r=0, t=30, b=0), legend=legend, template="plotly_white"
            )
        )
        self.image = w.Image(format="jpeg", layout=w.Layout(max_width="300px"))
        self.caption = w.Label()  # text, never HTML: file names are shown as typed
        self.path = w.Label()
        self.neighbour_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        for widget, name in [
            (self.image, "preview"),
            (self.caption, "caption"),
            (self.path, "path"),
            (self.neighbour_box, "neighbours"),
        ]:
            widget.add_class(f"embedscope-{name}")  # stable handles for tests and styling
        self.colour = w.Dropdown(
            options=["label", *[c for c in _SCORES if c in self.points]], description="colour"
        )
        self.checks = [w.Checkbox(value=True, description=c, indent=False) for c in self.classes]
        self.colour.observe(lambda _: self.redraw(), names="value")
        for box in self.checks:
            box.observe(lambda _: self.redraw(), names="value")
        panel = w.VBox(
            [
                self.colour,
                self.image,
                self.caption,
                self.path,
                w.Label("nearest neighbours (click a point)"),
                self.neighbour_box,
                w.VBox(self.checks),
            ],
            layout=w.Layout(width="320px"),
        )
        self.widget = w.HBox([self.fig, panel])
        self.redraw()

    def _thumb(self, row: int, size: int) -> bytes:
        return thumbnail_jpeg(self.root / self.points["path"][row], size) or b""

    def redraw(self) -> None:
        """Rebuild the traces for the current colouring and class filter."""
        import plotly.graph_objects as go

        shown = {c.description for c in self.checks if c.value}
        keep = self.points[self.points["label"].isin(shown)]
        by = self.colour.value
        if by == "label":
            groups = [(c, keep[keep["label"] == c]) for c in self.classes if c in shown]
        else:
            groups = [(by, keep)]
        traces = []
        for name, sel in groups:
            marker = dict(size=3 if self.is3d else 6)
            if by == "label":
                marker |= dict(color=self.colours[name])
            else:
                marker |= dict(color=sel[by], colorscale="Viridis", showscale=True)
            kw = dict(
                x=sel["x"],
                y=sel["y"],
                name=name,
                mode="markers",
                marker=marker,
                customdata=sel.index.to_numpy(),
                hoverinfo="none",
            )
            traces.append(go.Scatter3d(z=sel["z"], **kw) if self.is3d else go.Scatter(**kw))
        self.fig.data = ()
        self.fig.add_traces(traces)
        for trace in self.fig.data:
            trace.on_hover(self._on_hover)
            trace.on_click(self._on_click)
            trace.on_selection(self._on_selection)

    def show(self, row: int, *, large: bool = False) -> None:
        """Put one point's image (a thumbnail, or a larger view read from the original file),
        label and path in the panel."""
        path = self.root / self.points["path"][row]
        picture = preview_jpeg(path, self.preview_size) if large else self._thumb(row, self.size)
        self.image.value = picture or b""
        self.caption.value = self.points["label"][row]
        self.path.value = self.points["path"][row]

    def _row(self, trace, points) -> int | None:
        if not points.point_inds:
            return None
        return int(trace.customdata[points.point_inds[0]])

    def _on_hover(self, trace, points, state) -> None:
        row = self._row(trace, points)
        if row is not None:
            self.show(row)

    def _on_click(self, trace, points, state) -> None:
        import ipywidgets as w

        row = self._row(trace, points)
        if row is None:
            return
        self.show(row, large=True)
        if self.neighbors is not None:
            self.neighbour_box.children = [
                w.Image(value=self._thumb(int(j), 64), format="jpeg", width=64, height=64)
                for j in self.neighbors[row][:8]
            ]

    def _on_selection(self, trace, points, state) -> None:
        rows = [int(trace.customdata[i]) for i in points.point_inds]
        self._selected = sorted(set(self._selected) | set(rows))

    @property
    def selected(self) -> pd.DataFrame:
        """The rows picked with the box or lasso tool so far."""
        return self.points.loc[self._selected]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
