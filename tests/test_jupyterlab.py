"""04_explore where users live: a real headless JupyterLab, started the way ``make lab`` starts
it, driven through its UI by a real Chromium with a real mouse. One JupyterLab for the module.

The notebooks are 04_explore itself, parameterized by papermill (nothing executed) for a small
2D map, run with JupyterLab's own "Run All Cells": ``mode="live"`` (FigureWidget + panel) and
``mode="dash"`` (the Dash app inline through ``jupyter_mode``).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FIRST_POINT_JS, POINTS_NEAR_JS, launch_chromium, make_classes, tiny_vit
from lab_driver import free_port, open_and_run_all, parameterized, running_lab

from embedscope.embed import embed
from embedscope.ingest import ingest
from embedscope.layout import Layout

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_explore.ipynb"
ORIGINAL_PX = 400  # the images' real size: the click view must show this, not a thumbnail
SLOW = 300_000  # ms: a fresh kernel imports torch, transformers and plotly on 2 shared cores


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A dataset embedded by a tiny saved ViT, the two notebooks, JupyterLab and Chromium."""
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("lab")
    source = make_classes(tmp / "source", per_class=4, size=ORIGINAL_PX)
    layout = Layout("lab", tmp / "data", tmp / "reports")
    model = str(tiny_vit(tmp / "vit"))
    ingest(str(source), layout)
    embed(layout, model)
    books = tmp / "notebooks"
    books.mkdir()
    common = dict(
        name="lab",
        model=model,
        method="pca",
        dims=2,
        data_root=str(layout.data_root),
        reports_root=str(layout.reports_root),
    )
    for mode in ("live", "dash"):
        parameterized(NOTEBOOK, books / f"{mode}.ipynb", **common, mode=mode, dash_port=free_port())
    with running_lab(books, home=tmp / "home") as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        yield server, browser
        browser.close()


def _open_and_run(lab: tuple[Any, Any], notebook: str) -> Any:
    server, browser = lab
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    open_and_run_all(page, server, notebook, SLOW)
    return page


def _wait_for(page: Any, locator: Any) -> None:
    """Wait for an output; on time-out, fail with what the cells printed (errors included)."""
    try:
        locator.wait_for(timeout=SLOW)
    except Exception:
        printed = page.locator(".jp-OutputArea-output").all_inner_texts()
        pytest.fail(f"no {locator} after {SLOW / 1000:.0f} s; the outputs: {printed}")


def _shut_down_kernels(lab: tuple[Any, Any]) -> None:
    """The next notebook starts with the cores to itself."""
    server, _ = lab
    with urllib.request.urlopen(f"{server.root}/api/sessions?token={server.token}") as r:
        sessions = json.loads(r.read())
    for session in sessions:
        url = f"{server.root}/api/sessions/{session['id']}?token={server.token}"
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE")).close()


def _no_dialog(page: Any) -> None:
    """Nothing pops up over the notebook: no 'Build Recommended' dialog, no news toast."""
    popups = page.locator(".jp-Dialog, .jp-toast-content, .Toastify__toast")
    assert popups.count() == 0, popups.all_inner_texts()


def test_live_panel_shows_the_hovered_image_and_neighbours_on_click(lab) -> None:
    page = _open_and_run(lab, "live.ipynb")
    plot = page.locator(".jp-OutputArea .js-plotly-plot").first
    _wait_for(page, plot)
    plot.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => document.querySelector('.jp-OutputArea .js-plotly-plot')?._fullData?.length",
        timeout=60_000,
    )
    _no_dialog(page)
    sel = ".jp-OutputArea .js-plotly-plot"
    x, y, _, _ = page.evaluate(FIRST_POINT_JS, sel)
    labels = {name for _, name in page.evaluate(POINTS_NEAR_JS, [sel, x, y, 3])}
    preview = page.locator("img.embedscope-preview")
    caption = page.locator(".embedscope-caption")
    page.mouse.move(x + 30, y + 30)
    page.mouse.move(x, y)
    page.wait_for_function(
        "(el) => el.complete && el.naturalWidth > 0", arg=preview.element_handle(), timeout=60_000
    )
    hovered_width = preview.evaluate("(el) => el.naturalWidth")
    assert hovered_width < ORIGINAL_PX  # the hover view is the thumbnail
    assert caption.inner_text().strip() in labels  # a point under the mouse
    page.mouse.click(x, y)
    page.wait_for_function(
        f"(el) => el.naturalWidth === {ORIGINAL_PX}", arg=preview.element_handle(), timeout=60_000
    )
    neighbours = page.locator(".embedscope-neighbours img")
    neighbours.first.wait_for(timeout=60_000)
    assert neighbours.count() >= 3
    _no_dialog(page)
    page.close()
    _shut_down_kernels(lab)


def test_dash_app_inline_shows_the_tooltip_image(lab) -> None:
    page = _open_and_run(lab, "dash.ipynb")
    iframe = page.locator(".jp-OutputArea iframe[src^='http://127.0.0.1']").first
    _wait_for(page, iframe)
    iframe.scroll_into_view_if_needed()
    frame = page.frame_locator(".jp-OutputArea iframe[src^='http://127.0.0.1']").first
    frame.locator("#map .js-plotly-plot .scatterlayer").first.wait_for(timeout=60_000)
    inner = iframe.element_handle().content_frame()
    sel = "#map .js-plotly-plot"
    x, y, _, _ = inner.evaluate(FIRST_POINT_JS, sel)
    near = dict(inner.evaluate(POINTS_NEAR_JS, [sel, x, y, 3]))
    box = iframe.bounding_box()
    page.mouse.move(box["x"] + x + 30, box["y"] + y + 30)
    page.mouse.move(box["x"] + x, box["y"] + y)
    tip = frame.locator("#tip img")
    tip.wait_for(timeout=30_000)
    row = int(tip.get_attribute("src").removeprefix("/thumb/"))
    assert row in near  # a point under the mouse, with its own label
    assert inner.evaluate("() => document.querySelector('#tip img').naturalWidth") > 0
    assert near[row] in frame.locator("#tip").inner_text()
    _no_dialog(page)
    page.close()
