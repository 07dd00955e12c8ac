"""Where every stage reads and writes: one place that knows the on-disk layout.

``data/<name>/`` holds what a stage computes (manifest, embeddings, projections) and can be
reused by the next run; ``reports/<name>/`` holds what a person reads (executed notebooks,
explorer.html, embedding_image_df.csv, metrics.json). All writes go through a temp file in the
same folder followed by ``os.replace`` so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

if os.name != "nt":
    import fcntl

from embedscope.faults import fault_point
from embedscope.vocabulary import GENERATED_NAMES

T = TypeVar("T")


def slug(text: str) -> str:
    """A file-system friendly name: lower case letters, digits, ``-``, ``_`` and ``.``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.").lower()
    return text or "dataset"


#: Characters a file name may hold that text tables cannot (bytes that are not UTF-8, which
#: Python holds as lone surrogates) or that would break a one-line report (control characters).
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def path_text(name: str) -> str:
    """A file name as text a table, JSON or a page can hold, losslessly.

    ``\\`` becomes ``\\\\``, and each byte that is not UTF-8 (``os.walk`` returns it as a
    surrogate escape) or is a control character (newline, tab …) becomes ``\\xHH``. Names
    without those characters (nearly all) are unchanged; :func:`os_path` reverses it.
    """
    return _UNSAFE.sub(_escape, name)


def _escape(m: re.Match) -> str:
    ch = m.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code - 0xDC00 if code >= 0xDC80 else code:02x}"


def os_path(root: str | Path, text: str) -> Path:
    """The file a :func:`path_text` name (relative to ``root``) stands for on disk."""
    return Path(root) / _ESCAPED.sub(_unescape, text)


def _unescape(m: re.Match) -> str:
    code = m.group(1)
    if code == "\\":
        return "\\"
    byte = int(code[1:], 16)
    return chr(byte + 0xDC00 if byte >= 0x80 else byte)


@dataclass(frozen=True)
class EmbeddingFiles:
    """One model's embeddings of a dataset: complete shards as they were written, and the
    vectors and their rows assembled from them (``embed.json``: the run's facts)."""

    dir: Path

    @property
    def shards(self) -> Path:
        return self.dir / "shards"

    @property
    def vectors(self) -> Path:
        return self.dir / "vectors.npy"

    @property
    def rows(self) -> Path:
        return self.dir / "rows.parquet"

    @property
    def facts(self) -> Path:
        return self.dir / "embed.json"


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset ``name`` under a data root and a reports root."""

    name: str
    data_root: Path = Path("data")
    reports_root: Path = Path("reports")

    def __post_init__(self) -> None:
        if slug(self.name) != self.name:
            raise ValueError(f"dataset name {self.name!r} must be a slug like {slug(self.name)!r}")
        object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "reports_root", Path(self.reports_root))

    @property
    def data_dir(self) -> Path:
        return self.data_root / self.name

    @property
    def reports_dir(self) -> Path:
        return self.reports_root / self.name

    #: What the stages write into ``data_dir`` (never part of a dataset's images).
    generated_names = GENERATED_NAMES

    @property
    def source_file(self) -> Path:
        """JSON naming the folder the manifest's relative paths are relative to."""
        return self.data_dir / "source.json"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.parquet"

    @property
    def decisions(self) -> Path:
        """Every decision made for this dataset, round after round (``DECISIONS=`` merges into
        it, each run applies it: :mod:`embedscope.decisions`); delete it to start over."""
        return self.data_dir / "decisions.csv"

    @property
    def thumbs(self) -> Path:
        """Thumbnail cells by sha256, made in ingest's decoding pass (:mod:`embedscope.thumbs`)."""
        return self.data_dir / "thumbs"

    def embeddings_dir(self, model_key: str) -> Path:
        return self.data_dir / "embeddings" / model_key

    def embedding_files(self, model_key: str) -> EmbeddingFiles:
        """The files of one model's embeddings (shards, vectors, rows, facts)."""
        return EmbeddingFiles(self.embeddings_dir(model_key))

    @property
    def embeddings_index(self) -> Path:
        """Which model key each model's embeddings have, and the latest one."""
        return self.data_dir / "embeddings" / "index.json"

    @property
    def precision_decisions(self) -> Path:
        """The precision each model's check kept for this dataset (:mod:`embedscope.embed`)."""
        return self.data_dir / "embeddings" / "precision.json"

    def label_issues(self, model_key: str, digest: str = "*") -> Path:
        """Label-issue results for one set of labels (``digest``; ``*``: a glob of all)."""
        return self.data_dir / "analysis" / model_key / f"label-issues-{digest}.npz"

    def projection(self, model_key: str, method: str, dims: int, digest: str) -> Path:
        """Coordinates; ``digest`` covers the parameters and the vectors they came from."""
        return self.data_dir / "projections" / model_key / f"{method}-{dims}d-{digest}.parquet"

    @property
    def pair_checks(self) -> Path:
        """The leak and near-duplicate searches' pair checks, kept across runs (any model's
        candidates: a pair's verdict depends on its two pictures only)."""
        return self.data_dir / "analysis" / "pair-checks.parquet"

    def neighbors(self, model_key: str) -> Path:
        return self.data_dir / "analysis" / model_key / "neighbors.npz"

    @property
    def metrics(self) -> Path:
        return self.reports_dir / "metrics.json"

    @property
    def explorer(self) -> Path:
        return self.reports_dir / "explorer.html"

    @property
    def embedding_csv(self) -> Path:
        return self.reports_dir / "embedding_image_df.csv"

    @property
    def findings(self) -> Path:
        return self.reports_dir / "findings.csv"

    @property
    def leaks(self) -> Path:
        """The held-out images that copy an earlier split's, one pair a row (with splits)."""
        return self.reports_dir / "leaks.csv"

    def points(self, method: str, dims: int) -> Path:
        """The point table of one map (:mod:`embedscope.points`): what every editor reads."""
        return self.reports_dir / f"points-{method}-{dims}d.parquet"

    def prompts(self, model_key: str) -> Path:
        """Prompt scores and zero-shot labels of a model's vectors (CLIP-family models)."""
        return self.embeddings_dir(model_key) / "prompts.parquet"

    @property
    def run_lock(self) -> Path:
        """Held by ``run-all`` for this dataset while it runs. Beside ``data_dir``, not in it:
        the sample's ``data_dir`` is also its image folder, and a lock is not an image."""
        return self.data_root / ".locks" / f"{self.name}.lock"

    @property
    def failed_dir(self) -> Path:
        """Where a failed run's executed notebooks go, apart from the report they did not
        replace."""
        return self.reports_dir / "failed"


