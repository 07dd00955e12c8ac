"""Several runs on one machine at once (docs/faults.md, "Faults survived"): kernels that cannot
collide, one sentence when a kernel fails, one run per dataset at a time, shared files merged,
one install at a time. The end-to-end rows (``heavy``) start whole ``run-all``s together; they
run in ``make test-faults``, and ``make test`` keeps the quick case of two kernels at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from helpers import make_classes, tiny_notebook, tiny_vit

from embedscope import execute
from embedscope.execute import NotebookFailed, run_notebook
from embedscope.layout import read_json, update_json

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]

_RUN_NOTEBOOK = """
import sys
from pathlib import Path
from embedscope.execute import run_notebook
nb, out = Path(sys.argv[1]), Path(sys.argv[2])
run_notebook(nb, out, {}, cwd=nb.parent, roots={})
"""

_WHERE = """
import json
from ipykernel.connect import get_connection_file, get_connection_info
print(json.dumps({"file": get_connection_file(), "ip": json.loads(get_connection_info())["ip"]}))
"""


def test_kernels_started_at_once_get_private_folders(tmp_path: Path) -> None:
    """Two runs start a kernel in the same second from the same working directory: each
    kernel's connection file and sockets lie in a folder of its own, outside that directory,
    removed afterwards (jupyter_client's default put both kernels' sockets in it, under names
    picked by an existence check: the two runs talked to each other's kernel)."""
    nb = tiny_notebook(tmp_path / "where.ipynb", _WHERE)
    outs = [tmp_path / f"run{k}" / "where.ipynb" for k in range(2)]
    runs = [subprocess.Popen([sys.executable, "-c", _RUN_NOTEBOOK, nb, out]) for out in outs]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    seen = []
    for out in outs:
        cell = nbformat.read(out, as_version=4).cells[-1]
        seen.append(json.loads(cell.outputs[0]["text"]))
    folders = {Path(s["file"]).parent for s in seen}
    assert len(folders) == 2, seen
    for s in seen:
        assert Path(s["ip"]).parent == Path(s["file"]).parent, s  # the sockets beside it
        assert not Path(s["file"]).parent.is_relative_to(tmp_path), s
    assert not any(folder.exists() for folder in folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run1", "where.ipynb"]


def test_a_kernel_that_cannot_start_is_one_sentence_after_a_second_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """A kernel that does not answer in time (provoked for real: a kernelspec that sleeps 4 s
    before starting the kernel, against a start timeout of 1 s) is started once more, then
    named in one sentence: which notebook, what failed, what to try; no traceback, nothing of
    papermill's own log on the terminal."""
    starts = tmp_path / "starts"
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    launch = f"echo start >> {starts}; sleep 4; exec {sys.executable} -m ipykernel_launcher -f $0"
    argv = ["sh", "-c", launch, "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setattr(execute, "KERNEL_START_TIMEOUT", 1)
    nb = tiny_notebook(tmp_path / "slow.ipynb", "y = 2")
    with pytest.raises(NotebookFailed) as failed:
        run_notebook(nb, tmp_path / "out" / "slow.ipynb", {}, cwd=tmp_path, roots={})
    message = str(failed.value)
    assert message.startswith("slow.ipynb: the kernel could not start (tried twice)"), message
    assert "run again" in message and "\n" not in message
    assert starts.read_text().splitlines() == ["start", "start"]
    printed = capfd.readouterr()
    assert not printed.err.strip() and not printed.out.strip(), printed


_UPDATE = """
import sys
from embedscope.layout import update_json
for k in range(int(sys.argv[3])):
    update_json(sys.argv[1], lambda d, k=k: d.__setitem__(f"{sys.argv[2]}-{k}", k))
"""


def test_concurrent_updates_of_a_shared_json_file_keep_every_update(tmp_path: Path) -> None:
    """The cache's ``precision-races.json`` (and ``metrics.json``, ``index.json``) are read,
    changed and written by concurrent runs: 6 processes adding 25 keys each keep all 150."""
    path = tmp_path / "cache" / "precision-races.json"
    runs = [
        subprocess.Popen([sys.executable, "-c", _UPDATE, path, f"run{r}", "25"]) for r in range(6)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0] * 6
    assert len(read_json(path)) == 150
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no lock file left
    update_json(path, lambda d: d.clear())
    assert read_json(path) == {}


def test_two_installs_at_once_run_one_after_the_other_and_once(tmp_path: Path) -> None:
    """The Makefile's install steps go through ``scripts/serial.py``: of two makes that reach
    one step together, one installs and the other waits, then skips it (its stamp is new)."""
    stamp, log = tmp_path / "stamp", tmp_path / "log"
    step = f"sleep 1; echo ran >> {log}; touch {stamp}"
    cmd = [sys.executable, ROOT / "scripts" / "serial.py", tmp_path / "lock", stamp, "--"]
    runs = [
        subprocess.Popen([*cmd, "sh", "-c", step], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert log.read_text().splitlines() == ["ran"]
    assert sum("another make is installing" in out for out in outs) == 1, outs
    old = stamp.stat().st_mtime
    subprocess.run([*cmd, "sh", "-c", step], check=True)  # a later make: the stamp is old
    assert log.read_text().splitlines() == ["ran", "ran"] and stamp.stat().st_mtime > old


# --- whole runs at once (make test-faults) ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return make_classes(root / "images", per_class=12, size=40), tiny_vit(root / "vit")


def _start(
    source: Path, model: Path, where: Path, name: str, env: dict | None = None
) -> subprocess.Popen:
    """``embedscope run-all`` as a user starts it, float32 pinned (``auto``'s choice depends
    on the machine's load, and the runs are compared with each other)."""
    cmd = [
        sys.executable, "-m", "embedscope.cli", "run-all", "--source", source, "--name", name,
        "--model", model, "--notebooks-dir", ROOT / "notebooks",
        "--data-root", where / "data", "--reports-root", where / "reports",
        "--param", 'precision="fp32"',
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(run: subprocess.Popen) -> tuple[str, str]:
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err
    return out, err


def _report(where: Path, name: str) -> dict[str, pd.DataFrame]:
    folder = where / "reports" / name
    assert not (folder / "failed").exists()
    return {f: pd.read_csv(folder / f) for f in ("embedding_image_df.csv", "findings.csv")}


def _same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=False, atol=1e-5)


@pytest.mark.heavy
def test_four_runs_of_different_names_started_together_equal_runs_made_alone(
    tiny_set: tuple[Path, Path], tmp_path: Path
) -> None:
    source, model = tiny_set
    _finish(_start(source, model, tmp_path / "alone", "alone"))
    alone = _report(tmp_path / "alone", "alone")
    runs = {n: _start(source, model, tmp_path / "together", n) for n in "abcd"}
    for run in runs.values():
        _finish(run)
    for name in runs:
        _same(_report(tmp_path / "together", name), alone)
    assert not list((tmp_path / "together").rglob("*.damaged-*"))
    assert not list((tmp_path / "together" / "reports").glob(".*"))  # no staging left


@pytest.mark.heavy
def test_two_runs_of_the_same_name_run_one_after_the_other(
    tiny_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """The second waits, saying so in one line, then reuses the first's work (nothing
    embedded again); the report is one run's, whole."""
    source, model = tiny_set
    _finish(_start(source, model, tmp_path / "alone", "same"))
    alone = _report(tmp_path / "alone", "same")
    runs = [_start(source, model, tmp_path / "twice", "same") for _ in range(2)]
    errs = [_finish(run)[1] for run in runs]
    waited = [e for e in errs if "another run of 'same' is running: waiting" in e]
    assert len(waited) == 1, errs
    _same(_report(tmp_path / "twice", "same"), alone)
    metrics = json.loads((tmp_path / "twice" / "reports" / "same" / "metrics.json").read_text())
    assert metrics["embed"]["embedded_now"] == 0  # the later run's report: all from the cache
    assert not list((tmp_path / "twice").rglob("*.damaged-*"))
    assert not list((tmp_path / "twice").rglob("*.tmp"))


@pytest.mark.heavy
def test_runs_beside_two_busy_processes_per_core_finish(
    tiny_set: tuple[Path, Path], tmp_path: Path
) -> None:
    source, model = tiny_set
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        runs = [_start(source, model, tmp_path, name) for name in ("busy-a", "busy-b")]
        for run in runs:
            _finish(run)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert _report(tmp_path, "busy-a").keys() == _report(tmp_path, "busy-b").keys()
