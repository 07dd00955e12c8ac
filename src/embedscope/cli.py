"""Command line front door used by the Makefile: ``embedscope run-all`` executes the notebooks.

Each notebook runs headlessly through papermill with only the parameters it declares, lands
executed in ``reports/<name>/`` with an HTML export beside it, and is signed as trusted for the
user who ran it so its explorer output runs in JupyterLab. A failing notebook stops the run with
one line naming the notebook and the cell.
"""

from __future__ import annotations

import argparse
import difflib
import html
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from embedscope.decisions import read_decisions
from embedscope.ingest import SourceError, check_source, default_name, read_labels
from embedscope.layout import (
    DiskFull,
    Layout,
    locked,
    read_json,
    sweep_temps,
    update_metrics,
    write_atomic,
)
from embedscope.models import ModelUnavailable, check_model
from embedscope.shipped import NOTEBOOKS_DIR, PACKAGE_DIR, SAMPLE_DIR
from embedscope.vectors import VECTORS_MODEL, read_vectors
from embedscope.vocabulary import METHODS, UNLABELLED
from embedscope.words import counted

NOTEBOOKS = ("01_download.ipynb", "02_embed.ipynb", "03_reduce.ipynb", "04_explore.ipynb")


#: engine="ray" without Ray: `make run-all` installs the runtime only, Ray is an optional extra.
RAY_MISSING = (
    "engine='ray' needs Ray, which is not installed: run `make ray` in the embedscope checkout "
    "(or there: pip install -c requirements/constraints.txt -e '.[ray]')"
)


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


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


def report_roots(here: Path, *others: tuple[str | Path | None, str]) -> dict[str, str]:
    """Stand-ins for the absolute directories a report could name: ``here`` (where the run
    started: a checkout's top, or any folder an installed kit runs in) becomes relative paths,
    the home directory ``~``, and each folder outside ``here`` its label: each of ``others``
    (``(path, "[data]")``, ...), the installed package ``[embedscope]`` (its notebooks and
    sample) and the virtual environment ``[python]`` (its packages' warnings name their files).
    """
    top = here if len(str(here)) > 1 else None  # the root folder "/" is no stand-in's
    roots = {str(top): ""} if top else {}
    home = str(Path.home())
    if len(home) > 1:
        roots.setdefault(home, "~")
    kit = [(PACKAGE_DIR, "[embedscope]")]
    if sys.prefix != sys.base_prefix:  # a venv's folder, not the system's /usr
        kit.append((sys.prefix, "[python]"))
    for path, alias in [*kit, *others]:
        if path and Path(path).is_absolute() and not (top and Path(path).is_relative_to(top)):
            roots[str(path)] = alias
    return roots


def shareable(text: str, roots: dict[str, str]) -> str:
    """``text`` naming no directory of the machine that made it: each root (longest first, in
    its plain, JSON-escaped and HTML-escaped spellings) is replaced by its stand-in."""
    escapes = (lambda t: json.dumps(t, ensure_ascii=False)[1:-1], html.escape)
    for root, alias in sorted(roots.items(), key=lambda kv: len(kv[0]), reverse=True):
        spellings = [str, *(e for e in escapes if e(root) != root)]
        for spell in spellings:
            path, stand_in = spell(root), spell(alias)
            text = text.replace(path + "/", stand_in + "/" if stand_in else "")
            text = re.sub(re.escape(path) + r"(?![\w.\-])", lambda _, s=stand_in: s or ".", text)
    return text


#: Seconds papermill waits for a kernel to answer after starting it (its default). Measured on
#: 2 shared cores: 0.5 s idle, a median 0.7 s and at most 0.9 s beside 2 and 4 busy processes
#: per core (closing note of issue 24), so 60 s is ample: a start that takes longer is stuck.
KERNEL_START_TIMEOUT = 60


