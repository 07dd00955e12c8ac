"""Stage 5, served: the same map as a Dash app, for large sets and for a live session.

``make serve NAME=...`` or ``create_app(layout).run(jupyter_mode="inline")`` from a notebook
(Dash >= 2.11 has Jupyter support built in). Safe by default: binds 127.0.0.1, debug off, and
images are served only through ``/image/<row>`` and ``/thumb/<row>``, where ``row`` is a point's
number: a request can name a manifest row, never a path, so nothing outside the dataset is served.
Thumbnails come from the dataset's thumbnail cache (made in ingest's decoding pass), so a hover
decodes no original.

Curation: a box or lasso selection shows as a gallery; relabel, tag, drop and undo record
decisions (a :class:`~embedscope.decisions.DecisionLog` kept in the browser's ``dcc.Store``) and
"download decisions" saves the ``decisions.csv`` every editor shares. plotly's 3D scenes have
no box or lasso, so a 3D map gets a 2D **selection view** beside it: the same points projected
along the 3D camera's current line of sight (orthographic), redrawn whenever the camera turns.

Search: a typed query (CLIP-family models, :mod:`embedscope.search`) or "more like this" from
the clicked point fills the same selection and gallery with the top k and their scores, ringed
on the map. So does a pair of "Classes that look like others" ("A that look like B",
:func:`embedscope.confusion.look_alikes`: the page's rule).

Review: the point table's findings columns (``findings.csv``'s, :mod:`embedscope.points`) feed
a review queue over the map: one flagged image at a time, large, with its reason and
neighbours (a leak beside its train image); the keys a, k, d, t and the arrows press its
buttons. The filter and the image shown are kept in the browser. With splits, a "Splits" group
colours the map by split, shows some splits only and selects one.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.decisions import (
    MESSAGES,
    REVIEW_KEYS,
    DecisionLog,
    ReviewQueue,
    counts_line,
    dataset_decisions,
    decisions_csv,
    own_labels,
    suggestion_text,
    suggestions,
)
from embedscope.explore.atlas import point_jpeg
from embedscope.explore.palette import (
    by_cluster,
    class_colour,
    class_order,
    colour_groups,
)
from embedscope.ingest import load_manifest
from embedscope.layout import Layout, os_path
from embedscope.points import load_points, neighbor_rows
from embedscope.search import MAX_LIKE, Searcher
from embedscope.thumbs import ThumbnailCache

#: Tiles a gallery page shows (the page's gallery, and so the live panel's, has its own).
GALLERY_SIZE = 48


def figure(
    points: pd.DataFrame,
    labels: list[str] | None = None,
    selected: list[int] | None = None,
    *,
    splits: list[str] | None = None,
    by: str = "label",
):
    """One trace per label, always in the same order (hidden, not dropped, when filtered out),
    so a hover's curve and point numbers name a row; plotly's own hover label is off. Where the
    labels tell nothing apart (no labels, or one class) one trace per cluster instead
    (:func:`~embedscope.explore.palette.colour_groups`); ``labels`` names the traces shown.

    With a ``split`` column: ``by="split"`` draws one trace per split instead (the labels
    shown still filter), and ``splits`` names the splits shown (every point keeps its row in
    ``customdata``, which is what a hover or click names).

    ``selected`` rows get ringed by one last trace: in a 3D map, which has no selection
    styling of its own, and for search results (a 2D map highlights its box/lasso selection
    itself)."""
    import plotly.graph_objects as go

    is3d = "z" in points and points["z"].notna().any()
    fig = go.Figure()
    _, groups, order, colours = colour_groups(points)
    groups = np.asarray(groups, dtype=object)
    shown = np.ones(len(points), bool)
    if "split" in points and splits is not None:
        shown &= points["split"].astype(str).isin(list(splits)).to_numpy()
    if "split" in points and by == "split":
        if labels is not None:
            shown &= np.isin(groups, list(labels))
        groups = points["split"].astype(str).to_numpy(dtype=object)
        order = class_order(groups)
        colours = [class_colour(c, k) for k, c in enumerate(order)]
        labels = None
    for label, colour in zip(order, colours, strict=True):
        sel = points[(groups == label) & shown]
        common = dict(
            visible=labels is None or label in labels,
            name=label,
            mode="markers",
            customdata=sel.index.to_numpy(),
            hoverinfo="none",
            marker=dict(size=4, color=colour),
        )
        if is3d:
            fig.add_trace(go.Scatter3d(x=sel["x"], y=sel["y"], z=sel["z"], **common))
        else:
            # SVG scatter: WebGL's hover events carry no customdata
            fig.add_trace(go.Scatter(x=sel["x"], y=sel["y"], **common))
    if selected:
        sel = points.iloc[selected]
        ring = dict(
            x=sel["x"],
            y=sel["y"],
            name=f"selection ({len(sel)})",
            mode="markers",
            customdata=sel.index.to_numpy(),
            hoverinfo="none",
            marker=dict(size=7 if is3d else 11, symbol="circle-open", color="#111111"),
        )
        fig.add_trace(go.Scatter3d(z=sel["z"], **ring) if is3d else go.Scatter(**ring))
    fig.update_layout(
        margin=dict(l=0, r=0, t=0, b=0),
        uirevision="keep",
        template="plotly_white",
        font=FONT,
        legend=LEGEND,
    )
    return fig


#: The page's typography and legend (explorer.css: system-ui 12-13 px, --fg, --line; the
#: legend a translucent card at the map's top left), for plotly's own text.
FONT = dict(family='system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size=12,
            color="#1d2330")  # fmt: skip
LEGEND = dict(itemsizing="constant", x=0.01, y=0.99, xanchor="left", yanchor="top",
              bgcolor="rgba(255,255,255,0.88)", bordercolor="#e2e5ea", borderwidth=1)  # fmt: skip


def camera_view(points: pd.DataFrame, camera: dict | None = None) -> pd.DataFrame:
    """``points`` with x, y replaced by what a 3D scene's ``camera`` (plotly's eye, up, center)
    sees, orthographically, and no z: the 2D selection view of a 3D map.

    Each axis is scaled to [-0.5, 0.5] first, as plotly's default (cube) scene does."""
    camera = camera or {}
    eye = _vec(camera.get("eye"), (1.25, 1.25, 1.25)) - _vec(camera.get("center"), (0, 0, 0))
    up = _vec(camera.get("up"), (0, 0, 1))
    xyz = points[["x", "y", "z"]].to_numpy(dtype=np.float64)
    lo, hi = np.nanmin(xyz, axis=0), np.nanmax(xyz, axis=0)
    xyz = (xyz - lo) / np.where(hi > lo, hi - lo, 1.0) - 0.5
    look = -eye / (np.linalg.norm(eye) or 1.0)  # from the eye towards the centre
    right = np.cross(look, up)
    if np.linalg.norm(right) < 1e-9:  # looking along "up": any right angle will do
        right = np.cross(look, (1.0, 0.0, 0.0))
    right /= np.linalg.norm(right)
    screen_up = np.cross(right, look)
    return points.drop(columns=["z"]).assign(x=xyz @ right, y=xyz @ screen_up)


