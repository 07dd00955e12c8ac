"""Named fault points the stages pass through, so a fault test provokes its fault exactly where
the README's fault matrix says (a guessed sleep lands wherever the machine's speed puts it).

``EMBEDSCOPE_FAULT="<point>[@<n>]=<action>"`` arms one point in every process that inherits the
environment: the stage itself, its DataLoader workers and ingest's process pool; Ray's workers
get it through the job's runtime environment (:func:`armed`). The ``n``-th pass of the point in
a process (the first by default) then:

- ``kill``: the process SIGKILLs itself there, as ``kill -9`` or the OOM killer would;
- ``wait:<file>``: appends its pid to ``<file>.reached`` and waits until ``<file>`` exists, so a
  test knows the process is there, acts (kills the run, moves a folder, lets a second run catch
  up) and then releases it.

Unarmed, a point costs one environment lookup. This module imports nothing from embedscope:
every layer may pass a point.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time
from pathlib import Path

ENV = "EMBEDSCOPE_FAULT"

#: Every point a stage passes, and where it is; a README fault-matrix row names one of them.
POINTS = {
    "ingest:inspect": "01_download is about to read and decode one file for the manifest",
    "manifest:write": "the manifest is complete in its temp file, not yet moved into place",
    "thumbs:write": "a chunk of thumbnail cells is complete in its temp file, not yet moved "
    "into place",
    "embed:decode": "an image is about to be decoded, wherever that happens: a DataLoader "
    "worker, a Ray worker, or the stage itself (no workers, or measuring the decode cost)",
    "shard:write": "an embedding shard is complete in its temp file, not yet moved into place",
    "ray:embed": "a Ray actor is about to embed one batch",
    "projection:fit": "UMAP is about to fit (umap imported, the vectors read)",
    "projection:write": "a projection's coordinates (1st pass) or facts (2nd) are complete in "
    "their temp file, not yet moved into place",
    "explorer:write": "explorer.html is complete in its temp file, not yet moved into place",
    "decisions:write": "the JupyterLab panel's decisions, merged into the dataset's kept "
    "decisions.csv, are complete in its temp file, not yet moved into place",
}

#: How long a ``wait`` lasts at most: a test that armed it and died must not leave it forever.
WAIT_LIMIT_S = 600

_SPEC = re.compile(r"(?P<point>[a-z]+:[a-z]+)(?:@(?P<nth>[1-9][0-9]*))?=(?P<action>kill|wait:.+)")
_passes: dict[str, int] = {}
_passes_pid = 0


def fault_point(name: str) -> None:
    """Pass point ``name``: nothing happens unless ``EMBEDSCOPE_FAULT`` arms it here."""
    spec = os.environ.get(ENV)
    if spec:
        _arrive(name, spec)


def armed() -> dict[str, dict[str, str]] | None:
    """The armed fault as a Ray ``runtime_env`` (None when none is armed): the workers of a
    running Ray cluster that this process attaches to do not inherit its environment."""
    spec = os.environ.get(ENV)
    return {"env_vars": {ENV: spec}} if spec else None


@functools.lru_cache(maxsize=8)
def parse(spec: str) -> tuple[str, int, str]:
    """``(point, nth pass, action)`` of an ``EMBEDSCOPE_FAULT`` value; ValueError in one line
    when it is not one."""
    m = _SPEC.fullmatch(spec)
    if m is None or m["point"] not in POINTS:
        raise ValueError(
            f"{ENV}={spec!r} is not <point>[@<n>]=kill|wait:<file> with a point of "
            f"{', '.join(POINTS)}"
        )
    return m["point"], int(m["nth"] or 1), m["action"]


def _arrive(name: str, spec: str) -> None:
    global _passes_pid
    point, nth, action = parse(spec)
    if name != point:
        return
    if _passes_pid != os.getpid():  # a forked worker counts its own passes from zero
        _passes.clear()
        _passes_pid = os.getpid()
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    else:
        _wait(name, Path(action.removeprefix("wait:")))


def _wait(name: str, release: Path) -> None:
    with open(f"{release}.reached", "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"fault point {name}: {release} did not appear in {WAIT_LIMIT_S} s")
        time.sleep(0.01)
