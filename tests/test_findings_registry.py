"""The findings registry: an issue type declared in one module reaches findings.csv, the counts,
the review queue of every editor (the page's filter in a real browser) and the keep tags of the
next run; the documentation's column table and the shared words are held to the registry."""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_explore as base
from helpers import make_classes

import embedscope
from embedscope import findings, vocabulary
from embedscope.decisions import ReviewQueue, apply_decisions, read_decisions
from embedscope.explore import write_explorer
from embedscope.ingest import ingest
from embedscope.layout import Layout

REPO = Path(__file__).resolve().parents[1]
browser = base.browser  # one Chromium for this module too

#: The whole of a toy family: one module, nothing else edited.
TOY_MODULE = '''
import numpy as np
import pandas as pd

from embedscope.findings import Column, Family, IssueType


def compute(context):
    """Images whose file name ends in 0 are "toys", scored by their name's length."""
    toy = context.rows["path"].str.endswith("_0.png").to_numpy()
    score = np.where(toy, 0.5, 0.0).astype(np.float32)
    return pd.DataFrame({"toy_score": score, "toy": toy})


def reasons(table, at, context):
    return [f"a toy ({table['path'].iat[i]})" for i in at]


FAMILY = Family(
    name="toys",
    order=99,
    columns=(Column("toy_score", "0.5 for a toy"), Column("toy", "a toy")),
    compute=compute,
    types=(IssueType("toy", weight=3.0, reason=reasons),),
)
'''


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[findings.Family]:
    """The toy module, written to a folder of its own and registered for one test."""
    path = tmp_path / "toy_family.py"
    path.write_text(TOY_MODULE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("toy_family", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    family = findings.register(module.FAMILY)
    yield family
    findings.unregister(family.name)


def _per_image(n: int) -> dict:
    return {
        "mislabel_score": np.linspace(0, 0.5, n).astype(np.float32),
        "label_issue": np.zeros(n, bool),
        "suggested_label": np.array(["red"] * n, dtype=object),
        "suggested_share": np.ones(n, np.float32),
        "outlier_score": np.zeros(n, np.float32),
        "probe_label": np.array(["red"] * n, dtype=object),
        "probe_share": np.ones(n, np.float32),
        "neighbour_votes": np.full(n, 5),
        "k": 5,
    }


def test_a_toy_issue_type_in_one_module_reaches_findings_csv_and_the_review_filter(
    toy, tmp_path, browser
) -> None:
    root = make_classes(tmp_path / "imgs", per_class=3)
    layout = Layout("toys", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(root), layout).reset_index(drop=True)
    rows = manifest[["path", "label"]]
    table = findings.findings_table(rows, _per_image(len(rows)), manifest)
    findings.write_findings(table, layout)

    back = findings.read_findings(layout).set_index("path")
    toys = sorted(p for p in back.index if p.endswith("_0.png"))
    assert len(toys) == 3 and {"toy", "toy_score"} <= set(back.columns)
    assert list(back.columns[-5:]) == ["toy_score", "toy", "issues", "reason", "review_priority"]
    assert all("toy" in back.loc[p, "issues"].split(";") for p in toys)
    assert back.loc[toys[0], "reason"].endswith(f"a toy ({toys[0]})")
    assert back.loc[toys, "review_priority"].tolist() == [2.5] * 3  # 1 + weight 3 x score 0.5
    assert findings.issue_counts(table)["toy"] == 3 and "toy" in findings.top_findings(table)

    # every editor's review queue reads the types from the data: the toy is in its filter
    points = rows.assign(x=np.arange(len(rows), dtype=float), y=0.0)
    points = findings.with_findings(points, findings.read_findings(layout))
    assert ("toy (3)", "toy") in ReviewQueue(points).options()
    page = write_explorer(points, root, tmp_path / "explorer.html")
    assert ["toy (3)", "toy"] in base._data(page.read_text(encoding="utf-8"))["review"]["options"]
    p = base.Page(browser, page)
    p.page.click("#review-open")
    assert "toy (3)" in p.page.locator("#review-issue option").all_text_contents()
    p.page.select_option("#review-issue", value="toy")
    assert "a toy (" in p.page.locator("#review .reason").text_content()  # and low contrast
    p.page.keyboard.press("k")  # keep: the person looked, it is fine
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(p.page.evaluate("() => window.embedscope.decisionsCsv()"), "utf-8")
    p.assert_safe()
    p.close()

    # the next run honours the page's keep:toy tag
    kept, _ = apply_decisions(manifest, read_decisions(decisions))
    assert kept["tags"].str.contains("keep:toy").sum() == 1
    again = findings.findings_table(rows, _per_image(len(rows)), kept)
    assert findings.issue_counts(again)["toy"] == 2


def test_old_names_still_work_keep_label_and_label_issue(tmp_path) -> None:
    """The label type became ``mislabel``: decisions files with ``keep:label`` keep working,
    and ``label_issue`` is still written (and read from an older findings file)."""
    root = make_classes(tmp_path / "imgs", per_class=2)
    layout = Layout("old", tmp_path / "data", tmp_path / "reports")
    manifest = ingest(str(root), layout).reset_index(drop=True)
    rows = manifest[["path", "label"]]
    per_image = _per_image(len(rows)) | {"label_issue": np.arange(len(rows)) < 2}
    table = findings.findings_table(rows, per_image, manifest)
    assert findings.issue_counts(table)["mislabel"] == 2
    assert (table["label_issue"] == table["mislabel"]).all()
    tagged = manifest.assign(tags=["keep:label" if i < 2 else "" for i in range(len(rows))])
    assert not findings.findings_table(rows, per_image, tagged)["mislabel"].any()

    old = table.drop(columns="mislabel")  # a findings.csv written before the rename
    layout.reports_dir.mkdir(parents=True, exist_ok=True)
    old.to_csv(layout.findings, index=False)
    assert findings.read_findings(layout)["mislabel"].sum() == 2


def test_register_refuses_a_type_or_column_twice(toy) -> None:
    clash = findings.Family("again", 1, (findings.Column("toy", "x"),), compute=lambda c: None)
    with pytest.raises(ValueError, match="already registered"):
        findings.register(clash)
    renamed = findings.Family(
        "label",
        1,
        (findings.Column("x_score", "x"), findings.Column("x", "x")),
        compute=lambda c: None,
        types=(findings.IssueType("label", 1.0, lambda t, a, c: []),),  # the old name
    )
    with pytest.raises(ValueError, match="already registered"):
        findings.register(renamed)


def test_every_type_is_named_type_and_type_score_and_declared_once() -> None:
    families = findings.families()
    assert [f.name for f in families] == ["labels", "outliers", "quality", "duplicates", "leaks"]
    names = [c.name for c in findings.columns()]
    assert len(names) == len(set(names))
    for t in findings.issue_types():
        assert {t.flag, t.score} <= set(names) and t.flag == t.name
        assert t.score == f"{t.name}_score" and t.weight > 0
    assert tuple(t.name for t in findings.issue_types()) == findings.ISSUE_TYPES
    assert {t.name: t.weight for t in findings.issue_types()} == findings.IMPORTANCE
    assert set(findings.POINT_COLUMNS) <= set(names)


def _docs_table() -> tuple[Path, dict[str, str]]:
    """The findings column table of the docs (docs/findings.md, else the README): each
    backticked column name -> the text of its row."""
    page = REPO / "docs" / "findings.md"
    page = page if page.is_file() else REPO / "README.md"
    text = page.read_text(encoding="utf-8")
    section = re.search(r"^#+ The findings table$(.*?)(?=^#)", text, re.S | re.M)
    assert section, f"{page.name} has no section 'The findings table'"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2:
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells[1]
    return page, rows


def test_the_docs_column_table_is_the_registry() -> None:
    page, rows = _docs_table()
    assert set(rows) == {c.name for c in findings.columns()}, page
    listed = re.findall(r"`([a-z_]+)`", rows["issues"].split("(")[0])  # not the aside
    assert listed == [t.name for t in findings.issue_types()], "issues lists every type, in order"


def test_shared_words_live_in_the_ground_floor_vocabulary() -> None:
    """vocabulary imports nothing of the package; no module takes these words from ingest."""
    src = Path(embedscope.__file__).parent
    tree = ast.parse((src / "vocabulary.py").read_text(encoding="utf-8"))
    imported = [
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom | ast.Import)
    ]
    assert not any("embedscope" in m for m in imported)
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for name in ("UNLABELLED", "DROPPED_REASON", "METHODS"):
            assert not re.search(
                rf"from embedscope\.(ingest|reduce) import [^\n]*\b{name}\b", text
            ), f"{path.name} takes {name} from a stage"
    assert vocabulary.precision_name("float32") == "fp32" == vocabulary.precision_name("fp32")
    assert vocabulary.issue_type("label") == "mislabel"
    with pytest.raises(ValueError, match="precision must be auto, fp32, bf16, fp16, int8"):
        vocabulary.precision_name("float64")
    assert vocabulary.DECISION_COLUMNS == ("path", "label", "tags")