def selection_view(
    points: pd.DataFrame, camera: dict | None = None, labels=None, splits=None, by="label"
):
    """The 2D figure a 3D map is selected in: :func:`camera_view` at equal scale on both axes,
    lasso ready, its legend left to the 3D map's (whose splits and colouring it follows)."""
    view = figure(camera_view(points, camera), labels, splits=splits, by=by or "label")
    return view.update_layout(dragmode="lasso", showlegend=False, yaxis={"scaleanchor": "x"})


def _vec(value: dict | None, default: tuple) -> np.ndarray:
    value = value or {}
    return np.array([float(value.get(a, d)) for a, d in zip("xyz", default, strict=True)])


def create_app(
    layout: Layout,
    *,
    model: str | None = None,
    method: str = "pca",
    dims: int = 3,
    random_state: int | None = 0,
):
    """A Dash app over a report's point table (``04_explore``'s file, or computed from the
    stages' files when there is none yet: :func:`~embedscope.points.load_points`) and images.
    Without ``findings.csv`` the review queue is empty and says so."""
    from dash import Dash, html

    points = load_points(layout, model, method, dims, random_state)
    neighbors = neighbor_rows(points)
    _, root = load_manifest(layout)
    title = f"embedscope · {layout.name} · {method} {dims}D"
    app = Dash(__name__, title=title)
    app.index_string = _index_string()
    _image_routes(app.server, layout, points, [os_path(root, p) for p in points["path"]])

    _, groups, shown, colours = colour_groups(points)  # the map's traces: labels, or clusters
    trace_rows = [points.index[np.asarray(groups, dtype=object) == c].to_numpy() for c in shown]

    def row_of(pt: dict) -> int:
        """The row a hovered or clicked point stands for (event data may omit customdata)."""
        if "customdata" in pt:
            return int(pt["customdata"])
        return int(trace_rows[pt["curveNumber"]][pt["pointNumber"]])

    kept = dataset_decisions(layout)  # earlier rounds' decisions: where the editor starts
    curation = _Curation(app, points, class_order(points["label"]), row_of, kept)
    review = _Review(app, points, neighbors, curation.labels, kept)
    search = _search_controls(app, Searcher.from_layout(layout, model), row_of)
    search += _look_alike_controls(app, points, curation.log)
    legend = _legend(shown, colours, "Clusters" if by_cluster(points) else "Classes")
    app.layout = _page(
        f"{layout.name} · {method} {dims}D",
        f"{len(points):,} points",
        _views(points, curation, review),
        [
            legend,
            *_split_controls(app, points),
            *search,
            *curation.controls,
            _box("Pinned point", [html.Div(id="detail")]),
        ],
        curation.below,
        review.overlay,
    )
    cards = _Cards(points, neighbors, colours, trace_rows)
    cards.hover_callbacks(app, row_of, ["map", *(["select-map"] if curation.views else [])])
    cards.click_callback(app, row_of, curation.tile_clicks)
    _redraw_callback(app, points, row_of)
    return app


#: The page's stylesheet (palette, typography, controls) then the Dash app's own rules.
STYLE_FILES = ("explorer.css", "dash.css")


def _index_string() -> str:
    """Dash's page with the page's CSS inlined (:data:`STYLE_FILES`): the same look, and
    nothing to serve from an assets folder."""
    here = files("embedscope.explore")
    css = "\n".join(here.joinpath(f).read_text(encoding="utf-8") for f in STYLE_FILES)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n{%metas%}\n<title>{%title%}</title>\n{%favicon%}\n"
        "{%css%}\n<style>" + css.replace("{%", "{ %") + "</style>\n</head>\n<body>\n"
        "{%app_entry%}\n<footer>\n{%config%}\n{%scripts%}\n{%renderer%}\n</footer>\n"
        "</body>\n</html>"
    )