_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFull(OSError):
    """A write that ran out of room; the message is one sentence naming the folder and size."""


#: Temp names of atomic writes: ``.<target>.<pid>.<random>.tmp`` (the pid lets a later run
#: tell a killed writer's litter from a live concurrent writer's file).
_TEMP = re.compile(r"\..+\.(?P<pid>\d+)\.[^.]+\.tmp")
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextmanager
def atomic_path(
    path: str | Path, need: int | None = None, point: str | None = None
) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one step.

    Litter of writers killed with SIGKILL is swept first. Running out of room (full disk,
    quota, file-size limit) raises :class:`DiskFull`; ``need`` (bytes), when known, goes into
    its message. The old ``path`` stays untouched until the new one is complete. ``point``
    names the fault point (:mod:`embedscope.faults`) passed between the two, so a test can
    kill a writer mid-write for certain.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield Path(tmp)
        if point:
            fault_point(point)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in _NO_ROOM and not _no_room_message(str(exc)):
            raise
        raise DiskFull(_no_room(path, need, os.path.getsize(tmp))) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _no_room_message(text: str) -> bool:
    """pyarrow reports a full disk as an OSError without errno, only in its message."""
    return any(m in text for m in ("No space left", "File too large", "quota exceeded"))


def _no_room(path: Path, need: int | None, written: int) -> str:
    free = shutil.disk_usage(path.parent).free
    size = f"about {_size(need)}" if need else f"more than the {_size(written)} written"
    return (
        f"no room to write {path.name} in {path.parent}: it needs {size} and "
        f"{_size(free)} is free there (full disk, quota or file-size limit); free some space "
        "and run again, the work already finished is kept"
    )


