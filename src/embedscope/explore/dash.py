"""Stage 5, served: the same map as a Dash app, for large sets and for a live session.

``make serve NAME=...`` or ``create_app(layout).run(jupyter_mode="inline")`` from a notebook
(Dash >= 2.11 has Jupyter support built in). Safe by default: binds 127.0.0.1, debug off, and
images are served only through ``/image/<row>`` and ``/thumb/<row>``, where ``row`` is a point's
number: a request can name a manifest row, never a path, so nothing outside the dataset is served.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.analyse import analyse
from embedscope.explore.atlas import thumbnail_jpeg
from embedscope.explore.palette import class_colour, class_order
from embedscope.ingest import UNLABELLED, load_manifest
from embedscope.layout import Layout
from embedscope.reduce import project


def figure(points: pd.DataFrame, labels: list[str] | None = None):
    """One trace per label, always in the same order (hidden, not dropped, when filtered out),
    so a hover's curve and point numbers name a row; plotly's own hover label is off."""
    import plotly.graph_objects as go

    is3d = "z" in points and points["z"].notna().any()
    fig = go.Figure()
    classes = class_order(points["label"])
    for k, label in enumerate(classes):
        sel = points[points["label"] == label]
        common = dict(
            visible=labels is None or label in labels,
            name=label,
            mode="markers",
            customdata=sel.index.to_numpy(),
            hoverinfo="none",
            marker=dict(size=4, color=class_colour(label, k)),
        )
        if is3d:
            fig.add_trace(go.Scatter3d(x=sel["x"], y=sel["y"], z=sel["z"], **common))
        else:
            # SVG scatter: WebGL's hover events carry no customdata
            fig.add_trace(go.Scatter(x=sel["x"], y=sel["y"], **common))
    fig.update_layout(
        margin=dict(l=0, r=0, t=0, b=0),
        uirevision="keep",
        template="plotly_white",
        legend=dict(itemsizing="constant"),
    )
    return fig


def create_app(
    layout: Layout,
    *,
    model: str | None = None,
    method: str = "pca",
    dims: int = 3,
    random_state: int | None = 0,
):
    """A Dash app over a dataset's stored projection, neighbours and images."""
    from dash import Dash, Input, Output, dcc, html, no_update
    from flask import abort, send_file

    points, _ = project(layout, method, dims, model=model, random_state=random_state)
    points = points.reset_index(drop=True)
    points["label"] = points["label"].fillna(UNLABELLED).astype(str)
    _, per_image = analyse(layout, model)
    neighbors = np.asarray(per_image["neighbors"])
    _, root = load_manifest(layout)
    files = [root / p for p in points["path"]]

    app = Dash(__name__, title=f"embedscope · {layout.name}")
    server = app.server

    def row_file(row: int) -> Path:
        if not 0 <= row < len(files) or not files[row].is_file():
            abort(404)
        return files[row]

    @server.route("/image/<int:row>")
    def image(row: int):
        return send_file(row_file(row))

    @lru_cache(maxsize=4096)
    def thumb_bytes(row: int) -> bytes | None:
        return thumbnail_jpeg(files[row], 160)

    @server.route("/image/<path:anything>")
    @server.route("/thumb/<path:anything>")
    def not_a_row(anything: str):
        abort(404)  # without this, Dash's catch-all page route would answer 200

    @server.route("/thumb/<int:row>")
    def thumb(row: int):
        row_file(row)
        data = thumb_bytes(row)
        if data is None:
            abort(404)
        return send_file(io.BytesIO(data), mimetype="image/jpeg")

    classes = class_order(points["label"])
    trace_rows = [points.index[points["label"] == c].to_numpy() for c in classes]

    def row_of(pt: dict) -> int:
        """The row a hovered or clicked point stands for (event data may omit customdata)."""
        if "customdata" in pt:
            return int(pt["customdata"])
        return int(trace_rows[pt["curveNumber"]][pt["pointNumber"]])

    app.layout = html.Div(
        style={"display": "flex", "height": "96vh", "fontFamily": "system-ui, sans-serif"},
        children=[
            html.Div(
                style={"flex": "1", "position": "relative"},
                children=[
                    dcc.Graph(
                        id="map",
                        figure=figure(points),
                        style={"height": "100%"},
                        clear_on_unhover=True,
                        config={"displaylogo": False},
                    ),
                    dcc.Tooltip(id="tip"),
                ],
            ),
            html.Div(
                style={"width": "300px", "padding": "8px", "overflowY": "auto"},
                children=[
                    html.H4(f"{layout.name} · {method}"),
                    dcc.Checklist(
                        id="labels",
                        options=classes,
                        value=classes,
                        inputStyle={"marginRight": "4px"},
                    ),
                    html.Div(id="detail"),
                ],
            ),
        ],
    )

    def caption(row: int) -> list:
        """Label and path as Dash text children: rendered as text, never as HTML."""
        return [
            html.Div(points["label"][row], style={"fontWeight": "600"}),
            html.Div(points["path"][row], style={"fontSize": "11px", "wordBreak": "break-all"}),
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

    @app.callback(Output("detail", "children"), Input("map", "clickData"))
    def click(data):
        if not data:
            return html.Div("Click a point to see its neighbours.")
        row = row_of(data["points"][0])
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

    @app.callback(Output("map", "figure"), Input("labels", "value"), prevent_initial_call=True)
    def filter_labels(values):
        return figure(points, values)

    return app


def serve(layout: Layout, *, host: str = "127.0.0.1", port: int = 8050, **kwargs) -> None:
    """Run the app (blocking) on ``host:port``; debug stays off."""
    create_app(layout, **kwargs).run(host=host, port=port, debug=False)
