"""docs/dash.png: a report's Dash app (``make serve``) in headless Chromium, with a box drawn in
its 2D selection view (the gallery fills) and the hover card over a point of that view
(`make run-all` first; ``make pictures`` runs it on its own run of the sample).

    .venv/bin/python scripts/dash_screenshot.py [NAME] [DATA_ROOT] [REPORTS_ROOT] [docs/dash.png]
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from browser import CHROMIUM_ARGS, ensure_chromium
from playwright.sync_api import sync_playwright

from embedscope.explore.dash import create_app
from embedscope.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
#: The screen positions of a 2D plotly graph's points, with their rows: [[x, y, row], ...].
POINTS_JS = """(sel) => { const gd = document.querySelector(sel), L = gd._fullLayout;
  const r = gd.getBoundingClientRect(), out = [];
  gd._fullData.forEach((t) => { if (t.visible !== true) return;
    for (let k = 0; k < t.x.length; k++) out.push([r.left + L.xaxis._offset + L.xaxis.l2p(t.x[k]),
      r.top + L.yaxis._offset + L.yaxis.l2p(t.y[k]), Number(t.customdata[k])]); });
  return out; }"""


def screenshot(layout: Layout, out: Path, *, method: str = "pca", dims: int = 3) -> Path:
    """Serve the app on a free loopback port, box-select around the selection view's centre,
    hover a point beside the box and save a picture of the window."""
    from werkzeug.serving import make_server

    app = create_app(layout, method=method, dims=dims)
    srv = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    view = "#select-map .js-plotly-plot" if dims == 3 else "#map .js-plotly-plot"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(f"http://127.0.0.1:{srv.server_port}/")
            page.wait_for_function(
                f"() => document.querySelector('{view}')?._fullLayout?.xaxis", timeout=60_000
            )
            page.wait_for_timeout(1500)  # the 3D map's first frame
            pts = page.evaluate(POINTS_JS, view)
            box = page.locator(view).bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.locator(f"{view.split()[0]} .modebar-btn[data-val='select']").first.click()
            page.mouse.move(cx - 45, cy - 45)
            page.mouse.down()
            page.mouse.move(cx + 45, cy + 45, steps=8)
            page.mouse.up()
            page.wait_for_selector("#gallery .gallery-tile", timeout=30_000)
            # a point left of the box (inside it, the box's own handles take the mouse)
            tx, ty = cx - 110, cy - 50
            x, y, _ = min(pts, key=lambda p: (p[0] - tx) ** 2 + (p[1] - ty) ** 2)
            page.mouse.move(x + 20, y + 20)
            page.mouse.move(x, y, steps=4)
            page.wait_for_selector(".es-card img", timeout=15_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.es-card img, #gallery img')]"
                ".every((i) => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            page.screenshot(path=str(out))
            browser.close()
    finally:
        srv.shutdown()
    return out


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "sample"
    data = Path(argv[1]) if len(argv) > 1 else ROOT / "data"
    reports = Path(argv[2]) if len(argv) > 2 else ROOT / "reports"
    out = Path(argv[3]) if len(argv) > 3 else ROOT / "docs" / "dash.png"
    print(f"[pictures] {screenshot(Layout(name, data, reports), out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
