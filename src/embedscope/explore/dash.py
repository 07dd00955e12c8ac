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
on the map.

Review: the point table's findings columns (``findings.csv``'s, :mod:`embedscope.points`) feed
a review queue over the map: one flagged image at a time, large, with its reason and
neighbours; the keys a, k, d and the arrows press its buttons. The filter and the image shown
are kept in the browser.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
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
from embedscope.explore.live import GALLERY_SIZE
from embedscope.explore.palette import class_order, colour_groups
from embedscope.ingest import load_manifest
from embedscope.layout import Layout, os_path
from embedscope.points import load_points, neighbor_rows
from embedscope.search import MAX_LIKE, Searcher
from embedscope.thumbs import ThumbnailCache


def figure(
    points: pd.DataFrame, labels: list[str] | None = None, selected: list[int] | None = None
):
    """One trace per label, always in the same order (hidden, not dropped, when filtered out),
    so a hover's curve and point numbers name a row; plotly's own hover label is off. Where the
    labels tell nothing apart (no labels, or one class) one trace per cluster instead
    (:func:`~embedscope.explore.palette.colour_groups`); ``labels`` names the traces shown.

    ``selected`` rows get ringed by one last trace: in a 3D map, which has no selection
    styling of its own, and for search results (a 2D map highlights its box/lasso selection
    itself)."""
    import plotly.graph_objects as go

    is3d = "z" in points and points["z"].notna().any()
    fig = go.Figure()
    _, groups, order, colours = colour_groups(points)
    groups = np.asarray(groups, dtype=object)
    for label, colour in zip(order, colours, strict=True):
        sel = points[groups == label]
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
        legend=dict(itemsizing="constant"),
    )
    return fig


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


