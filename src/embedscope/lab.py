"""JupyterLab on the notebooks, in the project's environment (``make lab``); the tests and the
README pictures start this same command headless (``scripts/lab_driver.py``), so what is
tested is what opens.

Two things stop a fresh JupyterLab from opening cleanly: as root (every container) it refuses
to start without ``--allow-root``, and Dash ships a source extension
(``@plotly/dash-jupyterlab``) that makes JupyterLab greet the user with a "Build Recommended"
dialog. Dash's ``jupyter_mode="inline"`` needs no extension, so the build check is switched off
instead of building anything, and so is the "official Jupyter news?" prompt (no network here).
Both live in ``embedscope/jupyter/`` (JupyterLab's own ``labconfig`` files), put first on
``JUPYTER_CONFIG_PATH`` for this process only: the user's settings are never written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: JupyterLab configuration of this project: page_config.json, default_setting_overrides.json.
CONFIG_DIR = Path(__file__).with_name("jupyter")


def lab_command(
    notebook_dir: str | Path, *, headless: bool = False, port: int = 8888, app: str = "jupyterlab"
) -> list[str]:
    """The ``jupyter lab`` command line for ``notebook_dir`` with this interpreter's kernel;
    ``app="notebook"``: Jupyter Notebook 7, which takes the same options."""
    cmd = [
        sys.executable,
        "-m",
        app,
        f"--ServerApp.root_dir={Path(notebook_dir).resolve()}",
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


def lab_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the project's JupyterLab
    configuration first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(os.environ if base is None else base)
    paths = [str(CONFIG_DIR), *filter(None, env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep))]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(paths)
    return env


def main() -> int:
    """``make lab``: JupyterLab on ``notebooks/`` (or the folder given), replacing this process."""
    folder = sys.argv[1] if len(sys.argv) > 1 else "notebooks"
    cmd = lab_command(folder)
    os.execve(cmd[0], cmd, lab_env())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
