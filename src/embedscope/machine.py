"""What the running machine offers now (ground floor): the cores this process may use and how
many threads are runnable this instant. Precision, decoding workers and the leak checks'
processes are decided from these, never from fixed numbers (machines differ, and are shared)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, where the system has one: a container
    or ``taskset`` may allow fewer than the machine has), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def runnable_elsewhere() -> int | None:
    """Threads runnable on the machine right now besides the one asking (``procs_running`` of
    ``/proc/stat``, an instant count, where the load average is a minute's mean that lags a
    change by tens of seconds); None where the system does not say."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("procs_running"):
                    return max(0, int(line.split()[1]) - 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
