"""One notebook, run headlessly: papermill in a kernel of its own, then made shareable (no
directory of the machine in it), signed as trusted and exported to HTML. Every failure is one
sentence (:class:`NotebookFailed`): a cell's error, or a kernel that could not start, died or
stopped answering.
"""

from __future__ import annotations

import html
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from embedscope.layout import (
    write_atomic,
)
from embedscope.shipped import PACKAGE_DIR

#: Seconds papermill waits for a kernel to answer after starting it (its default). Measured on
#: 2 shared cores: 0.5 s idle, a median 0.7 s and at most 0.9 s beside 2 and 4 busy processes
#: per core (closing note of issue 24), so 60 s is ample: a start that takes longer is stuck.
KERNEL_START_TIMEOUT = 60


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


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
            roots.setdefault(str(path), alias)  # one folder named twice: the first name
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


def share_report(folder: Path, roots: dict[str, str]) -> None:
    """Make the report's text files shareable (the notebooks already are, before signing: an
    edit after it would void their trust)."""
    for path in sorted(folder.iterdir()):
        if path.suffix in {".json", ".csv", ".html"}:
            text = path.read_text(encoding="utf-8")
            clean = shareable(text, roots)
            if clean != text:
                write_atomic(path, lambda tmp, c=clean: tmp.write_text(c, encoding="utf-8"))
