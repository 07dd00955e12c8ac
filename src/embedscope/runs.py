"""A whole run: the four notebooks of one dataset (``run-all``) or ``05_compare``, checked
before they start, one run per dataset at a time, written into a staging folder that replaces
the report only when every notebook succeeded, and summed up in a few lines at the end.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedscope.decisions import read_decisions
from embedscope.execute import NotebookFailed, report_roots, run_notebook, share_report
from embedscope.ingest import check_source, default_name, read_labels
from embedscope.layout import (
    Layout,
    locked,
    read_json,
    sweep_temps,
    update_metrics,
)
from embedscope.models import check_model
from embedscope.shipped import NOTEBOOKS_DIR, SAMPLE_DIR
from embedscope.vectors import VECTORS_MODEL, read_vectors
from embedscope.vocabulary import UNLABELLED
from embedscope.words import counted

NOTEBOOKS = ("01_download.ipynb", "02_embed.ipynb", "03_reduce.ipynb", "04_explore.ipynb")


#: engine="ray" without Ray: `make run-all` installs the runtime only, Ray is an optional extra.
RAY_MISSING = (
    "engine='ray' needs Ray, which is not installed: run `make ray` in the embedscope checkout "
    "(or there: pip install -c requirements/constraints.txt -e '.[ray]')"
)


class UnknownParameter(ValueError):
    """A parameter no notebook declares; the message names the closest one that exists."""


def check_parameters(notebooks: list[Path], extra: dict) -> None:
    """Refuse, before any notebook runs, a parameter none of ``notebooks`` declares (papermill
    would drop it silently: a typo would run with the default) and engine="ray" without Ray."""
    import papermill as pm

    declared = sorted({key for nb in notebooks for key in pm.inspect_notebook(str(nb))})
    for key in extra:
        if key not in declared:
            closest = difflib.get_close_matches(key, declared, n=1, cutoff=0)
            raise UnknownParameter(
                f"no notebook has a parameter {key!r}; the closest is {closest[0]!r}"
            )
    if extra.get("engine") == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError(RAY_MISSING)


def run_all(
    source: str = "sample",
    name: str = "",
    *,
    model: str = "mobilenet_v2",
    method: str = "pca",
    dims: int = 3,
    notebooks_dir: str | Path = NOTEBOOKS_DIR,
    data_root: str | Path = "data",
    reports_root: str | Path = "reports",
    decisions: str | Path | None = None,
    labels: str | Path | None = None,
    vectors: str | Path | None = None,
    extra: dict | None = None,
) -> Path:
    """Run the four notebooks in order for one dataset; returns ``reports/<name>``.

    ``labels`` is a labels file (path,label: the label of each image it names) for
    ``01_download``; it and ``decisions`` are read from where the user stands, and checked here.

    ``vectors`` is a vectors file (:mod:`embedscope.vectors`) that stands in for the embedding:
    ``02_embed`` stores its vectors as those of the pseudo-model ``[vectors]``, which the later
    notebooks read (``model`` is then not used). It is read from where the user stands and
    checked here, against the folder when ``source`` is one; its folder is named ``[vectors]``
    in the report.

    ``decisions`` is a ``decisions.csv`` (path,label,tags) for ``01_download`` to apply; it and
    ``extra`` (more notebook parameters) are checked before any notebook starts, so a bad file or
    a misspelt parameter costs one line, not a run.

    The notebooks write into a staging folder beside the report, which replaces
    ``reports/<name>/`` only once all four succeeded: a run that fails leaves the previous report
    as it was, with its own notebooks apart in ``reports/<name>/failed/``. A second run of the
    same name waits (one line) until the first is done, then reuses its work: two runs writing
    one report at once would interleave their notebooks.
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    check_parameters([notebooks_dir / nb for nb in NOTEBOOKS], extra or {})
    if decisions:
        decisions = str(Path(decisions).expanduser().resolve())  # notebooks run in notebooks/
        read_decisions(decisions)
    extra = dict(extra or {})
    labels = labels or extra.pop("labels", None)  # `--param labels=` means the same file
    if labels:
        labels = str(Path(labels).expanduser().resolve())  # notebooks run in notebooks/
        read_labels(labels)
    if source != "sample" and not source.startswith("kaggle:"):
        source = str(Path(source).expanduser().resolve())  # notebooks run in notebooks/
    if vectors:  # checked whole before any notebook runs: a bad file costs one line
        vectors = str(Path(vectors).expanduser().resolve())
        check_source(source)  # the folder must exist before its files are checked
        folder = SAMPLE_DIR if source == "sample" else Path(source)
        exclude = extra.get("exclude", [])  # the images ingest will leave out need none
        read_vectors(vectors, folder if folder.is_dir() else None, exclude)  # an archive: 02_embed
        model = VECTORS_MODEL
    # each refused here in one sentence, before a notebook runs or a report is touched
    layout = Layout(
        name or default_name(source), Path(data_root).resolve(), Path(reports_root).resolve()
    )
    if not vectors:
        check_source(source)
        model = check_model(model)  # a local folder resolved from where the user stands
    roots = report_roots(
        Path.cwd(),
        (notebooks_dir, "[notebooks]"),
        (layout.data_root, "[data]"),
        (layout.reports_root, "[reports]"),
        (source if Path(source).is_absolute() else None, "[dataset]"),
        (Path(decisions).parent if decisions else None, "[decisions folder]"),
        (Path(labels).parent if labels else None, "[labels folder]"),
        (Path(vectors).parent if vectors else None, VECTORS_MODEL),
        (model if Path(model).is_absolute() else None, f"[{Path(model).name}]"),
    )
    waiting = f"[embedscope] another run of {layout.name!r} is running: waiting for it to finish"
    with locked(layout.run_lock, waiting=waiting), staged(layout, notebooks_dir, roots) as stage:
        params = {
            "source": source,
            "name": layout.name,
            "model": model,
            "method": method,
            "dims": dims,
            "data_root": seen_from(notebooks_dir, layout.data_root),
            "reports_root": seen_from(notebooks_dir, stage.reports_root),
            "decisions": decisions or None,
            "labels": labels or None,
            "vectors": vectors or None,
            **extra,
        }
        timings = {}
        for k, nb in enumerate(NOTEBOOKS, 1):
            print(f"[embedscope] {k}/{len(NOTEBOOKS)} {nb} for {layout.name!r} …", flush=True)
            seconds = run_notebook(
                notebooks_dir / nb, stage.reports_dir / nb, params, cwd=notebooks_dir, roots=roots
            )
            timings[nb.removesuffix(".ipynb")] = round(seconds, 2)
            print(f"[embedscope] {k}/{len(NOTEBOOKS)} {nb} done in {seconds:.1f} s", flush=True)
        update_metrics(stage.metrics, "notebook_seconds", timings)
        share_report(stage.reports_dir, roots)
    for line in run_summary(read_json(layout.metrics, default={}) or {}):
        print(f"[embedscope] {line}", flush=True)
    print(f"[embedscope] done: open {layout.explorer}", flush=True)
    return layout.reports_dir