def run_notebook(
    notebook: Path, output: Path, parameters: dict, *, cwd: Path, roots: dict[str, str]
) -> float:
    """Execute one notebook with the parameters it declares; make it shareable (``roots``,
    see :func:`shareable`); export HTML; trust it.

    Every failure raises :class:`NotebookFailed` with one sentence: a cell's error, a kernel
    that died, or one that could not start (tried twice: a start is cheap, and a second try
    outlasts a passing hiccup)."""
    import papermill as pm
    from nbformat.sign import NotebookNotary

    declared = pm.inspect_notebook(str(notebook))
    params = {k: v for k, v in parameters.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for attempt in (1, 2):
        try:
            _execute(notebook, output, params, cwd)
            break
        except _KernelFailed as exc:
            if output.exists():  # what ran is shared too, without the machine's directories
                _share_notebook(output, notebook, roots)
            if attempt == 1 and exc.at_start:
                continue
            tried = " (tried twice)" if exc.at_start else ""
            where = f" (executed notebook: {output})" if output.exists() else ""
            raise NotebookFailed(
                f"{notebook.name}: the kernel {exc.what}{tried} ({exc.detail}); {exc.hint}{where}"
            ) from None
        except pm.PapermillExecutionError as exc:
            _share_notebook(output, notebook, roots)  # a failed run's notebook is shared too
            evalue = str(exc.evalue).strip().splitlines()[0] if exc.evalue else ""
            raise NotebookFailed(
                f"{notebook.name} failed in cell {exc.exec_count}: {exc.ename}: {evalue} "
                f"(executed notebook: {output})"
            ) from None
    seconds = time.perf_counter() - t0
    nb = _share_notebook(output, notebook, roots)
    NotebookNotary().sign(nb)
    body = export_html(nb)
    write_atomic(output.with_suffix(".html"), lambda tmp: tmp.write_text(body, encoding="utf-8"))
    return seconds


class _KernelFailed(RuntimeError):
    """A kernel that could not start, died, or stopped answering: ``what`` happened, the
    ``detail`` (the error's first line), a ``hint`` of what to try; ``at_start``: no cell ran."""

    def __init__(self, what: str, detail: str, hint: str, *, at_start: bool) -> None:
        super().__init__(f"the kernel {what} ({detail}); {hint}")
        self.what, self.detail, self.hint, self.at_start = what, detail, hint, at_start


def _execute(notebook: Path, output: Path, params: dict, cwd: Path) -> None:
    """papermill's run of one notebook in a kernel of its own, its failures outside a cell
    turned into :class:`_KernelFailed` (the machinery's logs and tracebacks kept out of sight).
    """
    import logging

    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from traitlets.config import Config

    # jupyter_client names an IPC kernel's sockets after its connection file, and without one
    # it picks `kernel-ipc-<N>` in the working directory by an existence check: two runs
    # starting kernels at once in notebooks/ took the same N and talked to each other's
    # kernel ("Invalid Signature", or no answer). Each kernel gets a private folder for its
    # connection file and sockets instead, removed afterwards. IPC stays: TCP would pick ports
    # by bind-and-release, a race of its own between concurrent runs, and warn per kernel that
    # it runs unencrypted.
    with (
        tempfile.TemporaryDirectory(prefix="embedscope-kernel-") as kernel_dir,
        tempfile.TemporaryFile() as kernel_log,
    ):
        config = Config(
            {
                "KernelManager": {
                    "transport": "ipc",
                    "connection_file": str(Path(kernel_dir) / "kernel.json"),
                }
            }
        )
        # papermill (and nbclient through it) log a failed start or a dead kernel before
        # raising; the one sentence the user reads is made below from the exception and the
        # kernel's own last words, so their lines go nowhere
        handler = logging.NullHandler()
        logger = logging.getLogger("papermill")
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters=params,
                cwd=str(cwd),
                kernel_name="python3",
                progress_bar=False,
                start_timeout=KERNEL_START_TIMEOUT,
                config=config,
                # jupyter_client interrupts every kernel before shutting it down, which the
                # kernel logs as "KeyboardInterrupt caught": its own log is noise here (cell
                # errors travel as messages and stop the run with one line)
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                kernel_manager_class=quiet_kernel_manager(kernel_log),
            )
        except pm.PapermillExecutionError:
            raise
        except DeadKernelError:
            raise _KernelFailed(
                "died",
                _last_line(kernel_log) or "no message",
                "out of memory is the usual cause: close other work, or pass a smaller "
                "batch_size, and run again",
                at_start=not _any_cell_ran(output),
            ) from None
        except Exception as exc:  # the kernel machinery raises many types; one sentence for all
            at_start = not _any_cell_ran(output)
            raise _KernelFailed(
                "could not start" if at_start else "stopped answering",
                f"{type(exc).__name__}: {_first_line(exc)}",
                "the machine may be overloaded or short of memory: run again when it is quieter",
                at_start=at_start,
            ) from None
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate


