"""The Dash app on a real dataset: tooltip image on a real mouse hover in Chromium, and an
image route that serves manifest rows only."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import launch_chromium, make_classes

from embedscope.embed import embed
from embedscope.explore.dash import create_app
from embedscope.ingest import ingest
from embedscope.layout import Layout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, builtin_cache: Path) -> Iterator[tuple[str, Path]]:
    from werkzeug.serving import make_server

    tmp = tmp_path_factory.mktemp("dash")
    root = make_classes(tmp / "imgs", per_class=12)
    (tmp / "secret.txt").write_text("not for the browser")
    layout = Layout("dashset", tmp / "data", tmp / "reports")
    ingest(str(root), layout)
    embed(layout, "mobilenet_v2", progress=False)
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
        x, y, row, label = page.evaluate(
            """() => { const gd = document.querySelector('#map .js-plotly-plot');
                const L = gd._fullLayout, r = gd.getBoundingClientRect(), t = gd._fullData[0];
                return [r.left + L.xaxis._offset + L.xaxis.l2p(t.x[0]),
                        r.top + L.yaxis._offset + L.yaxis.l2p(t.y[0]),
                        t.customdata[0], t.name]; }"""
        )
        page.mouse.move(x, y)
        tip = page.locator("#tip img")
        tip.wait_for(timeout=10_000)
        src = tip.get_attribute("src")
        assert src == f"/thumb/{row}"
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", tip.element_handle())
        assert label in page.locator("#tip").inner_text()
        browser.close()
