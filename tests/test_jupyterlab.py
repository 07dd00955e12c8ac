"""04_explore where users live: a real headless JupyterLab, started the way ``make lab`` starts
it, driven through its UI by a real Chromium with a real mouse. One JupyterLab for the module.

The notebooks are 04_explore itself, parameterized by papermill (nothing executed) for a small
2D map, run with JupyterLab's own "Run All Cells": ``mode="live"`` (FigureWidget + panel) and
``mode="dash"`` (the Dash app inline through ``jupyter_mode``); and a notebook of a user's own
that opens the live panel on points with findings, to review them with the keys.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    DRAWN_POINT_JS,
    FIRST_POINT_JS,
    PANEL_JS,
    POINTS_NEAR_JS,
    launch_chromium,
    make_classes,
    tiny_vit,
)
from lab_driver import free_port, open_and_run_all, parameterized, running_lab

from embedscope.analyse import analyse
from embedscope.embed import embed
from embedscope.findings import findings_table, write_findings
from embedscope.ingest import ingest, load_manifest
from embedscope.layout import Layout
from embedscope.store import load_embeddings

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_explore.ipynb"
ORIGINAL_PX = 400  # the images' real size: the click view must show this, not a thumbnail
SLOW = 300_000  # ms: a fresh kernel imports torch, transformers and plotly on 2 shared cores


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Layout]]:
    """A dataset embedded by a tiny saved ViT, the two notebooks, JupyterLab and Chromium."""
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("lab")
    source = make_classes(tmp / "source", per_class=4, size=ORIGINAL_PX)
    layout = Layout("lab", tmp / "data", tmp / "reports")
    model = str(tiny_vit(tmp / "vit"))
    ingest(str(source), layout)
    embed(layout, model)
    per_image = analyse(layout, model)  # 03_reduce's findings, which 04_explore reads
    rows = load_embeddings(layout, model).rows
    write_findings(findings_table(rows, per_image, load_manifest(layout)[0]), layout)
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
    _review_notebook(books / "review.ipynb", layout, model)
    with running_lab(books, home=tmp / "home") as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        yield server, browser, layout
        browser.close()


#: The review notebook's code: the live panel on the map, three images flagged "dark".
REVIEW_CODE = """from embedscope.explore.live import LiveExplorer
from embedscope.ingest import load_manifest
from embedscope.layout import Layout
from embedscope.points import neighbor_rows, point_table

layout = Layout("lab", {data!r}, {reports!r})
points = point_table(layout, {model!r}, "pca", 2, 0)
points = points.assign(issues=["dark" if i < 3 else "" for i in range(len(points))],
                       reason="mean brightness 0.04", review_priority=1.0)
live = LiveExplorer(points, load_manifest(layout)[1], neighbors=neighbor_rows(points),
                    layout=layout)
live"""


def _review_notebook(path: Path, layout: Layout, model: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Review"),
        nbformat.v4.new_code_cell(
            REVIEW_CODE.format(data=str(layout.data_root), reports=str(layout.reports_root),
                               model=model)
        ),
        nbformat.v4.new_code_cell("live.decisions"),
    ]  # fmt: skip
    nb.metadata["kernelspec"] = nbformat.read(NOTEBOOK, as_version=4).metadata["kernelspec"]
    nbformat.write(nb, str(path))


def _open_and_run(lab: tuple[Any, Any], notebook: str) -> Any:
    server, browser, _ = lab
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
    server, _, _ = lab
    with urllib.request.urlopen(f"{server.root}/api/sessions?token={server.token}") as r:
        sessions = json.loads(r.read())
    for session in sessions:
        url = f"{server.root}/api/sessions/{session['id']}?token={server.token}"
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE")).close()


def _no_dialog(page: Any) -> None:
    """Nothing pops up over the notebook: no 'Build Recommended' dialog, no news toast."""
    popups = page.locator(".jp-Dialog, .jp-toast-content, .Toastify__toast")
    assert popups.count() == 0, popups.all_inner_texts()


#: The widget's shadow root and its explorer (the page's test interface).


def _console_errors(page: Any) -> list[str]:
    """Errors the page logs from now on (console.error and uncaught exceptions)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def _panel_ready(page: Any) -> None:
    panel = page.locator(".jp-OutputArea .embedscope-live[data-ready='1']")
    _wait_for(page, panel)
    panel.scroll_into_view_if_needed()
    page.wait_for_function(f"() => Number({PANEL_JS}.dataset.drawn) > 0", timeout=60_000)


