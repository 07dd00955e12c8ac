"""The Dash app on a real dataset: tooltip image on a real mouse hover in Chromium, an image
route that serves manifest rows only, and curation (selection -> gallery -> decisions ->
download) both through Dash's own callback endpoint and with a real mouse in Chromium."""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import FIRST_POINT_JS, launch_chromium, make_classes
from helpers import dash_call as _call
from helpers import plotly_array as _array
from PIL import Image
from plotly.utils import PlotlyJSONEncoder

from embedscope.decisions import MESSAGES, read_decisions
from embedscope.embed import embed
from embedscope.explore.dash import create_app
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.points import load_points, neighbor_rows, point_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, builtin_cache: Path) -> tuple[Layout, Path]:
    tmp = tmp_path_factory.mktemp("dash")
    root = make_classes(tmp / "imgs", per_class=12)
    (tmp / "secret.txt").write_text("not for the browser")
    layout = Layout("dashset", tmp / "data", tmp / "reports")
    ingest(str(root), layout)
    embed(layout, "mobilenet_v2", progress=False)
    return layout, root


@pytest.fixture(scope="module")
def server(dataset) -> Iterator[tuple[str, Path]]:
    from werkzeug.serving import make_server

    layout, root = dataset
    app = create_app(layout, method="pca", dims=2)
    port = _free_port()
    srv = make_server("127.0.0.1", port, app.server, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", root
    srv.shutdown()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_image_route_serves_rows_and_refuses_everything_else(server) -> None:
    base, _ = server
    assert _status(f"{base}/image/0") == 200 and _status(f"{base}/thumb/0") == 200
    bad = ["/image/999999", "/image/-1", "/image/..%2f..%2fsecret.txt", "/image/0.5",
           "/image/../../secret.txt", "/image/%2e%2e/secret.txt", "/image/0/../../secret.txt",
           "/thumb/abc", "/thumb/-3"]  # fmt: skip
    for url in bad:
        assert _status(base + url) == 404, url
    for url in ["/secret.txt", "/image//etc/passwd", "/../secret.txt"]:  # Dash's page route
        with urllib.request.urlopen(base + url, timeout=10) as r:
            body = r.read()
            assert b"not for the browser" not in body and b"root:" not in body, url


def test_thumbnails_come_from_the_cache_not_the_original(server) -> None:
    base, root = server
    moved = root.rename(root.with_name("moved-away"))  # ingest made the cells: none is decoded
    try:
        assert _status(f"{base}/image/7") == 404, "the original is gone"
        with urllib.request.urlopen(f"{base}/thumb/7", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.read())).size == (160, 160)
        assert _status(f"{base}/thumb/999999") == 404
    finally:
        moved.rename(root)


def test_hover_shows_the_tooltip_image_and_label(server) -> None:
    from playwright.sync_api import sync_playwright

    base, _ = server
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(base)
        page.wait_for_function(
            "() => document.querySelector('#map .js-plotly-plot')?._fullLayout?.xaxis",
            timeout=30_000,
        )
        x, y, row, label = page.evaluate(FIRST_POINT_JS, "#map .js-plotly-plot")
        page.mouse.move(x, y)
        tip = page.locator("#tip img")
        tip.wait_for(timeout=10_000)
        src = tip.get_attribute("src")
        assert src == f"/thumb/{row}"
        page.wait_for_function(  # the thumbnail loads (not at once on a busy machine)
            "(el) => el.complete && el.naturalWidth > 0", arg=tip.element_handle()
        )
        assert label in page.locator("#tip").inner_text()
        page.click("#review-open")  # no findings.csv for this report: the queue says so
        page.wait_for_function(
            "(t) => document.querySelector('#review-text')?.innerText === t",
            arg=MESSAGES["no_findings"],
        )
        assert page.locator("#review-progress").inner_text() == "0 of 0 reviewed"
        browser.close()


