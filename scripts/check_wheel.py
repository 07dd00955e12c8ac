"""The wheel step of .ci/run: what the built wheel carries, and the report its install made.

``contents WHEEL``: the wheel holds every file of ``src/embedscope`` that git tracks (the
package-data of pyproject.toml is complete), every notebook as ``embedscope/notebooks/`` and the
sample as ``embedscope/sample/``, exactly (nothing a run wrote into ``data/sample``).

``report FOLDER ROOT...``: ``FOLDER`` (``reports/<name>`` of a run) holds the four executed
notebooks with their HTML and an explorer page that carries the renderer (scatter.js) and draws
its points in Chromium, and no file in it names any ``ROOT`` (the run's folders) or the home
directory.

One line per failure, exit status 1; run from the repository's top.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_download", "02_embed", "03_reduce", "04_explore")


def tracked(folder: str) -> list[str]:
    """The files git tracks (or would: new, not ignored) under ``folder``, relative to it."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", folder],
        cwd=TOP,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted(p.removeprefix(folder + "/") for p in out if (TOP / p).is_file())


def contents(wheel: Path) -> list[str]:
    """What the wheel lacks, or carries that no source file is."""
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")}
    problems = []
    package = {f"embedscope/{p}" for p in tracked("src/embedscope") if "__pycache__" not in p}
    problems += [f"the wheel lacks {p}" for p in sorted(package - names)]
    for folder, inside in (("notebooks", "notebooks"), ("data/sample", "sample")):
        want = {f"embedscope/{inside}/{p}" for p in tracked(folder)}
        have = {n for n in names if n.startswith(f"embedscope/{inside}/")}
        problems += [f"the wheel lacks {p}" for p in sorted(want - have)]
        problems += [f"the wheel carries {p}, which {folder}/ does not" for p in have - want]
    return problems


def report(folder: Path, roots: list[Path]) -> list[str]:
    """What the report lacks, the directories it names, and whether its page draws."""
    problems = []
    for stem in NOTEBOOKS:
        problems += [
            f"{folder.name}/{stem}{suffix} is missing"
            for suffix in (".ipynb", ".html")
            if not (folder / f"{stem}{suffix}").is_file()
        ]
    page = folder / "explorer.html"
    if not page.is_file():
        return [*problems, f"{folder.name}/explorer.html is missing"]
    scatter = (TOP / "src/embedscope/explore/scatter.js").read_text(encoding="utf-8")
    if scatter.strip() not in page.read_text(encoding="utf-8"):
        problems.append("explorer.html lacks scatter.js: the page cannot draw")
    needles = {str(r) for r in [*roots, Path.home()] if len(str(r)) > 1}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            blob = path.read_text(encoding="utf-8", errors="replace")
            problems += [f"{path.relative_to(folder)} names {n}" for n in needles if n in blob]
    drawn = points_drawn(page)
    if drawn <= 0:
        problems.append(f"explorer.html drew {drawn} points in Chromium")
    return problems


def points_drawn(page: Path) -> int:
    """How many points the page draws in headless Chromium, with no server and no network."""
    sys.path.insert(0, str(TOP / "scripts"))
    from browser import CHROMIUM_ARGS, MISSING, find_chromium
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit(MISSING)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        tab = browser.new_page()
        tab.goto(page.as_uri())
        tab.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
        drawn = int(tab.locator("body").get_attribute("data-drawn") or 0)
        browser.close()
    return drawn


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "contents":
        problems = contents(Path(argv[1]))
    elif len(argv) >= 2 and argv[0] == "report":
        problems = report(Path(argv[1]), [Path(r) for r in argv[2:]])
    else:
        print("usage: check_wheel.py contents WHEEL | report FOLDER ROOT...", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"check_wheel: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {argv[0]} of {Path(argv[1]).name}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
