"""The docs' pictures, made from a real run rather than by hand (``make pictures``):

- ``docs/explorer.png``: the built-in sample's ``explorer.html`` with a hover card open;
- ``docs/review-queue.png``: the same page's review queue, on its second flagged image;
- ``docs/gallery.png``: the same page with a box selection in 3D and its gallery
  (``gallery_screenshot.py``);
- ``docs/live-panel.png``: ``04_explore`` with ``mode="live"`` in a headless JupyterLab, after a
  real click on a point (larger image and neighbours in the panel);
- ``docs/dash.png``: the same report's Dash app (``make serve``) with a box drawn in its 2D
  selection view and the hover card open (``dash_screenshot.py``, which also runs on its own);
- ``docs/leak-review.png``: a leak beside its train image in the page's review queue, from a
  run of a small train/test set built from the sample (``leak_screenshot.py``, also alone).

Runs the four notebooks on the sample into a temporary folder, so nothing of the user's
``data/`` or ``reports/`` is touched. Needs Chromium (found or provisioned like ``make test``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from browser import CHROMIUM_ARGS, ensure_chromium
from dash_screenshot import screenshot as dash_picture
from gallery_screenshot import screenshot as gallery_picture
from lab_driver import open_and_run_all, parameterized, running_lab
from leak_screenshot import screenshot as leak_picture
from playwright.sync_api import sync_playwright

from embedscope.cli import main as embedscope
from embedscope.layout import Layout

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def hover_somewhere(page, plot: str, card: str) -> None:
    """Move the mouse outwards from the plot's centre until the hover card shows a point."""
    box = page.locator(plot).first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for radius in range(0, 240, 6):
        for dx, dy in ((radius, 0), (0, radius), (-radius, 0), (0, -radius)):
            page.mouse.move(cx + dx, cy + dy)
            page.wait_for_timeout(60)
            if page.locator(card).first.is_visible():
                return
    raise RuntimeError(f"no point answered a hover near the centre of {plot}")


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, reports = tmp / "data", tmp / "reports"
        rc = embedscope(["run-all", "--data-root", str(data), "--reports-root", str(reports)])
        if rc:
            return rc
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
            page.goto((reports / "sample" / "explorer.html").as_uri())
            page.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
            hover_somewhere(page, "#plot", "#hover:not([hidden])")
            page.screenshot(path=str(DOCS / "explorer.png"))
            print(f"[pictures] {DOCS / 'explorer.png'}")
            page.click("#review-open")
            page.keyboard.press("ArrowRight")
            page.screenshot(path=str(DOCS / "review-queue.png"))
            print(f"[pictures] {DOCS / 'review-queue.png'}")

            books = tmp / "notebooks"
            books.mkdir()
            parameterized(
                REPO / "notebooks" / "04_explore.ipynb",
                books / "04_explore.ipynb",
                data_root=str(data),
                reports_root=str(reports),
                dims=2,
                mode="live",
            )
            with running_lab(books, home=tmp / "lab") as lab:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                open_and_run_all(page, lab, "04_explore.ipynb")
                panel = page.locator(".jp-OutputArea .embedscope-live[data-ready='1']").first
                panel.wait_for(timeout=180_000)
                panel.scroll_into_view_if_needed()
                page.locator(".embedscope-live #review-open").click()  # the page's queue
                page.wait_for_timeout(1000)
                live = page.locator(".embedscope-live[data-ready='1']")  # inside the output
                widget = page.locator(".jp-OutputArea-output").filter(has=live)
                widget.first.screenshot(path=str(DOCS / "live-panel.png"))
                print(f"[pictures] {DOCS / 'live-panel.png'}")
            browser.close()
        gallery = gallery_picture(reports / "sample" / "explorer.html", DOCS / "gallery.png")
        print(f"[pictures] {gallery}")
        print(f"[pictures] {dash_picture(Layout('sample', data, reports), DOCS / 'dash.png')}")
    print(f"[pictures] {leak_picture(DOCS / 'leak-review.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
