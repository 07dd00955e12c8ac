"""`make bench` section `explorer_scale`, its JupyterLab rows: the live panel (the page's
explorer as an anywidget) at 100,000 and 1,000,000 points in a real JupyterLab, started as
``make lab`` starts it (``scripts/lab_driver.py``), its notebook run with Run All Cells and
measured in headless Chromium with a real mouse.

The notebook builds :class:`~embedscope.explore.live.LiveExplorer` on the section's points
(:func:`~bench_explorer_scale.scale_points`) with the numbered photo cells handed over as its
thumbnails, so the hover probe checks each card's pixels against the hovered point's own cell,
as for the page. Measured: seconds from Run All to the panel's data received (``data-ready``)
and to every point drawn (``data-drawn`` = N), the kernel's own build time, hover latency
(``timing.hoverMs`` p50/p95 and as Playwright saw it), and the kernel's resident memory after
the hovers (its sheets are files read when asked for, never held).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from pathlib import Path

import nbformat
from bench_explorer_scale import NumberedCells, hover_probe
from lab_driver import open_and_run_all, running_lab
from playwright.sync_api import TimeoutError as PlaywrightTimeout

SCRIPTS = Path(__file__).resolve().parent
PANEL = ".jp-OutputArea .embedscope-live"
#: The notebook: build the panel on the bench's points, then show it.
BUILD = """import sys, time
sys.path.insert(0, {scripts!r})
from bench_explorer_scale import NumberedCells, scale_points
{live_import}
points, nbrs = scale_points({n})
t0 = time.perf_counter()
live = LiveExplorer(points, ".", neighbors=nbrs, thumbnails=NumberedCells({n}, "photo"),
                    title="lab-{n}")
print(f"built in {{time.perf_counter() - t0:.1f}} s")"""
LIVE_IMPORT = "from embedscope.explore.live import LiveExplorer"
#: Runs before JupyterLab's scripts: when the panel first has its data and first draws all.
_CLOCK = """
window.__esMarks = {};
new MutationObserver(() => {
  const el = document.querySelector('.embedscope-live');
  if (!el) return;
  const m = window.__esMarks, now = performance.now();
  if (m.view === undefined) m.view = now;
  if (m.ready === undefined && el.dataset.ready === "1") m.ready = now;
  if (m.all === undefined && el.dataset.drawn === String(window.__esN)) m.all = now;
}).observe(document, {attributes: true, childList: true, subtree: true,
  attributeFilter: ["data-ready", "data-drawn", "class"]});
"""


def lab_rows(browser, work: Path, sizes: list[int], hovers: int) -> dict:
    """One row per size (``jupyterlab_<n>``), each in a fresh JupyterLab of its own."""
    out = {}
    for n in sorted(sizes):
        print(f"[bench] explorer_scale: JupyterLab live panel at {n:,} points", flush=True)
        out[f"jupyterlab_{n}"] = lab_size(browser, work / f"lab-{n}", n, hovers)
    return out


def write_notebook(path: Path, n: int, live_import: str = LIVE_IMPORT) -> Path:
    """The bench's notebook: build the panel (its build time printed), then show it."""
    nb = nbformat.v4.new_notebook()
    code = BUILD.format(scripts=str(SCRIPTS), n=n, live_import=live_import)
    nb.cells = [nbformat.v4.new_code_cell(code), nbformat.v4.new_code_cell("live")]
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def lab_size(browser, folder: Path, n: int, hovers: int, live_import: str = LIVE_IMPORT) -> dict:
    """The live panel on ``n`` points in a JupyterLab of its own: see the module's docstring.
    ``live_import``: the line that imports ``LiveExplorer`` (another version, to compare)."""
    write_notebook(folder / "books" / "panel.ipynb", n, live_import)
    row: dict = {"points": n}
    errors: list[str] = []
    with running_lab(folder / "books", home=folder / "home") as lab:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script(f"window.__esN = {n};" + _CLOCK)
        try:
            open_and_run_all(page, lab, "panel.ipynb", 600_000)
            t0, at0 = time.perf_counter(), page.evaluate("() => performance.now()")
            page.locator(f"{PANEL}[data-ready='1']").wait_for(timeout=1_800_000)
            row["seconds_run_to_data"] = round(time.perf_counter() - t0, 1)
            with contextlib.suppress(PlaywrightTimeout):
                page.wait_for_function("() => window.__esMarks.all !== undefined", timeout=120_000)
            marks = page.evaluate("() => window.__esMarks")
            drawn = page.evaluate(f"() => Number(document.querySelector('{PANEL}').dataset.drawn)")
            row["drawn"] = drawn
            if marks.get("all") is not None:
                row["seconds_run_to_all_drawn"] = round((marks["all"] - at0) / 1000, 1)
                row["seconds_view_to_all_drawn"] = round((marks["all"] - marks["view"]) / 1000, 2)
            else:
                row["seconds_run_to_all_drawn"] = f"n/a (only {drawn} of {n} drawn)"
            built = page.locator(".jp-OutputArea-output").filter(has_text="built in").first
            row["kernel_build"] = built.inner_text().strip()
            panel = page.locator(PANEL).first
            panel.scroll_into_view_if_needed()
            page.evaluate(f"""() => {{ const el = document.querySelector('{PANEL}');
                window.embedscope = el.embedscope; window.__esRoot = el.shadowRoot; }}""")
            probe = hover_probe(page, NumberedCells(n, "photo"), hovers)
            probe.pop("hover_last", None)
            row |= probe
            row |= kernel_memory(lab)
        finally:
            row["console_errors"] = len(errors)
            if errors:
                row["console_error_examples"] = errors[:3]
            context.close()
    return row


def kernel_memory(lab) -> dict:
    """The notebook kernel's resident memory now and at its peak (Linux ``/proc``), in MB."""
    with urllib.request.urlopen(f"{lab.root}/api/kernels?token={lab.token}") as r:
        ids = [k["id"] for k in json.loads(r.read())]
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            if any(f"kernel-{i}" in cmd for i in ids):
                status = (proc / "status").read_text()
                kb = {
                    line.split(":")[0]: int(line.split()[1])
                    for line in status.splitlines()
                    if line.startswith(("VmRSS", "VmHWM"))
                }
                return {
                    "kernel_rss_mb": round(kb["VmRSS"] / 1024),
                    "kernel_peak_rss_mb": round(kb["VmHWM"] / 1024),
                }
    return {"kernel_rss_mb": "n/a (kernel process not found)"}
