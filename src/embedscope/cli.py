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
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from embedscope.decisions import read_decisions
from embedscope.ingest import default_name
from embedscope.layout import DiskFull, Layout, update_metrics, write_atomic

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


def report_roots(repo: Path, *others: tuple[str | Path | None, str]) -> dict[str, str]:
    """Stand-ins for the absolute directories a report could name: the repository becomes
    relative paths, the home directory ``~``, and each of ``others`` outside the repository
    (``(path, "[data]")``, ...) its label."""
    roots = {str(repo): ""}
    home = str(Path.home())
    if len(home) > 1:
        roots.setdefault(home, "~")
    for path, alias in others:
        if path and Path(path).is_absolute() and not Path(path).is_relative_to(repo):
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


def run_notebook(
    notebook: Path, output: Path, parameters: dict, *, cwd: Path, roots: dict[str, str]
) -> float:
    """Execute one notebook with the parameters it declares; make it shareable (``roots``,
    see :func:`shareable`); export HTML; trust it."""
    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from nbconvert import HTMLExporter
    from nbformat.sign import NotebookNotary
    from traitlets.config import Config

    declared = pm.inspect_notebook(str(notebook))
    params = {k: v for k, v in parameters.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as kernel_log:
        try:
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters=params,
                cwd=str(cwd),
                kernel_name="python3",
                progress_bar=False,
                # Unix sockets, not TCP: no "running over TCP without encryption" warning per kernel
                config=Config({"KernelManager": {"transport": "ipc"}}),
                # jupyter_client interrupts every kernel before shutting it down, which the kernel
                # logs as "KeyboardInterrupt caught": its own log is noise here (cell errors travel
                # as messages and stop the run with one line)
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                kernel_manager_class=quiet_kernel_manager(kernel_log),
            )
        except DeadKernelError:
            if output.exists():  # what ran is shared too, without the machine's directories
                _share_notebook(output, notebook, roots)
            raise NotebookFailed(
                f"{notebook.name}: the kernel died ({_last_line(kernel_log) or 'no message'}); "
                f"executed notebook: {output}"
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
    body, _ = HTMLExporter().from_notebook_node(nb)
    # nbconvert's template loads require.js, MathJax and the widget manager from CDNs; these
    # notebooks need none of them, and a shared report must open offline without requests.
    body = re.sub(r'<script src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    write_atomic(output.with_suffix(".html"), lambda tmp: tmp.write_text(body, encoding="utf-8"))
    return seconds


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
    notebooks_dir: str | Path = "notebooks",
    data_root: str | Path = "data",
    reports_root: str | Path = "reports",
    decisions: str | Path | None = None,
    extra: dict | None = None,
) -> Path:
    """Run the four notebooks in order for one dataset; returns ``reports/<name>``.

    ``decisions`` is a ``decisions.csv`` (path,label,tags) for ``01_download`` to apply; it and
    ``extra`` (more notebook parameters) are checked before any notebook starts, so a bad file or
    a misspelt parameter costs one line, not a run."""
    notebooks_dir = Path(notebooks_dir).resolve()
    check_parameters([notebooks_dir / nb for nb in NOTEBOOKS], extra or {})
    if decisions:
        decisions = str(Path(decisions).expanduser().resolve())  # notebooks run in notebooks/
        read_decisions(decisions)
    if source != "sample" and not source.startswith("kaggle:"):
        source = str(Path(source).expanduser().resolve())  # notebooks run in notebooks/
    if Path(model).expanduser().exists():  # a local model folder, from where the user stands
        model = str(Path(model).expanduser().resolve())
    layout = Layout(
        name or default_name(source), Path(data_root).resolve(), Path(reports_root).resolve()
    )
    repo = notebooks_dir.parent
    roots = report_roots(
        repo,
        (layout.data_root, "[data]"),
        (layout.reports_root, "[reports]"),
        (source if Path(source).is_absolute() else None, "[dataset]"),
        (Path(decisions).parent if decisions else None, "[decisions folder]"),
        (model if Path(model).is_absolute() else None, f"[{Path(model).name}]"),
    )
    params = {
        "source": source,
        "name": layout.name,
        "model": model,
        "method": method,
        "dims": dims,
        "data_root": _from(notebooks_dir, layout.data_root),
        "reports_root": _from(notebooks_dir, layout.reports_root),
        "decisions": decisions or None,
        **(extra or {}),
    }
    timings = {}
    for k, nb in enumerate(NOTEBOOKS, 1):
        print(f"[embedscope] {k}/{len(NOTEBOOKS)} {nb} for {layout.name!r} …", flush=True)
        seconds = run_notebook(
            notebooks_dir / nb, layout.reports_dir / nb, params, cwd=notebooks_dir, roots=roots
        )
        timings[nb.removesuffix(".ipynb")] = round(seconds, 2)
        print(f"[embedscope] {k}/{len(NOTEBOOKS)} {nb} done in {seconds:.1f} s", flush=True)
    update_metrics(layout.metrics, "notebook_seconds", timings)
    share_report(layout.reports_dir, roots)
    print(f"[embedscope] done: {layout.reports_dir}", flush=True)
    return layout.reports_dir


def _from(folder: Path, path: Path) -> str:
    """``path`` as the notebooks (run in ``folder``) should see it: relative inside the
    repository, so the executed notebooks name no directory of this machine."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-all", help="execute the four notebooks headlessly")
    run.add_argument(
        "--source", default="sample", help="sample, a folder, an archive or kaggle:o/d"
    )
    run.add_argument("--name", default="", help="dataset name (default: derived from source)")
    run.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2, a hub id or a folder")
    run.add_argument("--method", default="pca", choices=("pca", "ipca", "umap", "tsne"))
    run.add_argument("--dims", type=int, default=3, choices=(2, 3))
    run.add_argument(
        "--decisions", default="", help="decisions.csv (path,label,tags) to apply in 01_download"
    )
    run.add_argument("--notebooks-dir", default="notebooks")
    run.add_argument("--data-root", default="data")
    run.add_argument("--reports-root", default="reports")
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
        choices=("pca", "ipca", "umap", "tsne"),
    )
    cmp_.add_argument("--dims", type=int, default=2, choices=(2, 3))
    cmp_.add_argument("--notebooks-dir", default="notebooks")
    cmp_.add_argument("--data-root", default="data")
    cmp_.add_argument("--reports-root", default="reports")
    srv = sub.add_parser("serve", help="serve a dataset's map as a Dash app on 127.0.0.1")
    srv.add_argument("--name", required=True, help="dataset name (as in reports/<name>)")
    srv.add_argument("--model", default=None, help="whose embeddings (default: the latest run)")
    srv.add_argument("--method", default="pca", choices=("pca", "ipca", "umap", "tsne"))
    srv.add_argument("--dims", type=int, default=3, choices=(2, 3))
    srv.add_argument(
        "--host", default="127.0.0.1", help="bind address (default: this machine only)"
    )
    srv.add_argument("--port", type=int, default=8050)
    srv.add_argument("--data-root", default="data")
    srv.add_argument("--reports-root", default="reports")
    args = parser.parse_args(argv)
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
            notebooks_dir=args.notebooks_dir,
            data_root=args.data_root,
            reports_root=args.reports_root,
            decisions=args.decisions or None,
            extra=extra,
        )
    except UnknownParameter as exc:  # a usage error, like argparse's own (exit status 2)
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 2
    except (NotebookFailed, ValueError, FileNotFoundError, DiskFull) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    layout = Layout(args.name, Path(args.data_root).resolve(), Path(args.reports_root).resolve())
    models = [m if not Path(m).exists() else str(Path(m).resolve()) for m in args.models]
    notebooks = Path(args.notebooks_dir).resolve()
    roots = report_roots(
        notebooks.parent,
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
    try:
        run_notebook(
            notebooks / "05_compare.ipynb",
            layout.reports_dir / "05_compare.ipynb",
            params,
            cwd=notebooks,
            roots=roots,
        )
        share_report(layout.reports_dir, roots)
    except NotebookFailed as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    print(f"[embedscope] done: {layout.reports_dir / '05_compare.ipynb'}", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from embedscope.explore.dash import serve

    layout = Layout(args.name, Path(args.data_root), Path(args.reports_root))
    try:
        serve(
            layout,
            host=args.host,
            port=args.port,
            model=args.model,
            method=args.method,
            dims=args.dims,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