def _image_routes(server, layout: Layout, points: pd.DataFrame, files: list[Path]) -> None:
    """``/image/<row>`` (the original) and ``/thumb/<row>`` (a 160-px JPEG from the thumbnail
    cache, so a hover decodes no original): a request names a row, never a path."""
    from flask import abort, send_file

    def row_file(row: int) -> Path:
        if not 0 <= row < len(files) or not files[row].is_file():
            abort(404)
        return files[row]

    @server.route("/image/<int:row>")
    def image(row: int):
        return send_file(row_file(row))

    cache = ThumbnailCache(layout)
    shas = points["sha256"].tolist() if "sha256" in points else [None] * len(points)

    @lru_cache(maxsize=4096)
    def thumb_bytes(row: int) -> bytes | None:
        return point_jpeg(files[row], 160, cache, shas[row])

    @server.route("/image/<path:anything>")
    @server.route("/thumb/<path:anything>")
    def not_a_row(anything: str):
        abort(404)  # without this, Dash's catch-all page route would answer 200

    @server.route("/thumb/<int:row>")
    def thumb(row: int):
        if not 0 <= row < len(files):
            abort(404)
        data = thumb_bytes(row)  # from the thumbnail cache: the original may be elsewhere
        if data is None:
            abort(404)
        return send_file(io.BytesIO(data), mimetype="image/jpeg")


def _box(title: str, children: list):
    """A titled group of the side panel, as the page's ``.box``."""
    from dash import html

    return html.Div(className="box", children=[html.Div(title, className="section"), *children])


def _legend(shown: list[str], colours: list[str], title: str):
    """The classes (or clusters) with their colours, each a checkbox that shows or hides it."""
    from dash import dcc, html

    options = [
        {
            "label": html.Span(
                [html.Span(className="swatch", style={"background": colour}), name],
                style={"display": "inline-flex", "alignItems": "center", "gap": "6px"},
            ),
            "value": name,
        }
        for name, colour in zip(shown, colours, strict=True)
    ]
    return _box(title, [dcc.Checklist(id="labels", options=options, value=shown,
                                      className="es-legend")])  # fmt: skip


def _view(title: str, hint: str, graph, tip: str, select: bool = False):
    """One labelled view: its title bar, the plotly graph and the hover card over it."""
    from dash import dcc, html

    return html.Div(
        className="es-view select" if select else "es-view",
        children=[
            html.Div([html.B(title), html.Span(hint, className="muted")],
                     className="es-view-title"),
            html.Div(className="es-plot", children=[  # the tooltip's bbox is the graph's
                graph,
                dcc.Tooltip(id=tip, className="es-hover", background_color="#ffffff",
                            border_color="#e2e5ea"),
            ]),
        ],
    )  # fmt: skip


def _views(points: pd.DataFrame, curation: _Curation, review: _Review):
    """The tools bar and the map's views side by side: the map ("3D map" or "2D map") and, for
    a 3D map, the titled "2D selection view" a box or lasso is drawn in."""
    from dash import dcc, html

    is3d = bool(curation.views)
    graph = dcc.Graph(id="map", figure=figure(points), clear_on_unhover=True,
                      config={"displaylogo": False}, style={"height": "100%"})  # fmt: skip
    views = [
        _view(
            "3D map" if is3d else "2D map",
            "drag to orbit, wheel to zoom" if is3d else "box or lasso in the toolbar",
            graph,
            "tip",
        )  # fmt: skip
    ]
    if is3d:
        views.append(_view("2D selection view", "what the 3D camera sees: box or lasso here",
                           curation.views[0], "select-tip", select=True))  # fmt: skip
    bar = html.Div(className="bar", children=[
        html.Span("Hover a point to see its picture; click it for its neighbours.",
                  className="muted"),
        html.Span(className="grow"), review.button, html.Span(id="counter", className="muted"),
    ])  # fmt: skip
    return [bar, html.Div(className="es-views", children=views)]


def _page(title: str, count: str, views: list, side: list, below: list, overlay):
    """The page's layout: views and gallery (``main``), the side panel on the right."""
    from dash import html

    return html.Div(id="app", className="es-dash", children=[
        html.Main(id="main", children=[*views, html.Section(className="es-gallery", children=below),
                                       overlay]),
        html.Aside(id="side", children=[html.H1(title), html.Div(count, className="muted"), *side]),
    ])  # fmt: skip