def test_live_panel_is_the_pages_explorer_hover_and_box_select(lab) -> None:
    """04_explore with mode="live": the page's explorer in the notebook; hovering a point
    shows that point's own picture, a box drag selects what it covers."""
    server, browser, _ = lab
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors = _console_errors(page)
    open_and_run_all(page, server, "live.ipynb", SLOW)
    _panel_ready(page)
    _no_dialog(page)
    # a point that is drawn, in page coordinates, and a hover on it
    x, y, i = page.evaluate(DRAWN_POINT_JS)
    page.mouse.move(x + 40, y + 40)
    page.mouse.move(x, y)
    hover = page.locator(".embedscope-live #hover")  # locators pierce the shadow root
    page.wait_for_function(
        f"() => {PANEL_JS}.shadowRoot.getElementById('hover').dataset.shown === '{i}'",
        timeout=60_000,
    )
    api = f"{PANEL_JS}.embedscope"
    path = page.evaluate(f"() => {api}.data.path[{i}]")
    assert path in hover.inner_text().replace("\n", "")  # the hovered point's own card
    cell, want = page.evaluate(f"""() => [{PANEL_JS}.shadowRoot.querySelector('#hover .thumb')
        .dataset.cell, String({api}.data.thumb[{i}])]""")
    assert cell == want  # its own picture: its cell of a sheet that arrived from the kernel
    image = hover.locator(".thumb").evaluate("(t) => getComputedStyle(t).backgroundImage")
    assert image.startswith('url("blob:')
    # box select: the Box tool, then a drag over the whole map
    page.locator(".embedscope-live #tool [data-tool='box']").click()
    plot = page.locator(".embedscope-live #plot").bounding_box()
    page.mouse.move(plot["x"] + 5, plot["y"] + 5)
    page.mouse.down()
    page.mouse.move(plot["x"] + plot["width"] - 5, plot["y"] + plot["height"] - 5, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => Number({PANEL_JS}.dataset.selected) > 0", timeout=30_000)
    chosen = page.evaluate(f"() => {api}.selected().length")
    assert chosen == int(page.evaluate(f"() => {PANEL_JS}.dataset.selected"))
    page.locator(".embedscope-live #grid .tile").first.wait_for(timeout=30_000)
    assert page.locator(".embedscope-live #grid .tile").count() == min(chosen, 48)
    _no_dialog(page)
    assert errors == [], errors
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


#: Every cell as JupyterLab holds it: its kind and its text.
CELLS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(c =>
    [c.classList.contains('jp-MarkdownCell') ? 'markdown' : 'code',
     c.querySelector('.jp-InputArea-editor')?.innerText ?? ''])"""


def test_review_keys_stay_in_the_live_panel_and_decisions_reach_the_disk(lab) -> None:
    """d, k and the arrows review in the panel; JupyterLab's own shortcuts for those keys
    (d d deletes a cell, m makes it markdown, x cuts it) never fire; each decision is in the
    dataset's decisions.csv at once."""
    server, browser, _ = lab
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors = _console_errors(page)
    open_and_run_all(page, server, "review.ipynb", SLOW)
    _panel_ready(page)
    page.locator(".embedscope-live #review-open").click()
    progress = page.locator(".embedscope-live #review-progress")
    page.wait_for_function(
        "(el) => el.textContent.includes('0 of 3 reviewed')", arg=progress.element_handle()
    )
    cells = page.evaluate(CELLS_JS)
    assert len(cells) == 3 and cells[0] == ["markdown", "# Review"]
    for key in ("d", "k", "d", "ArrowLeft", "m", "x"):
        page.keyboard.press(key)
    page.wait_for_function(
        "(el) => el.textContent.includes('3 of 3 reviewed')", arg=progress.element_handle()
    )
    page.wait_for_timeout(500)  # a shortcut acts at once: give it time to show
    assert page.evaluate(CELLS_JS) == cells, "no cell was added, deleted or changed"
    kept = lab[2].decisions
    page.wait_for_function(
        "(el) => el.textContent.startsWith('Written to')",
        arg=page.locator(".embedscope-live #storage").element_handle(),
        timeout=30_000,
    )
    rows = kept.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "path,label,tags" and len(rows) == 4
    assert sorted(r.rsplit(",", 1)[1] for r in rows[1:]) == ["drop", "drop", "keep:dark"]
    _no_dialog(page)
    assert errors == [], errors
    page.close()
    _shut_down_kernels(lab)