def selection_view(points: pd.DataFrame, camera: dict | None = None, labels=None):
    """The 2D figure a 3D map is selected in: :func:`camera_view` at equal scale on both axes,
    lasso ready, its legend left to the 3D map's."""
    view = figure(camera_view(points, camera), labels)
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
    from dash import Dash, Input, Output, ctx, dcc, html, no_update
    from flask import abort, send_file

    points = load_points(layout, model, method, dims, random_state)
    neighbors = neighbor_rows(points)
    _, root = load_manifest(layout)
    files = [os_path(root, p) for p in points["path"]]

    app = Dash(__name__, title=f"embedscope · {layout.name} · {method} {dims}D")
    server = app.server

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

    is3d = "z" in points and points["z"].notna().any()
    classes = class_order(points["label"])
    _, groups, shown, _ = colour_groups(points)  # the map's traces: labels, or clusters
    trace_rows = [points.index[np.asarray(groups, dtype=object) == c].to_numpy() for c in shown]

    def row_of(pt: dict) -> int:
        """The row a hovered or clicked point stands for (event data may omit customdata)."""
        if "customdata" in pt:
            return int(pt["customdata"])
        return int(trace_rows[pt["curveNumber"]][pt["pointNumber"]])

    kept = dataset_decisions(layout)  # earlier rounds' decisions: where the editor starts
    curation = _Curation(app, points, classes, row_of, kept)
    review = _Review(app, points, neighbors, curation.labels, kept)
    search = _search_controls(app, Searcher.from_layout(layout, model), row_of)
    app.layout = html.Div(
        style={"display": "flex", "height": "96vh", "fontFamily": "system-ui, sans-serif"},
        children=[
            html.Div(
                style={
                    "flex": "1",
                    "position": "relative",
                    "display": "flex",
                    "flexDirection": "column",
                },
                children=[
                    html.Div(
                        style={"display": "flex", "height": "62%"},
                        children=[
                            dcc.Graph(
                                id="map",
                                figure=figure(points),
                                style={"height": "100%", "flex": "2"},
                                clear_on_unhover=True,
                                config={"displaylogo": False},
                            ),
                            *curation.views,
                        ],
                    ),
                    dcc.Tooltip(id="tip"),
                    *curation.below,
                    review.overlay,
                ],
            ),
            html.Div(
                style={"width": "300px", "padding": "8px", "overflowY": "auto"},
                children=[
                    html.H4(f"{layout.name} · {method}"),
                    dcc.Checklist(
                        id="labels",
                        options=shown,
                        value=shown,
                        inputStyle={"marginRight": "4px"},
                    ),
                    review.button,
                    *search,
                    *curation.controls,
                    html.Div(id="detail"),
                ],
            ),
        ],
    )

    def caption(row: int) -> list:
        """Label, path and the neighbours' suggestion as Dash text children: rendered as text,
        never as HTML."""
        small = {"fontSize": "11px", "wordBreak": "break-all"}
        return [
            html.Div(points["label"][row], style={"fontWeight": "600"}),
            html.Div(points["path"][row], style=small),
            html.Div(suggestion_text(points.iloc[row]), style=small),
        ]

    def card(row: int, size: int) -> list:
        style = {"width": f"{size}px", "height": f"{size}px"}
        return [html.Img(src=f"/thumb/{row}", style=style), *caption(row)]

    @app.callback(
        Output("tip", "show"),
        Output("tip", "bbox"),
        Output("tip", "children"),
        Input("map", "hoverData"),
    )
    def hover(data):
        if not data:
            return False, no_update, no_update
        pt = data["points"][0]
        bbox = pt.get("bbox") or {"x0": 10, "x1": 10, "y0": 10, "y1": 10}
        return True, bbox, html.Div(card(row_of(pt), 128), style={"width": "160px"})

    @app.callback(Output("detail", "children"), Input("map", "clickData"), curation.tile_clicks)
    def click(data, _tiles):
        tile = ctx.triggered_id if isinstance(ctx.triggered_id, dict) else None
        if tile is not None and not ctx.triggered[0]["value"]:
            return no_update  # a tile appeared in the gallery; it was not clicked
        if tile is None and not data:
            return html.Div("Click a point or a gallery tile to see its neighbours.")
        row = int(tile["row"]) if tile is not None else row_of(data["points"][0])
        thumbs = [
            html.Img(
                src=f"/thumb/{j}",
                title=points["path"][j],
                style={"width": "64px", "height": "64px", "margin": "2px"},
            )
            for j in neighbors[row][:8]
        ]
        return [
            html.Img(src=f"/image/{row}", style={"maxWidth": "280px"}),
            *caption(row),
            html.Div("Nearest neighbours"),
            html.Div(thumbs),
        ]

    @app.callback(
        Output("map", "figure"),
        Input("labels", "value"),
        Input("selection", "data"),
        Input("scores", "data"),
        prevent_initial_call=True,
    )
    def redraw(values, selected, scores):
        fired = ctx.triggered_prop_ids
        if not is3d and "labels.value" not in fired and "scores.data" not in fired:
            return no_update  # plotly keeps and highlights a 2D box/lasso selection itself
        return figure(points, values, selected if is3d or scores else None)

    return app