class _Cards:
    """The hover card (thumbnail, label, path, suggestion) over either view, and the pinned
    point in the side panel (the original, its neighbours): text always as text, never HTML."""

    def __init__(
        self, points: pd.DataFrame, neighbors: np.ndarray, colours: list[str], trace_rows: list
    ) -> None:
        self.points, self.neighbors = points, neighbors
        self.colour = np.empty(len(points), dtype=object)
        for rows, colour in zip(trace_rows, colours, strict=True):
            self.colour[rows] = colour

    def caption(self, row: int) -> list:
        """Label (with its colour), path and the neighbours' suggestion."""
        from dash import html

        swatch = html.Span(className="swatch", style={"background": self.colour[row]})
        hint = suggestion_text(self.points.iloc[row])
        return [
            html.Div([swatch, html.Span(self.points["label"][row])], className="label"),
            html.Div(self.points["path"][row], className="path"),
            *([html.Div(hint, className="suggested")] if hint else []),
        ]

    def card(self, row: int):
        from dash import html

        return html.Div([html.Img(src=f"/thumb/{row}"), *self.caption(row)], className="es-card")

    def hover_callbacks(self, app, row_of, graphs: list[str]) -> None:
        """Each view's hover shows the card in that view's tooltip."""
        from dash import Input, Output, no_update

        for graph, tip in zip(graphs, ["tip", "select-tip"], strict=False):

            @app.callback(
                Output(tip, "show"),
                Output(tip, "bbox"),
                Output(tip, "children"),
                Input(graph, "hoverData"),
            )
            def hover(data):
                if not data:
                    return False, no_update, no_update
                pt = data["points"][0]
                bbox = pt.get("bbox") or {"x0": 10, "x1": 10, "y0": 10, "y1": 10}
                return True, bbox, self.card(row_of(pt))

    def click_callback(self, app, row_of, tile_clicks) -> None:
        """A click on the map or a gallery tile pins that point in the side panel."""
        from dash import Input, Output, ctx, html, no_update

        @app.callback(Output("detail", "children"), Input("map", "clickData"), tile_clicks)
        def click(data, _tiles):
            tile = ctx.triggered_id if isinstance(ctx.triggered_id, dict) else None
            if tile is not None and not ctx.triggered[0]["value"]:
                return no_update  # a tile appeared in the gallery; it was not clicked
            if tile is None and not data:
                return html.Div("Click a point or a gallery tile to see its neighbours.",
                                className="hint")  # fmt: skip
            row = int(tile["row"]) if tile is not None else row_of(data["points"][0])
            near = [html.Img(src=f"/thumb/{j}", title=self.points["path"][j])
                    for j in self.neighbors[row][:8]]  # fmt: skip
            return [
                html.Img(src=f"/image/{row}", className="original"),
                *self.caption(row),
                html.Div("Nearest neighbours", className="section"),
                html.Div(near, className="es-thumbs"),
            ]


def _redraw_callback(app, points: pd.DataFrame, row_of) -> None:
    """The map follows the legend's checkboxes, the selection (ringed in 3D, and in 2D unless
    it is the map's own box or lasso selection), a search and, with splits, the splits shown
    and "colour by"."""
    from dash import Input, Output, State, ctx, no_update

    is3d = "z" in points and points["z"].notna().any()
    by_split = [Input("splits", "value"), Input("colour-by", "value")] if "split" in points else []

    @app.callback(
        Output("map", "figure"),
        Input("labels", "value"),
        Input("selection", "data"),
        Input("scores", "data"),
        *by_split,
        State("map", "selectedData"),
        prevent_initial_call=True,
    )
    def redraw(values, selected, scores, *rest):
        *by_args, box = rest
        splits, by = by_args if by_args else (None, "label")
        fired = set(ctx.triggered_prop_ids) - {"selection.data"}
        boxed = {row_of(p) for p in (box or {}).get("points", [])}
        own = not is3d and set(selected or []) == boxed  # plotly highlights its own selection
        if not is3d and not fired and own:
            return no_update
        ring = selected if is3d or scores or not own else None
        return figure(points, values, ring, splits=splits, by=by or "label")


def _split_controls(app, points: pd.DataFrame) -> list:
    """With a ``split`` column (a dataset with train/val/test): a "Splits" group to colour the
    map by split, show only some splits and select one split's images; nothing without."""
    from dash import Input, Output, State, dcc, html

    if "split" not in points:
        return []
    names = class_order(points["split"].astype(str))
    split = points["split"].astype(str).to_numpy(dtype=object)

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("scores", "data", allow_duplicate=True),
        Input("select-split", "n_clicks"),
        State("split-pick", "value"),
        prevent_initial_call=True,
    )
    def select_split(_clicks, name):
        return np.flatnonzero(split == name).tolist(), {}

    return [_box("Splits", [
        dcc.RadioItems(id="colour-by", value="label", inline=True,
                       options=[{"label": "colour by label", "value": "label"},
                                {"label": "colour by split", "value": "split"}]),
        dcc.Checklist(id="splits", options=names, value=names, inline=True,
                      className="es-legend"),
        html.Div([dcc.Dropdown(id="split-pick", options=names, value=names[0], clearable=False,
                               style={"minWidth": "120px"}),
                  html.Button("Select split", id="select-split", n_clicks=0,
                              title="Select every image of this split")], className="row"),
    ])]  # fmt: skip


