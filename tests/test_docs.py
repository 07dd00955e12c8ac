"""The documentation holds together: every relative link and picture in README.md and
docs/*.md points to a file that exists, every ``#anchor`` to a heading of its page (GitHub's
slugs), every page can be reached from the README, and the README stays short. Plain text
checks: quick, no network."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code spans blanked: a link or a ``#`` in
    code is an example, not part of the document."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks, brackets, commas,
    dots …) removed, every space a hyphen; letters of any script kept."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its words
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers; a repeated heading gets ``-1``, ``-2`` … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The targets of a page's links and pictures, code left out."""
    prose = "\n".join(re.sub(r"`[^`]*`", "", line) for line in _prose(page.read_text("utf-8")))
    return LINK.findall(prose)


def broken(pages: list[Path]) -> list[str]:
    """One line per relative link whose file or anchor does not exist (web links not fetched)."""
    problems = []
    for page in pages:
        for target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            name = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
            if not file.exists():
                problems.append(f"{name}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
                problems.append(f"{name}: {target} (no such heading)")
    return problems


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_and_picture_points_to_a_file_and_heading_that_exist() -> None:
    assert len(pages()) > 8, "docs/ has its pages"
    assert broken(pages()) == []


def test_the_checker_finds_a_missing_file_a_missing_heading_and_ignores_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "b.md").write_text(
        "# Beyond one machine (Ray Data)\n\n## Two\n\n## Two\n\n### `make serve`, again\n",
        encoding="utf-8",
    )
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n![pic](docs/a.png) [ok](docs/b.md#beyond-one-machine-ray-data) "
        "[dup](docs/b.md#two-1) [code](docs/b.md#make-serve-again) [self](#top) "
        "[web](https://example.com/x) `[not a link](missing.md)`\n\n"
        "```\n[also not](gone.md)\n# not a heading\n```\n\n"
        "[gone](docs/gone.md) ![gone](docs/gone.png) [bad](docs/b.md#three)"
        " [bad](#not-a-heading)\n",
        encoding="utf-8",
    )
    assert broken([page]) == [
        f"{page}: docs/gone.md (no such file)",
        f"{page}: docs/gone.png (no such file)",
        f"{page}: docs/b.md#three (no such heading)",
        f"{page}: #not-a-heading (no such heading)",
    ]
    assert slug("Speed, precision and scale") == "speed-precision-and-scale"
    assert slug("JupyterLab (`make lab`)") == "jupyterlab-make-lab"


def test_every_docs_page_is_reached_from_the_readme_and_the_readme_stays_short() -> None:
    readme = ROOT / "README.md"
    reached = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    index = ROOT / "docs" / "index.md"
    reached |= {(index.parent / t.partition("#")[0]).resolve() for t in links(index)}
    assert {p.resolve() for p in (ROOT / "docs").glob("*.md")} <= reached | {index.resolve()}
    assert index.resolve() in reached
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 200
