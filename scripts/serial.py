"""Run one install step at a time: ``serial.py LOCK STAMP -- COMMAND...``.

Two ``make run-all``s started together on a fresh clone both see ``.venv`` missing and would
both create it and pip-install into it at once. Each install recipe runs through this script:
it takes an OS lock on ``LOCK`` (released by the OS if the process dies, so never stale),
then runs ``COMMAND`` unless ``STAMP`` appeared or was renewed while it waited (another make
did the same step meanwhile). Standard library only: it runs before the venv exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

if os.name != "nt":
    import fcntl


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: serial.py LOCK STAMP -- COMMAND...", file=sys.stderr)
        return 2
    lock, stamp, command = Path(argv[0]), Path(argv[1]), argv[3:]
    started = time.time()
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as fh:
        if os.name != "nt":
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"[embedscope] another make is installing: waiting ({stamp})", flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
        # lstat: a stamp may be a link (.venv/bin/python), whose target is old
        if stamp.exists() and stamp.lstat().st_mtime >= started:
            return 0  # done by the make we waited for
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