class _Curation:
    """Selection, gallery and decision controls of the app: its layout pieces (``views``
    beside the map, ``below`` it, ``controls`` in the side panel) and their callbacks."""

    def __init__(
        self, app, points: pd.DataFrame, classes: list[str], row_of, base: pd.DataFrame
    ) -> None:
        from dash import ALL, Input

        self.points = points
        #: Path -> label: a relabel back to its own label takes a decision back.
        self.labels = own_labels(points, base)
        self.base = base  # the kept decisions every DecisionLog starts from
        self.is3d = bool("z" in points and points["z"].notna().any())
        self.views = self._selection_views()
        self.controls = self._controls(classes)
        self.below = self._below()
        self._select_callback(app, row_of)
        self._decide_callback(app)
        self._gallery_callbacks(app)
        if self.is3d:
            self._camera_callback(app)
        self.tile_clicks = Input({"type": "tile", "row": ALL}, "n_clicks")

    def log(self, ops: list | None) -> DecisionLog:
        """The decisions so far: the kept ones, then this session's ``ops``."""
        return DecisionLog(ops, self.labels, self.base)

    def _selection_views(self) -> list:
        """A 3D map's 2D selection view (plotly's 3D scenes have no box or lasso)."""
        from dash import dcc

        if not self.is3d:
            return []
        return [dcc.Graph(id="select-map", figure=selection_view(self.points),
                          style={"height": "100%"}, config={"displaylogo": False},
                          clear_on_unhover=True)]  # fmt: skip

    def _controls(self, classes: list[str]) -> list:
        """The side panel's "Decisions" group and the stores the callbacks share."""
        from dash import dcc, html

        def button(name: str, text: str):
            return html.Button(text, id=name, n_clicks=0)

        where = "in the 2D selection view" if self.is3d else "on the map"
        return [
            _box("Decisions", [
                html.Div(f"Select with box or lasso {where}, then:", className="muted"),
                html.Div([dcc.Input(id="new-label", list="known-labels",
                                    placeholder="label: existing or new"),
                          button("relabel", "Set label")], className="row"),
                html.Datalist(id="known-labels", children=[html.Option(value=c) for c in classes]),
                html.Div([dcc.Input(id="new-tag", placeholder="tag"), button("tag", "Add tag")],
                         className="row"),
                html.Div([button("drop", "Drop"), button("accept", "Accept suggestion")],
                         className="row"),
                html.Div([button("undo", "Undo"),
                          button("download-decisions", "Download decisions.csv")],
                         className="row"),
                dcc.Download(id="download"),
                html.Div(id="message", className="message"),
            ]),
            dcc.Store(id="selection", data=[]),
            dcc.Store(id="ops", data=[]),
            dcc.Store(id="scores", data={}),  # str(row) -> similarity of the last search
        ]  # fmt: skip

    def _below(self) -> list:
        """The gallery of the selection, under the views."""
        from dash import html

        bar = html.Div(
            className="bar",
            children=[
                html.Span("Selection", className="section"),
                html.Span(id="gallery-note", className="muted"),
            ],
        )
        return [bar, html.Div(id="gallery")]  # fmt: skip

    def _select_callback(self, app, row_of) -> None:
        """A box or lasso (in the selection view of a 3D map) becomes the selection."""
        from dash import Input, Output, State, no_update

        @app.callback(
            Output("selection", "data"),
            Output("scores", "data"),
            Input("select-map" if self.is3d else "map", "selectedData"),
            State("scores", "data"),
            prevent_initial_call=True,
        )
        def select(data, scores):
            rows = sorted({row_of(pt) for pt in (data or {}).get("points", [])})
            return rows, {} if scores else no_update  # a box replaces a search's results

    def _decide_callback(self, app) -> None:
        """The side panel's buttons decide about the selection (:class:`DecisionLog`)."""
        from dash import Input, Output, State, ctx, no_update

        points = self.points

        @app.callback(
            Output("ops", "data"),
            Output("message", "children"),
            Input("relabel", "n_clicks"),
            Input("tag", "n_clicks"),
            Input("drop", "n_clicks"),
            Input("accept", "n_clicks"),
            Input("undo", "n_clicks"),
            State("selection", "data"),
            State("ops", "data"),
            State("new-label", "value"),
            State("new-tag", "value"),
            prevent_initial_call=True,
        )
        def decide(_relabel, _tag, _drop, _accept, _undo, rows, ops, label, tag):
            log = self.log(ops)
            paths = points["path"].iloc[rows or []].tolist()
            act = {
                "relabel": lambda: log.relabel(paths, label or ""),
                "tag": lambda: log.tag(paths, tag or ""),
                "drop": lambda: log.drop(paths),
                "accept": lambda: log.relabel_each(suggestions(points, rows or [])),
                "undo": log.undo,
            }[ctx.triggered_id]
            try:
                act()
            except ValueError as exc:
                return no_update, str(exc)
            return log.ops, ""

    def _gallery_callbacks(self, app) -> None:
        """The gallery and counter follow the selection and decisions; the download button
        saves ``decisions.csv``."""
        from dash import Input, Output, State, dcc

        @app.callback(
            Output("gallery", "children"),
            Output("gallery-note", "children"),
            Output("counter", "children"),
            Input("selection", "data"),
            Input("ops", "data"),
            Input("scores", "data"),
        )
        def gallery(rows, ops, scores):
            rows, table = rows or [], self.log(ops).table
            decided = table.set_index("path")
            shown = rows[:GALLERY_SIZE]
            note = f"showing {len(shown)} of {len(rows)} selected" if rows else ""
            tiles = [self._tile(row, decided, (scores or {}).get(str(row))) for row in shown]
            return tiles, note, f"{len(rows)} selected · {counts_line(table)}"

        @app.callback(
            Output("download", "data"),
            Input("download-decisions", "n_clicks"),
            State("ops", "data"),
            prevent_initial_call=True,
        )
        def download(_clicks, ops):
            return dcc.send_string(decisions_csv(self.log(ops).table), "decisions.csv")

    def _camera_callback(self, app) -> None:
        """The selection view follows the 3D camera (and the legend's checkboxes and, with
        splits, the splits shown and "colour by", as the map does)."""
        from dash import Input, Output, ctx, no_update

        by_split = (
            [Input("splits", "value"), Input("colour-by", "value")]
            if "split" in self.points
            else []
        )

        @app.callback(
            Output("select-map", "figure"),
            Input("map", "relayoutData"),
            Input("labels", "value"),
            *by_split,
            prevent_initial_call=True,
        )
        def follow_camera(relayout, labels, *split_view):
            camera = (relayout or {}).get("scene.camera")
            if camera is None and ctx.triggered_id == "map":
                return no_update  # a zoom or a legend click: the view stays
            return selection_view(self.points, camera, labels, *split_view)

    def _tile(self, row: int, decided: pd.DataFrame, score: float | None = None):
        """One gallery tile: thumbnail, label (and its new label), path, tags and a search's
        score, as text."""
        from dash import html

        path = self.points["path"][row]
        label = self.labels.get(path, self.points["label"][row])  # before any decision
        new = decided["label"].get(path, "")
        tags = decided["tags"].get(path, "")
        hint = suggestion_text(self.points.iloc[row])
        return html.Div(
            id={"type": "tile", "row": int(row)},
            n_clicks=0,
            className="tile gallery-tile",
            children=[
                html.Img(src=f"/thumb/{row}"),
                html.Div(f"{label} → {new}" if new else label, className="label"),
                html.Div(path, className="path"),
                html.Div(hint, className="suggested"),
                html.Div(tags.replace(";", ", "), className="tags"),
                *([html.Div(f"score {score:.3f}", className="score")] if score is not None else []),
            ],
        )  # fmt: skip