def run_summary(metrics: dict) -> list[str]:
    """What a run found, in three lines for the terminal (``metrics.json`` has the rest):
    images embedded and files skipped with their commonest reasons, what the findings flag,
    and ``knn_accuracy`` beside what guessing would score."""
    ingest, embed = metrics.get("ingest", {}), metrics.get("embed", {})
    skipped = [*ingest.get("skipped_files", []), *embed.get("skipped_files", [])]
    done = "with vectors from a file" if embed.get("model") == VECTORS_MODEL else "embedded"
    line = f"{counted(embed.get('images', ingest.get('images', 0)), 'image')} {done}"
    if skipped:
        reasons = Counter(str(s.get("reason", "")).split(" (")[0] for s in skipped)
        common = "; ".join(f"{reason}: {n}" for reason, n in reasons.most_common(3))
        more = "; …" if len(reasons) > 3 else ""
        line += f", {counted(len(skipped), 'file')} skipped ({common}{more})"
    if ingest.get("duplicates"):
        line += f", {counted(ingest['duplicates'], 'exact duplicate')}"
    lines = [line]
    findings = metrics.get("findings", {})
    types = {
        k: v for k, v in findings.items() if v and k not in ("images_flagged", "labelled_images")
    }
    if types:
        each = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in types.items())
        lines.append(
            f"findings: {counted(findings.get('images_flagged', 0), 'image')} flagged ({each})"
        )
    else:
        lines.append("findings: no image flagged")
    classes = {k: v for k, v in ingest.get("labels", {}).items() if k != UNLABELLED}
    knn = metrics.get("knn_accuracy")
    if knn is None or len(classes) < 2:
        lines.append("labels: not judged (fewer than two classes); the map is coloured by cluster")
    else:
        chance = max(classes.values()) / sum(classes.values())
        skill = (knn - chance) / (1 - chance) if chance < 1 else 0.0
        verdict = next(v for bound, v in _VERDICTS if skill >= bound)
        lines.append(
            f"knn_accuracy {knn:.3f} against {chance:.3f} by always guessing the commonest of "
            f"{counted(len(classes), 'class', 'classes')}: {verdict}"
        )
    return lines


#: knn_accuracy's share of the way from chance to perfect, and what it says of the model.
_VERDICTS = (
    (0.8, "the model separates the classes well"),
    (0.5, "the model separates most classes"),
    (0.15, "the model separates the classes weakly"),
    (float("-inf"), "no better than chance: the model does not see these classes"),
)