class _Curation:
    """Selection, gallery and decision controls of the app: its layout pieces (``views``
    beside the map, ``below`` it, ``controls`` in the side panel) and their callbacks."""

    def __init__(
        self, app, points: pd.DataFrame, classes: list[str], row_of, base: pd.DataFrame
    ) -> None:
        from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

        self.points = points
        #: Path -> label: a relabel back to its own label takes a decision back.
        self.labels = own_labels(points, base)
        self.base = base  # the kept decisions every DecisionLog starts from
        is3d = "z" in points and points["z"].notna().any()
        sources = ["select-map"] if is3d else ["map"]
        self.views = []
        if is3d:
            view = selection_view(points)
            self.views = [
                dcc.Graph(
                    id="select-map",
                    figure=view,
                    style={"height": "100%", "flex": "1"},
                    config={"displaylogo": False},
                )
            ]

        def button(name: str, text: str):
            return html.Button(text, id=name, n_clicks=0, style={"margin": "2px"})

        where = "in the selection view (the 3D camera's view)" if is3d else "on the map"
        self.controls = [
            html.Div(f"Select with box or lasso {where}.", style={"fontSize": "12px"}),
            dcc.Input(id="new-label", list="known-labels", placeholder="label: existing or new"),
            html.Datalist(id="known-labels", children=[html.Option(value=c) for c in classes]),
            button("relabel", "relabel"),
            dcc.Input(id="new-tag", placeholder="tag"),
            button("tag", "tag"),
            button("drop", "drop"),
            button("accept", "accept suggestion"),
            button("undo", "undo"),
            button("download-decisions", "download decisions"),
            dcc.Download(id="download"),
            html.Div(id="counter"),
            html.Div(id="message", style={"color": "#b00020"}),
            dcc.Store(id="selection", data=[]),
            dcc.Store(id="ops", data=[]),
            dcc.Store(id="scores", data={}),  # str(row) -> similarity of the last search
        ]
        self.below = [
            html.Div(id="gallery-note", style={"fontSize": "12px"}),
            html.Div(
                id="gallery",
                style={"display": "flex", "flexWrap": "wrap", "overflowY": "auto", "flex": "1"},
            ),
        ]

        @app.callback(
            Output("selection", "data"),
            Output("scores", "data"),
            Input(sources[0], "selectedData"),
            State("scores", "data"),
            prevent_initial_call=True,
        )
        def select(data, scores):
            rows = sorted({row_of(pt) for pt in (data or {}).get("points", [])})
            return rows, {} if scores else no_update  # a box replaces a search's results

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
            log = DecisionLog(ops, self.labels, self.base)
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

        @app.callback(
            Output("gallery", "children"),
            Output("gallery-note", "children"),
            Output("counter", "children"),
            Input("selection", "data"),
            Input("ops", "data"),
            Input("scores", "data"),
        )
        def gallery(rows, ops, scores):
            rows, table = rows or [], DecisionLog(ops, self.labels, self.base).table
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
            table = DecisionLog(ops, self.labels, self.base).table
            return dcc.send_string(decisions_csv(table), "decisions.csv")

        if is3d:

            @app.callback(
                Output("select-map", "figure"),
                Input("map", "relayoutData"),
                Input("labels", "value"),
                prevent_initial_call=True,
            )
            def follow_camera(relayout, labels):
                camera = (relayout or {}).get("scene.camera")
                if camera is None and ctx.triggered_id == "map":
                    return no_update  # a zoom or a legend click: the view stays
                return selection_view(points, camera, labels)

        self.tile_clicks = Input({"type": "tile", "row": ALL}, "n_clicks")

    def _tile(self, row: int, decided: pd.DataFrame, score: float | None = None):
        """One gallery tile: thumbnail, label (and its new label), path, tags and a search's
        score, as text."""
        from dash import html

        path = self.points["path"][row]
        label = self.labels.get(path, self.points["label"][row])  # before any decision
        new = decided["label"].get(path, "")
        tags = decided["tags"].get(path, "")
        hint = suggestion_text(self.points.iloc[row])
        small = {"fontSize": "11px", "wordBreak": "break-all"}
        return html.Div(
            id={"type": "tile", "row": int(row)},
            n_clicks=0,
            className="gallery-tile",
            style={"width": "104px", "margin": "3px", "cursor": "pointer"},
            children=[
                html.Img(src=f"/thumb/{row}", style={"width": "96px", "height": "96px"}),
                html.Div(f"{label} → {new}" if new else label, style={"fontWeight": "600"}),
                html.Div(path, style=small),
                html.Div(hint, style=small),
                html.Div(tags.replace(";", ", "), style=small),
                *([html.Div(f"score {score:.3f}", style=small)] if score is not None else []),
            ],
        )


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
    """The review queue of the app: a button (side panel) that opens an ``overlay`` over the
    map, and its callbacks. The filter and the image shown persist in the browser."""

    def __init__(
        self, app, points: pd.DataFrame, neighbors: np.ndarray, labels: dict, base: pd.DataFrame
    ) -> None:
        from dash import Input, Output, State, ctx, dcc, html, no_update

        queue = ReviewQueue(points)
        self.button = html.Button(
            f"review queue ({len(queue.rows)})", id="review-open", n_clicks=0,
            style={"margin": "2px", "fontWeight": "600"},
        )  # fmt: skip

        def button(name: str, text: str):
            return html.Button(text, id=f"review-{name}", n_clicks=0, style={"margin": "2px"})

        small = {"fontSize": "12px", "color": "#667085"}
        acts = [button(name, f"{name} ({key})") for key, name in REVIEW_KEYS.items()]
        self.overlay = html.Div(
            id="review",
            style={"display": "none"},
            children=[
                html.Div(
                    style={
                        "display": "flex",
                        "gap": "10px",
                        "alignItems": "center",
                        "flexWrap": "wrap",
                    },
                    children=[
                        html.B("Review queue"),
                        dcc.RadioItems(
                            id="review-issue",
                            options=[{"label": t, "value": v} for t, v in queue.options()],
                            value="",
                            inline=True,
                            persistence=True,
                            persistence_type="local",
                            inputStyle={"marginRight": "3px", "marginLeft": "8px"},
                        ),
                        html.Span(id="review-position", style=small),
                        html.Span(id="review-progress", style={"fontWeight": "600"}),
                        html.Span(
                            "keys: a accept · k keep · d drop · ← → move · Esc close", style=small
                        ),
                        button("close", "close"),
                    ],
                ),  # fmt: skip
                html.Div(
                    style={"display": "flex", "gap": "16px", "marginTop": "8px"},
                    children=[
                        html.Div(id="review-picture"),
                        html.Div(
                            style={"flex": "1", "minWidth": "260px"},
                            children=[
                                html.Div(id="review-text"),
                                html.Div(
                                    [button("prev", "← previous"), *acts, button("next", "next →")]
                                ),
                                html.Div(
                                    [
                                        dcc.Input(
                                            id="review-label",
                                            list="known-labels",
                                            placeholder="label: existing or new",
                                        ),
                                        button("relabel", "set label"),
                                        dcc.Input(id="review-tag", placeholder="tag"),
                                        button("add-tag", "add tag"),
                                    ]
                                ),
                                html.Div(id="review-message", style={"color": "#b00020"}),
                                html.Div("Nearest neighbours", style=small),
                                html.Div(id="review-neighbours"),
                            ],
                        ),  # fmt: skip
                    ],
                ),
                dcc.Store(id="review-spot", storage_type="local"),  # the path shown
                dcc.Store(id="review-keys"),
            ],
        )
        shown = {"position": "absolute", "inset": "0", "zIndex": 20, "background": "#fff",
                 "padding": "10px", "overflowY": "auto"}  # fmt: skip
        paths = points["path"].astype(str).tolist()

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
            return shown if ctx.triggered_id == "review-open" else {"display": "none"}

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
            log = DecisionLog(ops, labels, base)
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
            entries, table = queue.entries(issue), DecisionLog(ops, labels, base).table
            progress = queue.progress(table, issue)
            if not entries:
                empty = MESSAGES["no_findings" if not queue.rows else "queue_done"]
                return [], html.Div(empty), [], "", progress
            at = queue.position(issue, spot)
            row = entries[at]
            decided = table.set_index("path")
            path = paths[row]
            label = labels.get(path, points["label"][row])  # before any decision
            new, tags = decided["label"].get(path, ""), decided["tags"].get(path, "")
            lines = [
                f"{label} → {new}" if new else label,
                suggestion_text(points.iloc[row]),
                "issues: " + ", ".join(queue.issues[row]),
                queue.reasons[row],
                path,
                tags.replace(";", ", "),
            ]
            picture = html.Img(
                src=f"/image/{row}", id="review-image", title=path,
                style={"maxWidth": "480px", "maxHeight": "480px"},
            )  # fmt: skip
            text = [html.Div(t, className="review-line") for t in lines if t]
            near = [
                html.Img(src=f"/thumb/{j}", title=paths[j],
                         style={"width": "64px", "height": "64px", "margin": "2px"})
                for j in neighbors[row][:12]
            ]  # fmt: skip
            position = MESSAGES["position"].format(position=at + 1, total=len(entries))
            return picture, text, near, position, progress


def _search_controls(app, searcher: Searcher, row_of) -> list:
    """A query box and "more like this" (from the clicked point) that fill the selection with
    the top k, best first, and their scores; text search is off when the model has no text
    tower, and says why."""
    from dash import Input, Output, State, ctx, dcc, html, no_update

    text = searcher.can_read_text
    controls = [
        dcc.Input(
            id="query",
            placeholder="search: a dog on a sofa" if text else searcher.why,
            disabled=not text,
            debounce=True,
            style={"width": "100%"},
        ),
        html.Button("search", id="search", n_clicks=0, disabled=not text, style={"margin": "2px"}),
        dcc.Input(id="k", type="number", value=20, min=1, max=MAX_LIKE, style={"width": "60px"}),
        html.Button("more like this", id="more-like", n_clicks=0, style={"margin": "2px"}),
        html.Div(id="search-message", style={"color": "#b00020", "fontSize": "12px"}),
    ]

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