#: Installs the review keys once: a, k, d and the arrows press the review queue's buttons while
#: it is open (typing in a text box is left alone); Esc closes it.
REVIEW_KEYS_JS = """function (_) {
  if (!window.embedscopeReviewKeys) {
    window.embedscopeReviewKeys = true;
    const keys = %s, fixed = {ArrowLeft: "prev", ArrowRight: "next", Escape: "close"};
    document.addEventListener("keydown", (e) => {
      const panel = document.getElementById("review");
      if (!panel || panel.style.display === "none") return;
      if (e.target.matches && e.target.matches("input:not([type=radio]), textarea, select")) return;
      const plain = !e.ctrlKey && !e.metaKey && !e.altKey;
      const name = fixed[e.key] || (plain && keys[e.key]);
      const button = name && document.getElementById("review-" + name);
      if (!button) return;
      e.preventDefault();
      button.click();
    });
  }
  return window.dash_clientside.no_update;
}"""


class _Review:
    """The review queue of the app: a button (tools bar) that opens an ``overlay`` over the
    views, as the page's queue does, and its callbacks. The picture is the original
    (``/image/<row>``), so blur and small details can be judged. The filter and the image shown
    persist in the browser."""

    def __init__(
        self, app, points: pd.DataFrame, neighbors: np.ndarray, labels: dict, base: pd.DataFrame
    ) -> None:
        from dash import html

        self.points, self.neighbors, self.labels, self.base = points, neighbors, labels, base
        self.queue = ReviewQueue(points)
        self.paths = points["path"].astype(str).tolist()
        self.button = html.Button(
            f"Review queue ({len(self.queue.rows)})", id="review-open", n_clicks=0,
            title="The flagged images one at a time (keys a, k, d, t, ← →)",
        )  # fmt: skip
        self.overlay = self._overlay()
        self._open_callbacks(app)
        self._act_callback(app)
        self._render_callback(app)

    @staticmethod
    def _button(name: str, text: str, title: str = ""):
        from dash import html

        return html.Button(text, id=f"review-{name}", n_clicks=0, title=title)

    def _overlay(self):
        """The queue's bar (filter, position, progress, keys) and its body (picture, card,
        actions, neighbours), hidden until opened."""
        from dash import dcc, html

        button = self._button
        bar = html.Div(className="bar", children=[
            html.Span("Review queue", className="section"),
            dcc.RadioItems(id="review-issue", value="", inline=True, persistence=True,
                           persistence_type="local",
                           options=[{"label": t, "value": v} for t, v in self.queue.options()]),
            html.Span(id="review-position", className="muted"),
            html.Span(id="review-progress"),
            html.Span(className="grow"),
            html.Span("keys: a accept · k keep · d drop · t drop the other copy · ← → move · Esc "
                      "close", className="muted"),
            button("close", "Close"),
        ])  # fmt: skip
        acts = [
            button(name, f"{name.replace('_', ' ').capitalize()} ({key})")
            for key, name in REVIEW_KEYS.items()
        ]
        info = html.Div(id="review-info", children=[
            html.Div(id="review-text"),
            html.Div([button("prev", "← Previous", "Previous (←)"), *acts,
                      button("next", "Next →", "Next (→)")], className="decide"),
            html.Div([dcc.Input(id="review-label", list="known-labels",
                                placeholder="label (existing or new)"),
                      button("relabel", "Set label"),
                      dcc.Input(id="review-tag", placeholder="tag"),
                      button("add-tag", "Add tag")], className="decide"),
            html.Div(id="review-message", className="message"),
            html.Div("Nearest neighbours", className="section"),
            html.Div(id="review-neighbours"),
        ])  # fmt: skip
        body = html.Div(id="review-body", children=[html.Div(id="review-picture"), info])
        return html.Div(id="review", style={"display": "none"}, children=[
            bar, body,
            dcc.Store(id="review-spot", storage_type="local"),  # the path shown
            dcc.Store(id="review-keys"),
        ])  # fmt: skip

    def _open_callbacks(self, app) -> None:
        """The review keys (installed once, in the browser) and the open/close buttons."""
        from dash import Input, Output, ctx

        app.clientside_callback(
            REVIEW_KEYS_JS % json.dumps(REVIEW_KEYS),
            Output("review-keys", "data"),
            Input("review", "id"),
        )

        @app.callback(
            Output("review", "style"),
            Input("review-open", "n_clicks"),
            Input("review-close", "n_clicks"),
            prevent_initial_call=True,
        )
        def toggle(_open, _close):
            return {} if ctx.triggered_id == "review-open" else {"display": "none"}

    def _act_callback(self, app) -> None:
        """Moves and decisions (:meth:`ReviewQueue.decide`), from buttons, keys and the text
        boxes' Enter."""
        from dash import Input, Output, State, ctx, no_update

        queue, paths = self.queue, self.paths
        names = ["prev", "next", *REVIEW_KEYS.values(), "relabel", "add-tag"]

        @app.callback(
            Output("review-spot", "data"),
            Output("ops", "data", allow_duplicate=True),
            Output("review-message", "children"),
            Output("message", "children", allow_duplicate=True),
            Output("review-label", "value"),
            Output("review-tag", "value"),
            *[Input(f"review-{n}", "n_clicks") for n in names],
            Input("review-label", "n_submit"),
            Input("review-tag", "n_submit"),
            State("review-issue", "value"),
            State("review-spot", "data"),
            State("ops", "data"),
            State("review-label", "value"),
            State("review-tag", "value"),
            prevent_initial_call=True,
        )
        def act(*args):
            issue, spot, ops, label, tag = args[-5:]
            entries = queue.entries(issue or "")
            if not entries:
                text = MESSAGES["no_findings" if not queue.rows else "queue_done"]
                return no_update, no_update, text, text, no_update, no_update
            at = queue.position(issue or "", spot)
            name = str(ctx.triggered_id).removeprefix("review-")
            if name in ("prev", "next"):
                at += 1 if name == "next" else -1
                spot = paths[entries[max(0, min(at, len(entries) - 1))]]
                return spot, no_update, "", "", no_update, no_update
            action = {"relabel": "label", "label": "label", "add-tag": "tag", "tag": "tag"}
            log = DecisionLog(ops, self.labels, self.base)
            try:
                onward = queue.decide(
                    log, entries[at], issue or "", action.get(name, name),
                    label if action.get(name) == "label" else tag,
                )  # fmt: skip
            except ValueError as exc:
                return no_update, no_update, str(exc), str(exc), no_update, no_update
            spot = paths[entries[min(at + onward, len(entries) - 1)]]
            cleared = action.get(name)
            return (spot, log.ops, "", "", "" if cleared == "label" else no_update,
                    "" if cleared == "tag" else no_update)  # fmt: skip

    def _pair(self, row: int, issue: str):
        """The image beside what the queue shows with it (a leak's train copy, the rest of
        its near-duplicate group), each the original with its split, label and path."""
        from dash import html

        split = self.points.get("split")
        figures = []
        for j in [row, *self.queue.beside(row, issue)]:
            where = f"{split.iat[j]} · " if split is not None and split.iat[j] else ""
            what = "this image: " if j == row else "beside it: "
            figures.append(html.Figure(className="review-copy", children=[
                html.Img(src=f"/image/{j}", title=self.paths[j],
                         **({"id": "review-image"} if j == row else {"className": "review-other"})),
                html.Figcaption(what + where + str(self.labels.get(self.paths[j], ""))),
                html.Div(self.paths[j], className="path"),
            ]))  # fmt: skip
        return html.Div(figures, className="review-pair")

    def _render_callback(self, app) -> None:
        """The image shown: the original, its card (label, suggestion, issues, reason, path,
        tags), its neighbours, where it stands in the queue and the progress."""
        from dash import Input, Output, html

        queue, paths, points = self.queue, self.paths, self.points

        @app.callback(
            Output("review-picture", "children"),
            Output("review-text", "children"),
            Output("review-neighbours", "children"),
            Output("review-position", "children"),
            Output("review-progress", "children"),
            Input("review-issue", "value"),
            Input("review-spot", "data"),
            Input("ops", "data"),
        )
        def render(issue, spot, ops):
            issue = issue or ""
            entries, table = queue.entries(issue), DecisionLog(ops, self.labels, self.base).table
            progress = queue.progress(table, issue)
            if not entries:
                empty = MESSAGES["no_findings" if not queue.rows else "queue_done"]
                return [], html.Div(empty), [], "", progress
            at = queue.position(issue, spot)
            row = entries[at]
            decided = table.set_index("path")
            path = paths[row]
            label = self.labels.get(path, points["label"][row])  # before any decision
            new, tags = decided["label"].get(path, ""), decided["tags"].get(path, "")
            lines = [
                (f"{label} → {new}" if new else label, "label"),
                (suggestion_text(points.iloc[row]), "suggested"),
                ("issues: " + ", ".join(queue.issues[row]), "issue-line"),
                (queue.reasons[row], "reason"),
                (path, "path"),
                (tags.replace(";", ", "), "tags"),
            ]
            picture = [
                self._pair(row, issue) if queue.beside(row, issue) else
                html.Img(src=f"/image/{row}", id="review-image", title=path),
                html.Div("The original image, from the dataset folder.", className="muted"),
            ]  # fmt: skip
            text = [html.Div(t, className=f"review-line {c}") for t, c in lines if t]
            near = [html.Img(src=f"/thumb/{j}", title=paths[j]) for j in self.neighbors[row][:12]]
            position = MESSAGES["position"].format(position=at + 1, total=len(entries))
            return picture, text, near, position, progress


