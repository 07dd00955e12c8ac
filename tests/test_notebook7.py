"""The live panel in Jupyter Notebook 7 (``jupyter notebook``), not only JupyterLab: a real
headless Notebook 7 started with the settings of ``make lab`` (``scripts/lab_driver.py``,
``app="notebook"``), driven through its menus by a real Chromium with a real mouse. One server
and one browser for the module; the notebook needs no model (points given, pictures from files).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from helpers import DRAWN_POINT_JS, PANEL_JS, launch_chromium, make_classes
from lab_driver import open_and_run_all, running_lab

SLOW = 180_000  # ms: a fresh kernel imports pandas and the kit on 2 shared cores

#: The notebook: the live panel on a small 2D map of real image files.
CODE = """import numpy as np, pandas as pd
from pathlib import Path
from embedscope.explore.live import LiveExplorer

root = Path({root!r})
paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))
xy = np.random.default_rng(0).normal(size=(len(paths), 2))
points = pd.DataFrame({{"x": xy[:, 0], "y": xy[:, 1], "path": paths,
                        "label": [p.split("/")[0] for p in paths]}})
live = LiveExplorer(points, root)
live"""


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("nb7")
    root = make_classes(tmp / "images", per_class=4, size=96)
    books = tmp / "books"
    books.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CODE.format(root=str(root)))]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(books / "panel.ipynb"))
    with (
        running_lab(books, home=tmp / "home", app="notebook") as server,
        sync_playwright() as pw,
    ):
        browser = launch_chromium(pw)
        yield server, browser
        browser.close()


def test_live_panel_in_notebook_7_shows_the_hovered_points_picture(notebook7) -> None:
    server, browser = notebook7
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_and_run_all(page, server, "panel.ipynb", SLOW, classic=True)
    # Notebook 7.6.5 itself logs one TypeError while its page loads, before any cell runs (its
    # keyboard-shortcuts plugin; seen as well on a notebook of just `1+1`): that one is allowed
    # there; from Run All on, when the panel lives, nothing may be logged.
    on_load = errors[:]
    errors.clear()
    assert all("reading 'schema'" in e for e in on_load), on_load
    assert "/notebooks/panel.ipynb" in page.url  # Notebook 7's own page, not JupyterLab's
    panel = page.locator(".jp-OutputArea .embedscope-live[data-ready='1']")
    try:
        panel.wait_for(timeout=SLOW)
    except Exception:
        printed = page.locator(".jp-OutputArea-output").all_inner_texts()
        pytest.fail(f"no live panel after {SLOW / 1000:.0f} s; the outputs: {printed}")
    panel.scroll_into_view_if_needed()
    page.wait_for_function(f"() => Number({PANEL_JS}.dataset.drawn) > 0", timeout=60_000)
    x, y, i = page.evaluate(DRAWN_POINT_JS)
    page.mouse.move(x + 40, y + 40)
    page.mouse.move(x, y)
    page.wait_for_function(
        f"() => {PANEL_JS}.shadowRoot.getElementById('hover').dataset.shown === '{i}'",
        timeout=60_000,
    )
    api = f"{PANEL_JS}.embedscope"
    path = page.evaluate(f"() => {api}.data.path[{i}]")
    hover = page.locator(".embedscope-live #hover")
    assert path in hover.inner_text().replace("\n", "")  # the hovered point's own card
    cell, want = page.evaluate(f"""() => [{PANEL_JS}.shadowRoot.querySelector('#hover .thumb')
        .dataset.cell, String({api}.data.thumb[{i}])]""")
    assert cell == want  # its own cell, of a sheet the kernel read from disk when asked
    image = hover.locator(".thumb").evaluate("(t) => getComputedStyle(t).backgroundImage")
    assert image.startswith('url("blob:')
    loaded = hover.locator(".thumb").evaluate(
        """async (t) => { const u = getComputedStyle(t).backgroundImage.slice(5, -2);
            const im = new Image(); im.src = u; await im.decode(); return im.naturalWidth; }"""
    )
    assert loaded > 0  # a real picture arrived
    assert errors == [], errors
    page.close()
