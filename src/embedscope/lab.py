"""JupyterLab on the notebooks, in the project's environment: ``make lab`` for people, and the
same command headless for the tests and the README pictures, so what is tested is what opens.

Two things stop a fresh JupyterLab from opening cleanly: as root (every container) it refuses
to start without ``--allow-root``, and Dash ships a source extension
(``@plotly/dash-jupyterlab``) that makes JupyterLab greet the user with a "Build Recommended"
dialog. Dash's ``jupyter_mode="inline"`` needs no extension, so the build check is switched off
in the page configuration instead of building anything.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: No build dialog (nothing needs building), no news and update pop-ups.
CONFIG = Path(__file__).with_name("lab_config.json")


def lab_command(notebook_dir: str | Path, *, headless: bool = False, port: int = 8888) -> list[str]:
    """The ``jupyter lab`` command line for ``notebook_dir`` with this interpreter's kernel."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={Path(notebook_dir).resolve()}",
        f"--config={CONFIG}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    if headless:
        cmd += [
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
        ]
    return cmd


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_lab(
    notebook_dir: str | Path, *, home: str | Path, timeout: float = 120
) -> Iterator[str]:
    """A headless JupyterLab on a free loopback port, its settings and workspaces kept under
    ``home`` (never the user's); yields the URL with its token. Stopped on exit."""
    port, token = free_port(), secrets.token_hex(16)
    home = Path(home)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_TOKEN": token,
    }
    log = (home / "lab.log").open("wb")
    proc = subprocess.Popen(
        lab_command(notebook_dir, headless=True, port=port),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/api/status?token={token}", proc, timeout)
        yield f"{url}/lab?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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


def main() -> int:
    """``make lab``: JupyterLab on ``notebooks/`` (or the folder given), replacing this process."""
    folder = sys.argv[1] if len(sys.argv) > 1 else "notebooks"
    cmd = lab_command(folder)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