def _search_controls(app, searcher: Searcher, row_of) -> list:
    """A query box and "more like this" (from the clicked point) that fill the selection with
    the top k, best first, and their scores; text search is off when the model has no text
    tower, and says why."""
    from dash import Input, Output, State, ctx, dcc, html, no_update

    text = searcher.can_read_text
    query = dcc.Input(id="query", placeholder="a dog on a sofa" if text else searcher.why,
                      disabled=not text, debounce=True)  # fmt: skip
    controls = [
        _box("Search", [
            html.Div([query, html.Button("Search", id="search", n_clicks=0, disabled=not text)],
                     className="row"),
            html.Div([html.Label("top", className="inline"),
                      dcc.Input(id="k", type="number", value=20, min=1, max=MAX_LIKE),
                      html.Button("More like this", id="more-like", n_clicks=0,
                                  title="Images like the clicked point")], className="row"),
            html.Div(id="search-message", className="message"),
        ])
    ]  # fmt: skip

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("scores", "data", allow_duplicate=True),
        Output("search-message", "children"),
        Input("search", "n_clicks"),
        Input("query", "n_submit"),
        Input("more-like", "n_clicks"),
        State("query", "value"),
        State("k", "value"),
        State("map", "clickData"),
        prevent_initial_call=True,
    )
    def search(_search, _submit, _like, query, k, clicked):
        try:
            if ctx.triggered_id == "more-like":
                if not clicked:
                    raise ValueError("click a point first")
                rows, sims = searcher.like(row_of(clicked["points"][0]), int(k or 20))
            else:
                rows, sims = searcher.text(query or "", int(k or 20))
        except ValueError as exc:  # NoTextTower included: one sentence, shown as text
            return no_update, no_update, str(exc)
        scores = {str(r): round(float(v), 4) for r, v in zip(rows, sims, strict=True)}
        return rows.tolist(), scores, ""

    return controls