def test_3d_selection_view_gallery_decisions_and_download(dataset, tmp_path: Path) -> None:
    layout, _ = dataset
    app = create_app(layout, method="pca", dims=3)
    client = app.server.test_client()
    points = load_points(layout, None, "pca", 3)  # the app's own table
    # the selection view follows the 3D camera: looking down z, it shows x and y
    top = {"eye": {"x": 0, "y": 0, "z": 2}, "up": {"x": 0, "y": 1, "z": 0}}
    turned = {"map.relayoutData": {"scene.camera": top}, "labels.value": ["red", "green", "blue"]}
    fig = _call(client, ["select-map.figure"], turned)
    traces = fig["select-map"]["figure"]["data"]
    assert [t["type"] for t in traces] == ["scatter"] * 3
    shown = {
        int(r): (x, y)
        for t in traces
        for r, x, y in zip(*(_array(t[k]) for k in ("customdata", "x", "y")), strict=True)
    }
    for axis, k in (("x", 0), ("y", 1)):
        v = points[axis].to_numpy()
        expected = (v - v.min()) / (v.max() - v.min()) - 0.5
        np.testing.assert_allclose([shown[r][k] for r in range(len(points))], expected, atol=1e-6)
    # a lasso in the selection view -> the selection -> the gallery
    blue = points.index[points["label"] == "blue"][:3].tolist()
    lasso = {"points": [{"curveNumber": 0, "pointNumber": 0, "customdata": r} for r in blue]}
    rows = _call(
        client,
        ["selection.data", "scores.data"],
        {"select-map.selectedData": lasso},
        {"scores.data": {}},
    )
    assert rows["selection"]["data"] == sorted(blue)

    def decide(button: str, ops: list, label: str = "", tag: str = "") -> dict:
        clicks = {
            f"{b}.n_clicks": int(b == button) for b in ("relabel", "tag", "drop", "accept", "undo")
        }
        state = {"selection.data": sorted(blue), "ops.data": ops, "new-label.value": label,
                 "new-tag.value": tag}  # fmt: skip
        return _call(client, ["ops.data", "message.children"], clicks, state, f"{button}.n_clicks")

    out = decide("relabel", [], label="purple")
    ops = out["ops"]["data"]
    ops = decide("drop", ops)["ops"]["data"]
    ops = decide("tag", ops, tag="check")["ops"]["data"]
    ops = decide("undo", ops)["ops"]["data"]
    refused = decide("tag", ops, tag="a;b")
    assert "without" in refused["message"]["children"] and "ops" not in refused
    refused = decide("accept", ops)  # solid colours: every suggestion is the image's own label
    assert "no selected image has a suggestion" in refused["message"]["children"]
    # the 3D map rings the selection (its scenes have no selection styling of their own)
    shown_now = {"labels.value": ["red", "green", "blue"], "selection.data": sorted(blue),
                 "scores.data": {}}  # fmt: skip
    ringed = _call(client, ["map.figure"], shown_now, {"map.selectedData": None}, "selection.data")
    last = ringed["map"]["figure"]["data"][-1]
    assert last["name"] == "selection (3)" and _array(last["customdata"]).tolist() == sorted(blue)
    inputs = {"selection.data": sorted(blue), "ops.data": ops, "scores.data": {}}
    gallery = _call(client, ["gallery.children", "gallery-note.children", "counter.children"],
                    inputs)  # fmt: skip
    tiles = gallery["gallery"]["children"]
    assert len(tiles) == 3 and "3 relabelled, 3 dropped" in gallery["counter"]["children"]
    texts = [[c["props"].get("children") for c in t["props"]["children"][1:]] for t in tiles]
    assert texts[0][:2] == ["blue → purple", points["path"][sorted(blue)[0]]]
    assert texts[0][2:] == ["", "drop"]  # no suggestion to show, then the tags
    sent = _call(client, ["download.data"], {"download-decisions.n_clicks": 1}, {"ops.data": ops})
    sent = sent["download"]["data"]
    assert sent["filename"] == "decisions.csv"
    file = tmp_path / "decisions.csv"
    file.write_text(sent["content"])
    table = read_decisions(file)
    assert table["path"].tolist() == points["path"][sorted(blue)].tolist()
    assert (table["label"] == "purple").all() and (table["tags"] == "drop").all()


