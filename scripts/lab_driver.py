"""A headless JupyterLab driven like a person drives it, for the JupyterLab tests and the docs'
pictures (dev tooling, not part of the package): started with exactly the command and settings
of ``make lab`` (:mod:`embedscope.lab`), on a free loopback port, its settings kept in a
private folder; notebooks parameterized the way a person edits the parameters cell; Run All
Cells clicked through the menus in a Playwright page.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from embedscope.lab import lab_command, lab_env


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RunningLab:
    root: str  # http://127.0.0.1:<port>
    token: str

    def url(self, notebook: str = "") -> str:
        """The address that opens ``notebook`` (a path under the notebook folder) in the lab."""
        # ?reset: a fresh workspace, so tabs of an earlier notebook are not reopened beside it
        return f"{self.root}/lab/tree/{quote(notebook)}?reset&token={self.token}"

    def notebook_url(self, notebook: str) -> str:
        """The address that opens ``notebook`` in Jupyter Notebook 7 (``app="notebook"``)."""
        return f"{self.root}/notebooks/{quote(notebook)}?token={self.token}"


@contextmanager
def running_lab(
    notebook_dir: str | Path, *, home: str | Path, timeout: float = 120, app: str = "jupyterlab"
) -> Iterator[RunningLab]:
    """A headless JupyterLab on a free loopback port, its settings and workspaces kept under
    ``home`` (never the user's), exactly as ``make lab`` configures it. Stopped on exit.
    ``app="notebook"``: Jupyter Notebook 7 (``jupyter notebook``), with the same settings."""
    port, token = free_port(), secrets.token_hex(16)
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **lab_env(),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_TOKEN": token,
    }
    log = (home / "lab.log").open("wb")
    cmd = lab_command(notebook_dir, headless=True, port=port, app=app)
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/api/status?token={token}", proc, timeout)
        yield RunningLab(url, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def parameterized(notebook: str | Path, out: str | Path, **parameters) -> Path:
    """A copy of ``notebook`` at ``out`` with papermill's parameters cell injected, not run:
    what a person gets by editing the parameters cell before pressing Run All."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    nbformat.write(nb, str(out))
    return Path(out)


def open_and_run_all(
    page, lab: RunningLab, notebook: str, timeout_ms: int = 180_000, *, classic: bool = False
) -> None:
    """In a Playwright ``page``: open ``notebook``, wait for its kernel, then Run → Run All
    Cells through the menus, as a person would (returns once the cells are queued).
    ``classic``: the server is Jupyter Notebook 7 (one notebook per tab, its own kernel badge)."""
    page.goto(lab.notebook_url(notebook) if classic else lab.url(notebook))
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    if classic:  # Notebook 7 has no status bar: its server says when the kernel is idle
        _wait_for_idle_kernel(lab, notebook, timeout_ms / 1000)
    else:  # "Python 3 (ipykernel) | Idle" in JupyterLab's status bar: the kernel is up
        idle = page.locator(".jp-StatusBar-TextItem").filter(has_text=re.compile(r"\| Idle$"))
        idle.first.wait_for(timeout=timeout_ms)
    started = page.locator(".jp-InputPrompt").filter(has_text=re.compile(r"\[(\*|\d+)\]"))
    for attempt in range(3):  # a click that lands while the notebook still settles is lost
        page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel").filter(has_text=re.compile("^Run All Cells$")).click()
        try:
            started.first.wait_for(timeout=20_000)
            return
        except Exception:
            if attempt == 2:
                raise


def _wait_for_idle_kernel(lab: RunningLab, notebook: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab.root}/api/sessions?token={lab.token}") as r:
            sessions = json.loads(r.read())
        if any(
            s["path"] == notebook and s["kernel"]["execution_state"] == "idle" for s in sessions
        ):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no idle kernel for {notebook} within {timeout:.0f} s")


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} before it served")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s")