def _size(n: int) -> str:
    """A size a person reads at a glance: 812 bytes, 5.4 kB, 4.9 MB, 12.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def sweep_temps(folder: str | Path) -> list[Path]:
    """Remove temp files (and unpack folders) of writers that no longer run: a run killed
    with SIGKILL gets no chance to clean up, and its half-written temp must not linger."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m is None or process_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:  # another run swept it first
            pass
    return removed


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) terminates on Windows: keep everything there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def write_atomic(
    path: str | Path,
    write: Callable[[Path], Any],
    need: int | None = None,
    point: str | None = None,
) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically (see
    :func:`atomic_path` for ``need`` and ``point``)."""
    with atomic_path(path, need, point) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any, point: str | None = None) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), len(text), point)


def write_parquet(path: str | Path, df: Any, point: str | None = None) -> Path:
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False), point=point)


def write_npy(path: str | Path, array: Any) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object stops numpy appending ".npy" to the temp name
            np.save(fh, array)
            fh.flush()
            # numpy writes through its own C stream and misses a short write (full disk,
            # file-size limit): compare what landed on disk with what it meant to write
            if os.fstat(fh.fileno()).st_size < fh.tell():
                raise OSError(errno.ENOSPC, f"short write of {tmp.name}")

    return write_atomic(path, save, np.asarray(array).nbytes + 128)


def write_npz(path: str | Path, *, point: str | None = None, **arrays: Any) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    need = sum(np.asarray(a).nbytes + 256 for a in arrays.values())
    return write_atomic(path, save, need, point)


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in ``path``; ``default`` when missing, or when damaged (then set aside)."""
    value = load_checked(path, lambda p: json.loads(p.read_text(encoding="utf-8")))
    return default if value is None else value


class Damaged(ValueError):
    """A file the kit wrote that does not hold what it should (the message says what)."""


#: What reading a damaged file raises: the kit's own checks (:class:`Damaged`) and the parsers'
#: errors for bytes that are not their format (json and text decoding: ValueError; parquet:
#: pyarrow's ArrowInvalid, a ValueError, or an OSError without errno; numpy: ValueError or
#: EOFError; an .npz: zipfile.BadZipFile).
DAMAGE = (ValueError, EOFError, zipfile.BadZipFile, OSError)


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc``, raised while reading a file, says the file's bytes are bad. An OSError
    with an errno is the OS speaking (permissions, I/O): the file may be fine."""
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, DAMAGE)


def load_checked(path: str | Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)``, or None when the file is missing or damaged.

    ``load`` parses and validates (a parser's error on bad content, :class:`Damaged` for
    content that parses but is inconsistent). A damaged file (:func:`is_damage`) is reported
    in one line and set aside (renamed, never deleted), so the caller rebuilds it from what is
    still good. Anything else (an I/O error, a bug in ``load``) is raised: it says nothing
    about the file, which must not be set aside for it.
    """
    path = Path(path)
    try:
        before = path.stat()
        return load(path)
    except FileNotFoundError:
        if path.exists():
            raise
        return None  # missing, or set aside by a concurrent run meanwhile
    except DAMAGE as exc:
        if not is_damage(exc):
            raise
        set_aside(path, _first_line(exc), before)
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else "") or type(exc).__name__


def set_aside(path: str | Path, reason: str, seen: os.stat_result | None = None) -> Path | None:
    """Rename a damaged ``path`` to ``<name>.damaged-<UTC time>`` and say so in one line.

    Never deletes: the file may be someone's only copy. With ``seen`` (the stat taken before
    reading), a file replaced meanwhile by a concurrent run's good copy is left alone.
    """
    path = Path(path)
    try:
        now = path.stat()
    except FileNotFoundError:
        return None
    if seen is not None and (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while dest.exists():
        dest, n = path.with_name(f"{path.name}.damaged-{stamp}-{n}"), n + 1
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    print(
        f"embedscope: {path} is damaged ({reason}); set aside as {dest.name}, rebuilding it",
        file=sys.stderr,
        flush=True,
    )
    return dest


@contextmanager
def locked(path: str | Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block: a folder, or a file (made empty if
    missing).

    An OS lock (``flock``), not a file that exists or not: the OS drops it when its process
    dies, so a run killed with SIGKILL never leaves a stale lock behind. ``waiting``, when
    given, is printed (one line) if another process holds the lock and this one must wait.
    """
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.name != "nt":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    print(waiting, file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def update_json(path: str | Path, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Read-modify-write of a JSON object shared by concurrent runs: ``change(obj)`` edits the
    object in place under a lock on its folder (no lock file left in a report), then it is
    written atomically. Two runs that update at once both keep their part (a plain read then
    write would drop the first one's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        obj = read_json(path, default={}) or {}
        change(obj)
        write_json(path, obj)
    return obj


def update_metrics(path: str | Path, section: str, values: Any) -> dict[str, Any]:
    """Merge one stage's numbers into ``metrics.json`` under ``section`` (other stages kept)."""
    return update_json(path, lambda metrics: metrics.__setitem__(section, values))


def _json_default(obj: Any) -> Any:
    """Let numpy scalars and paths go into JSON without every caller converting them."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