def _look_alike_controls(app, points: pd.DataFrame, log) -> list:
    """The list of "images of class A that look like class B" (the page's rule,
    :func:`embedscope.confusion.look_alikes`; the confused pairs of ``03_reduce``), most
    first: choosing one fills the selection and gallery with them, the most B-like first, each
    with its suggestion's share as its score (ringed on the map, as search results are). It
    follows this session's relabels (``log``: the decisions so far, from the ``ops`` store),
    as the page's does."""
    from dash import Input, Output, State, dcc, no_update

    from embedscope.confusion import look_alike_counts, look_alikes

    suggested = points.get("suggested_label")
    suggested = points["label"] if suggested is None else suggested
    paths = points["path"].astype(str)

    def pairs_now(ops: list | None) -> pd.Series:
        table = log(ops).table
        relabelled = table[table["label"] != ""].set_index("path")["label"]
        # a label relabelled, else the point's own (object: with none relabelled, map gives NaN)
        return look_alikes(paths.map(relabelled).astype(object).fillna(points["label"]), suggested)

    def options(ops: list | None) -> list[dict]:
        counts = look_alike_counts(pairs_now(ops))
        return [{"label": f"{p} ({n})", "value": p} for p, n in counts.items()]

    share = (
        pd.to_numeric(points["suggested_share"], errors="coerce").fillna(0).to_numpy(float)
        if "suggested_share" in points
        else np.zeros(len(points))
    )
    first = options(None)
    empty = "no image looks like another class" if "suggested_label" in points else "no suggestions"
    controls = [
        _box("Classes that look like others", [
            dcc.Dropdown(id="look-alike", options=first, disabled=not first,
                         placeholder="A that look like B" if first else empty),
        ])
    ]  # fmt: skip

    @app.callback(
        Output("look-alike", "options"),
        Output("look-alike", "disabled"),
        Input("ops", "data"),
        prevent_initial_call=True,
    )
    def follow(ops):
        now = options(ops)
        return now, not now

    @app.callback(
        Output("selection", "data", allow_duplicate=True),
        Output("scores", "data", allow_duplicate=True),
        Input("look-alike", "value"),
        State("ops", "data"),
        prevent_initial_call=True,
    )
    def look_alike(pair, ops):
        if not pair:
            return no_update, no_update
        rows = np.flatnonzero((pairs_now(ops) == pair).to_numpy())
        rows = rows[np.argsort(-share[rows], kind="stable")]
        scores = {str(r): round(float(share[r]), 4) for r in rows}
        return [int(r) for r in rows], scores

    return controls
