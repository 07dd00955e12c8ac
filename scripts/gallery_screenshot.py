"""docs/gallery.png: a report's explorer with a box selection in one class (the sample's
``flags``, else the largest) and the gallery of it, drawn by the real page in headless Chromium
(`make run-all` first).

    .venv/bin/python scripts/gallery_screenshot.py [reports/sample/explorer.html] [docs/gallery.png]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from browser import CHROMIUM_ARGS, ensure_chromium
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def screenshot(page_path: Path, out: Path, label: str = "flags", half: float = 40) -> Path:
    """Box-select around the middle of ``label``'s points on screen, sort the gallery by the
    mislabel score (highest first), pin the first tile and save a picture of the window."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        data = page.evaluate("() => window.embedscope.data")
        xy = np.array(page.evaluate("() => Array.from(window.embedscope.screenPositions())"))
        classes = data["classes"]
        code = (
            classes.index(label)
            if label in classes
            else Counter(data["label"]).most_common(1)[0][0]
        )
        mine = np.array(data["label"]) == code
        cx, cy = np.nanmedian(xy.reshape(-1, 2)[mine], axis=0)
        box = page.locator("#plot").bounding_box()
        page.click("#tool [data-tool='box']")
        page.mouse.move(box["x"] + cx - half, box["y"] + cy - half)
        page.mouse.down()
        page.mouse.move(box["x"] + cx + half, box["y"] + cy + half, steps=8)
        page.mouse.up()
        page.wait_for_selector("#grid .tile")
        if page.locator("#sort option", has_text="mislabel_score").count():
            page.select_option("#sort", label="mislabel_score")
            page.click("#sort-dir")
        page.locator("#grid .tile").first.click()
        page.wait_for_selector("#detail:not([hidden])")
        page.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    src = Path(args[0]) if args else ROOT / "reports" / "sample" / "explorer.html"
    dest = Path(args[1]) if len(args) > 1 else ROOT / "docs" / "gallery.png"
    if not src.is_file():
        sys.exit(f"{src} is missing: run `make run-all` first")
    print(screenshot(src, dest))