def _any_cell_ran(output: Path) -> bool:
    """Whether papermill started any cell of ``output`` (it stamps each cell's start; its
    statuses say "completed" also for cells never run)."""
    import nbformat

    try:
        nb = nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return False
    return any(c.get("metadata", {}).get("papermill", {}).get("start_time") for c in nb.cells)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"


def export_html(nb) -> str:
    """The notebook as one offline HTML page."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    # nbconvert's template loads require.js, MathJax and the widget manager from CDNs; these
    # notebooks need none of them, and a shared report must open offline without requests.
    return re.sub(r'<script src="https?://[^"]*"[^>]*>\s*</script>', "", body)


def quiet_kernel_manager(log: IO[bytes]) -> type:
    """A kernel manager whose kernels write their own stderr to ``log``, not the terminal:
    cell output and errors travel as messages, and what a kernel prints on its own (zmq's
    "Uncaught exception in ZMQStream callback" at shutdown, now and then) is noise to a user
    reading one line per stage. The log is read back only when a kernel dies."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):  # type: ignore[override]
            kw.setdefault("stderr", log)
            return await super().start_kernel(**kw)

    return QuietKernelManager


def _last_line(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _share_notebook(output: Path, notebook: Path, roots: dict[str, str]):
    """Rewrite papermill's executed notebook without the machine's directories."""
    import nbformat

    nb = nbformat.reads(shareable(output.read_text(encoding="utf-8"), roots), as_version=4)
    nb.metadata.get("papermill", {}).update(input_path=notebook.name, output_path=output.name)
    write_atomic(output, lambda tmp: nbformat.write(nb, str(tmp)))
    return nb


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
        check_source(source)
        folder = SAMPLE_DIR if source == "sample" else Path(source)
        read_vectors(vectors, folder if folder.is_dir() else None)  # an archive: in 02_embed
        model = VECTORS_MODEL
    elif Path(model).expanduser().exists():  # a local model folder, from where the user stands
        model = str(Path(model).expanduser().resolve())
    # each refused here in one sentence, before a notebook runs or a report is touched
    layout = Layout(
        name or default_name(source), Path(data_root).resolve(), Path(reports_root).resolve()
    )
    check_source(source)
    if not vectors:
        check_model(model)
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
            "data_root": _from(notebooks_dir, layout.data_root),
            "reports_root": _from(notebooks_dir, stage.reports_root),
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
    relative = _from(notebooks_dir, staging)
    if not Path(relative).is_absolute():
        roots[relative] = _from(notebooks_dir, layout.reports_root)
    stage = Layout(layout.name, layout.data_root, staging)
    try:
        yield stage
        _publish(stage, layout)
    except BaseException as exc:
        if stage.reports_dir.exists():
            _set_apart(stage.reports_dir, layout.failed_dir)
            if isinstance(exc, NotebookFailed):  # name where its notebook is now
                text = str(exc).replace(str(stage.reports_dir), str(layout.failed_dir))
                raise NotebookFailed(text) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _set_apart(new: Path, failed: Path) -> None:
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


def _from(folder: Path, path: Path) -> str:
    """``path`` as the notebooks (run in ``folder``) should see it: relative inside a checkout
    (``folder``'s parent), so the executed notebooks name no directory of this machine; else
    absolute (an installed kit's notebooks), which :func:`report_roots` has a stand-in for."""
    repo = folder.parent
    return os.path.relpath(path, folder) if path.is_relative_to(repo) else str(path)


def share_report(folder: Path, roots: dict[str, str]) -> None:
    """Make the report's text files shareable (the notebooks already are, before signing: an
    edit after it would void their trust)."""
    for path in sorted(folder.iterdir()):
        if path.suffix in {".json", ".csv", ".html"}:
            text = path.read_text(encoding="utf-8")
            clean = shareable(text, roots)
            if clean != text:
                write_atomic(path, lambda tmp, c=clean: tmp.write_text(c, encoding="utf-8"))


def _value(text: str):
    """Parse a KEY=VALUE command line value as JSON when it is JSON, else keep the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


#: Where the commands read and write by default: the kit's own notebooks (the installed
#: package's, or a checkout's), and data/ and reports/ in the folder the command runs in.
NOTEBOOKS_HELP = "the notebooks to run (default: the kit's own)"
DATA_HELP = "where data/<name>/ goes (default: data, in the current folder)"
REPORTS_HELP = "where reports/<name>/ goes (default: reports, in the current folder)"


#: The Make variable that sets each checked option, per command (compare's --dims has none).
MAKE_VARIABLES = {
    ("run-all", "method"): "METHOD",
    ("run-all", "dims"): "DIMS",
    ("serve", "method"): "METHOD",
    ("serve", "dims"): "DIMS",
    ("compare", "methods"): "METHODS",
}


def _wrong_choice(args: argparse.Namespace) -> str | None:
    """One sentence for a --method(s) or --dims value that is not one of its choices, naming
    the Make variable that set it (argparse's own message names only the option, after a
    usage line that `make run-all METHOD=foo` never typed); the dims become an int."""
    allowed = {"method": METHODS, "methods": METHODS, "dims": ("3", "2")}
    for option, choices in allowed.items():
        given = getattr(args, option, None)
        if given is None:
            continue
        for value in given if isinstance(given, list) else [given]:
            if str(value) not in choices:
                flag = f"--{option}"
                variable = MAKE_VARIABLES.get((args.command, option))
                what = f"{variable} ({flag})" if variable else flag
                return f"{what} must be one of {', '.join(choices)}, not {str(value)!r}"
    if getattr(args, "dims", None) is not None:
        args.dims = int(args.dims)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-all", help="execute the four notebooks headlessly")
    run.add_argument(
        "--source", default="sample", help="sample, a folder, an archive or kaggle:o/d"
    )
    run.add_argument("--name", default="", help="dataset name (default: derived from source)")
    run.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2, a hub id or a folder")
    run.add_argument("--method", default="pca", help=" | ".join(METHODS))
    run.add_argument("--dims", default="3", help="3 | 2")
    run.add_argument(
        "--decisions", default="", help="decisions.csv (path,label,tags) to apply in 01_download"
    )
    run.add_argument(
        "--labels", default="", help="CSV/parquet (path,label): the label of each image it names"
    )
    run.add_argument(
        "--vectors",
        default="",
        help="your own vectors (.parquet: path + vector; or .npy + .paths.txt): no embedding",
    )
    run.add_argument("--notebooks-dir", default=None, help=NOTEBOOKS_HELP)
    run.add_argument("--data-root", default="data", help=DATA_HELP)
    run.add_argument("--reports-root", default="reports", help=REPORTS_HELP)
    run.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra notebook parameter (JSON values allowed), repeatable",
    )
    cmp_ = sub.add_parser(
        "compare", help="execute 05_compare: several models/reducers side by side"
    )
    cmp_.add_argument("--name", required=True, help="dataset name (after run-all or 01_download)")
    cmp_.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    cmp_.add_argument(
        "--methods",
        nargs="+",
        default=["pca", "umap", "tsne"],
        help=" | ".join(METHODS),
    )
    cmp_.add_argument("--dims", default="2", help="2 | 3")
    cmp_.add_argument("--notebooks-dir", default=None, help=NOTEBOOKS_HELP)
    cmp_.add_argument("--data-root", default="data", help=DATA_HELP)
    cmp_.add_argument("--reports-root", default="reports", help=REPORTS_HELP)
    srv = sub.add_parser("serve", help="serve a dataset's map as a Dash app on 127.0.0.1")
    srv.add_argument("--name", required=True, help="dataset name (as in reports/<name>)")
    srv.add_argument("--model", default=None, help="whose embeddings (default: the latest run)")
    srv.add_argument(
        "--method", default=None, help=" | ".join(METHODS) + " (default: the report's own)"
    )
    srv.add_argument("--dims", default=None, help="3 | 2 (default: the report's own)")
    srv.add_argument(
        "--host", default="127.0.0.1", help="bind address (default: this machine only)"
    )
    srv.add_argument("--port", type=int, default=8050)
    srv.add_argument("--data-root", default="data")
    srv.add_argument("--reports-root", default="reports")
    args = parser.parse_args(argv)
    wrong = _wrong_choice(args)
    if wrong:  # a usage error, like argparse's own (exit status 2), in the Makefile's words
        print(f"embedscope: error: {wrong}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args)
    if args.command == "compare":
        return _compare(args)
    extra = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param needs KEY=VALUE, got {item!r}")
        extra[key] = _value(value)
    try:
        run_all(
            args.source,
            args.name,
            model=args.model,
            method=args.method,
            dims=args.dims,
            notebooks_dir=args.notebooks_dir or NOTEBOOKS_DIR,
            data_root=args.data_root,
            reports_root=args.reports_root,
            decisions=args.decisions or None,
            labels=args.labels or None,
            vectors=args.vectors or None,
            extra=extra,
        )
    except UnknownParameter as exc:  # a usage error, like argparse's own (exit status 2)
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 2
    except (
        NotebookFailed,
        SourceError,
        ModelUnavailable,
        ValueError,
        FileNotFoundError,
        DiskFull,
    ) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    """05_compare on the models that can be loaded here (the others named, skipped), into the
    report only when it succeeds: a failed comparison goes to ``failed/``, the last good one
    stays."""
    try:
        layout = Layout(
            args.name, Path(args.data_root).resolve(), Path(args.reports_root).resolve()
        )
    except ValueError as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 2
    if not layout.manifest.exists():
        print(
            f"embedscope: error: no dataset {layout.name!r} in {args.data_root}: run "
            f"`make run-all NAME={layout.name} SOURCE=...` first",
            file=sys.stderr,
        )
        return 1
    models = []
    for spec in args.models:
        spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
        try:
            check_model(spec)
            models.append(spec)
        except ModelUnavailable as exc:
            print(f"[embedscope] skipped model {spec!r}: {exc}", file=sys.stderr, flush=True)
    if not models:
        print("embedscope: error: none of the models can be loaded here", file=sys.stderr)
        return 1
    notebooks = Path(args.notebooks_dir or NOTEBOOKS_DIR).resolve()
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
        "methods": args.methods,
        "dims": args.dims,
        "data_root": _from(notebooks, layout.data_root),
        "reports_root": _from(notebooks, layout.reports_root),
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
            _set_apart(staging, layout.failed_dir)
            print(
                f"embedscope: error: {str(exc).replace(str(staging), str(layout.failed_dir))}",
                file=sys.stderr,
            )
            return 1
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"[embedscope] done: {layout.reports_dir / notebook}", flush=True)
    return 0


def report_app(
    name: str,
    data_root: str | Path = "data",
    reports_root: str | Path = "reports",
    *,
    model: str | None = None,
    method: str | None = None,
    dims: int | None = None,
):
    """The Dash app on a report's own map: the method and dims of its last run (and the model
    embedded last) unless given. An unknown name raises ``FileNotFoundError`` naming the
    ``make run-all`` to run."""
    from embedscope.explore.dash import create_app

    layout = Layout(name, Path(data_root), Path(reports_root))
    if not layout.manifest.exists() or not layout.metrics.exists():
        raise FileNotFoundError(
            f"no report {layout.name!r} to serve: run `make run-all NAME={layout.name} "
            "SOURCE=<your folder>` first"
        )
    shown = (read_json(layout.metrics, default={}) or {}).get("reduce", {})
    method = method or shown.get("method", "pca")
    dims = dims or shown.get("dims", 3)
    seed = shown.get("random_state", 0)  # the run's, so its point table file is the one read
    return create_app(layout, model=model, method=method, dims=dims, random_state=seed)


def _serve(args: argparse.Namespace) -> int:
    try:
        app = report_app(
            args.name,
            args.data_root,
            args.reports_root,
            model=args.model,
            method=args.method,
            dims=args.dims,
        )
    except (FileNotFoundError, ValueError, ModelUnavailable) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    app.run(host=args.host, port=args.port, debug=False)  # blocks; debug stays off
    return 0


if __name__ == "__main__":
    sys.exit(main())