def run_compare(
    layout: Layout,
    models: list[str],
    methods: list[str],
    *,
    dims: int = 2,
    notebooks_dir: str | Path | None = None,
) -> Path:
    """``05_compare`` for ``models`` x ``methods`` on a dataset already run; returns the
    executed notebook. It lands in the report only when it succeeds: a failed comparison goes
    to ``failed/`` (:class:`NotebookFailed` names it there), the last good one stays. It holds
    the dataset's run lock, as ``run-all`` does."""
    notebooks = Path(notebooks_dir or NOTEBOOKS_DIR).resolve()
    roots = report_roots(
        Path.cwd(),
        (notebooks, "[notebooks]"),
        (layout.data_root, "[data]"),
        (layout.reports_root, "[reports]"),
        *((m, f"[{Path(m).name}]") for m in models if Path(m).is_absolute()),
    )
    params = {
        "name": layout.name,
        "models": models,
        "methods": methods,
        "dims": dims,
        "data_root": seen_from(notebooks, layout.data_root),
        "reports_root": seen_from(notebooks, layout.reports_root),
    }
    notebook = "05_compare.ipynb"
    waiting = f"[embedscope] another run of {layout.name!r} is running: waiting for it to finish"
    with locked(layout.run_lock, waiting=waiting):
        layout.reports_dir.mkdir(parents=True, exist_ok=True)
        sweep_temps(layout.reports_dir)
        staging = Path(
            tempfile.mkdtemp(
                prefix=f".compare.{os.getpid()}.", suffix=".tmp", dir=layout.reports_dir
            )
        )
        try:
            run_notebook(
                notebooks / notebook, staging / notebook, params, cwd=notebooks, roots=roots
            )
            for made in sorted(staging.iterdir()):
                os.replace(made, layout.reports_dir / made.name)
            share_report(layout.reports_dir, roots)
        except NotebookFailed as exc:
            set_apart(staging, layout.failed_dir)
            raise NotebookFailed(str(exc).replace(str(staging), str(layout.failed_dir))) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return layout.reports_dir / notebook


#: What a run-all keeps of the report it replaces: the last `make compare` (its own notebook,
#: made from the dataset's embeddings, which a later run-all does not redo).
CARRIED_OVER = ("05_compare.ipynb", "05_compare.html")


@contextmanager
def staged(layout: Layout, notebooks_dir: Path, roots: dict[str, str]) -> Iterator[Layout]:
    """A layout whose reports land in a staging folder beside ``reports/``; on success it
    replaces ``reports/<name>/`` at once, on failure it goes to ``reports/<name>/failed/``.

    The staging folder is named like the atomic writes' temp files (``.<name>.<pid>.<x>.tmp``),
    so the next write into ``reports/`` sweeps it when its run was killed. Its spellings
    (absolute, and relative to ``notebooks/`` as the notebooks' parameters name it) are added
    to ``roots``: the shared notebooks name ``reports/``, never the staging folder."""
    layout.reports_root.mkdir(parents=True, exist_ok=True)
    sweep_temps(layout.reports_root)
    staging = Path(
        tempfile.mkdtemp(
            prefix=f".{layout.name}.{os.getpid()}.", suffix=".tmp", dir=layout.reports_root
        )
    )
    roots[str(staging)] = roots.get(str(layout.reports_root), str(layout.reports_root))
    relative = seen_from(notebooks_dir, staging)
    if not Path(relative).is_absolute():
        roots[relative] = seen_from(notebooks_dir, layout.reports_root)
    stage = Layout(layout.name, layout.data_root, staging)
    try:
        yield stage
        _publish(stage, layout)
    except BaseException as exc:
        if stage.reports_dir.exists():
            set_apart(stage.reports_dir, layout.failed_dir)
            if isinstance(exc, NotebookFailed):  # name where its notebook is now
                text = str(exc).replace(str(stage.reports_dir), str(layout.failed_dir))
                raise NotebookFailed(text) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def set_apart(new: Path, failed: Path) -> None:
    """A failed run's report folder becomes ``failed`` inside the report it did not replace."""
    failed.parent.mkdir(parents=True, exist_ok=True)
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(new, failed)


def _publish(stage: Layout, layout: Layout) -> None:
    """Swap the staged report in for ``reports/<name>/`` (the old one moved aside, then
    removed), keeping what :data:`CARRIED_OVER` names."""
    target = layout.reports_dir
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old.tmp")
        os.replace(target, old)
        for name in CARRIED_OVER:
            if (old / name).exists() and not (stage.reports_dir / name).exists():
                os.replace(old / name, stage.reports_dir / name)
        before = read_json(old / layout.metrics.name, default={}) or {}
        if "compare" in before:
            update_metrics(stage.metrics, "compare", before["compare"])
    os.replace(stage.reports_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def seen_from(folder: Path, path: Path) -> str:
    """``path`` as the notebooks (run in ``folder``) should see it: relative inside a checkout
    (``folder``'s parent), so the executed notebooks name no directory of this machine; else
    absolute (an installed kit's notebooks), which :func:`report_roots` has a stand-in for."""
    repo = folder.parent
    return os.path.relpath(path, folder) if path.is_relative_to(repo) else str(path)