def test_real_box_selection_fills_the_gallery_and_downloads_decisions(server, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    base, _ = server
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1200, "height": 800}, accept_downloads=True)
        page.goto(base)
        page.wait_for_function(
            "() => document.querySelector('#map .js-plotly-plot')?._fullLayout?.xaxis",
            timeout=30_000,
        )
        # a box around every point of the first trace, in screen pixels
        box, rows = page.evaluate(
            """() => { const gd = document.querySelector('#map .js-plotly-plot');
                const L = gd._fullLayout, r = gd.getBoundingClientRect(), t = gd._fullData[0];
                const xs = t.x.map(v => r.left + L.xaxis._offset + L.xaxis.l2p(v));
                const ys = t.y.map(v => r.top + L.yaxis._offset + L.yaxis.l2p(v));
                return [[Math.min(...xs) - 4, Math.min(...ys) - 4, Math.max(...xs) + 4,
                         Math.max(...ys) + 4], t.customdata]; }"""
        )
        page.locator("#map .modebar-btn[data-val='select']").first.click()
        page.mouse.move(box[0], box[1])
        page.mouse.down()
        page.mouse.move((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, steps=5)
        page.mouse.move(box[2], box[3], steps=5)
        page.mouse.up()
        page.wait_for_function(
            "(n) => document.querySelectorAll('#gallery .gallery-tile').length >= n",
            arg=len(rows),
            timeout=15_000,
        )
        picked = page.evaluate(
            "() => [...document.querySelectorAll('#gallery img')].map(i => i.getAttribute('src'))"
        )
        assert set(f"/thumb/{r}" for r in rows) <= set(picked)
        page.click("#drop")
        page.wait_for_function(
            "() => document.querySelector('#counter').textContent.includes('dropped')"
            " && !document.querySelector('#counter').textContent.includes(' 0 dropped')",
            timeout=10_000,
        )
        with page.expect_download() as info:
            page.click("#download-decisions")
        saved = tmp_path / "decisions.csv"
        info.value.save_as(saved)
        browser.close()
    table = read_decisions(saved)
    assert len(table) == len(picked) and (table["tags"] == "drop").all()


def test_one_class_with_loose_images_opens_coloured_by_cluster(tmp_path: Path) -> None:
    """One class folder and loose images beside it: the analysis (cached, then read back)
    judges no label, and the Dash app, the live panel, the page and the static picture open
    coloured by cluster, with the labels still there to relabel with."""
    from playwright.sync_api import sync_playwright

    from embedscope.analyse import analyse
    from embedscope.explore import static_plot, write_explorer
    from embedscope.explore.live import LiveExplorer

    classes = make_classes(tmp_path / "imgs", per_class=6)
    for path in [*(classes / "green").iterdir(), *(classes / "blue").iterdir()]:
        path.rename(classes / path.name)  # loose, beside the one class "red"
    layout = Layout("oneclass", tmp_path / "data", tmp_path / "reports")
    ingest(str(classes), layout)
    embed(layout, "mobilenet_v2", progress=False)
    first = analyse(layout).report
    again = analyse(layout).report  # from the cache (was: KeyError 'probe_label')
    why = "label issues not judged: only one class (red)"
    assert first == again and again["label_issues"]["skipped"] == why
    assert again["knn_accuracy"] is None and again["clusters"] >= 2

    app = create_app(layout, method="pca", dims=3)
    traces = [t.name for t in app.layout["map"].figure.data]
    assert traces and all(n.startswith("cluster ") or n == "no cluster" for n in traces)
    assert [o["value"] for o in app.layout["labels"].options] == traces  # with their colours
    known = app.layout["known-labels"].children
    assert [o.value for o in known] == ["red", "(unlabelled)"]

    points = point_table(layout, None, "pca", 3)
    live = LiveExplorer(points, classes, neighbors=neighbor_rows(points))  # the page's script
    data = live._data  # what the panel's explorer.js opens with: the cluster column
    assert data["columns"][int(data["colourBy"])]["name"] == "cluster"
    assert data["classes"] == ["red", "(unlabelled)"]  # the labels, to relabel with
    page = write_explorer(points, classes, tmp_path / "explorer.html")
    with sync_playwright() as pw:  # the page opens on the clusters, its legend names them
        browser = launch_chromium(pw)
        tab = browser.new_page()
        tab.goto(page.as_uri())
        tab.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
        assert tab.evaluate("window.embedscope.colouring().name") == "cluster"
        browser.close()
    legend = static_plot(points).legends[0].get_texts()
    assert [t.get_text() for t in legend] == traces


def test_layout_has_the_pages_look_labelled_views_and_hover_cards(dataset) -> None:
    """Issue 29: the page's stylesheet (palette, type, buttons) served inline, the map and the
    side panel as in the page, the two views titled, and a hover card with the picture over
    either view (the 2D selection view too)."""
    layout, _ = dataset
    app = create_app(layout, method="pca", dims=3)
    page = app.server.test_client().get("/").get_data(as_text=True)
    assert "--accent:#2f6fde" in page and ".es-view-title" in page  # explorer.css + dash.css
    text = json.dumps(app.layout.to_plotly_json(), cls=PlotlyJSONEncoder)
    assert '"3D map"' in text and '"2D selection view"' in text
    assert {"app", "main", "side", "map", "select-map", "tip", "select-tip"} <= _ids(app.layout)
    client = app.server.test_client()
    for graph, tip in (("map", "tip"), ("select-map", "select-tip")):
        hovered = {"points": [{"curveNumber": 0, "pointNumber": 0, "customdata": 5}]}
        out = _call(client, [f"{tip}.show", f"{tip}.bbox", f"{tip}.children"],
                    {f"{graph}.hoverData": hovered})[tip]  # fmt: skip
        card = json.dumps(out["children"])
        assert out["show"] is True and '"/thumb/5"' in card and '"es-card"' in card
    flat = create_app(layout, method="pca", dims=2)
    flat_text = json.dumps(flat.layout.to_plotly_json(), cls=PlotlyJSONEncoder)
    assert '"2D map"' in flat_text and "select-map" not in flat_text


def _ids(component) -> set:
    """Every id in a Dash layout."""
    found = {getattr(component, "id", None)}
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if hasattr(child, "to_plotly_json"):
            found |= _ids(child)
    return found - {None}


def test_images_of_one_class_that_look_like_another_fill_the_selection(
    dataset, tmp_path: Path
) -> None:
    """Two red images labelled blue: the look-alike list (the page's rule,
    :func:`embedscope.confusion.look_alikes`) offers "blue that look like red (2)", and
    choosing it selects exactly those, most red first, scored by their suggestion's share."""
    import shutil

    from helpers import dash_call

    from embedscope.confusion import look_alikes
    from embedscope.reduce import project

    shown, root = dataset
    project(shown, "pca", 2)  # a map cached before the relabel: its coordinates stay valid
    moved = ["red/red_0.png", "red/red_1.jpg"]
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{p},blue\n" for p in moved))
    layout = Layout("alike", tmp_path / "data", tmp_path / "reports")
    shutil.copytree(shown.data_dir, layout.data_dir)  # its vectors: nothing to embed again
    ingest(str(root), layout, labels=tmp_path / "labels.csv")
    embed(layout, "mobilenet_v2", progress=False)
    app = create_app(layout, method="pca", dims=2)
    points = load_points(layout, None, "pca", 2)
    want = points.index[points["path"].isin(moved)].tolist()
    assert (points.loc[want, "label"] == "blue").all()  # today's labels, not the cached map's
    assert (look_alikes(points["label"], points["suggested_label"]) != "").sum() == 2
    layout_json = json.dumps(app.layout, cls=PlotlyJSONEncoder)
    assert '"label": "blue that look like red (2)"' in layout_json
    client = app.server.test_client()
    # it shares the selection with the box/lasso callback: Dash names its outputs
    key = next(k for k, v in app.callback_map.items() if v["inputs"][0]["id"] == "look-alike")
    chosen = {"look-alike.value": "blue that look like red"}
    out = dash_call(client, key.strip(".").split("..."), chosen, {"ops.data": []})
    rows = out["selection"]["data"]
    assert sorted(rows) == sorted(want)
    shares = [out["scores"]["data"][str(r)] for r in rows]
    assert shares == sorted(shares, reverse=True) and min(shares) > 0.5
    # relabelled back to red in this session: the list follows, as the page's does
    ops = [{"op": "label", "paths": [moved[0]], "value": "red"}]
    out = dash_call(client, key.strip(".").split("..."), chosen, {"ops.data": ops})
    assert out["selection"]["data"] == [points.index[points["path"] == moved[1]][0]]
    listed = dash_call(client, ["look-alike.options", "look-alike.disabled"], {"ops.data": ops})
    assert listed["look-alike"]["options"] == [
        {"label": "blue that look like red (1)", "value": "blue that look like red"}
    ]
