"""Stage 1 — ingest: find the images of a source and account for every file in a manifest.

A source is the built-in ``sample``, a local folder (used in place, never modified), a
``.zip``/``.tar(.gz)`` archive (unpacked safely under ``data/<name>/source`` and read as the
folder it holds: UTF-8 names, its one top-level folder stripped) or
``kaggle:<owner>/<dataset>``. The manifest has one row per candidate file, ``ok`` or
``skipped`` with a reason, so a bad file never stops a run and never disappears silently.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import stat
import statistics
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pandas as pd

from embedscope.faults import fault_point
from embedscope.images import MAX_PIXELS, decode, decoder_identity, lasting, skip_reason
from embedscope.layout import (
    Damaged,
    Layout,
    load_checked,
    os_path,
    path_text,
    read_json,
    slug,
    sweep_temps,
    write_json,
    write_parquet,
)
from embedscope.network import reachable
from embedscope.quality import (
    CLEANVISION_UNREAD_MODES,
    STAT_COLUMNS,
    STATS_VERSION,
    THRESHOLD_MODES,
    cleanvision_stats,
    image_stats,
    stats_copy,
)
from embedscope.shipped import SAMPLE_DIR  # the vendored sample: the checkout's or the wheel's
from embedscope.thumbs import ThumbnailCache, decoded_cell, encode_cell
from embedscope.vocabulary import DROPPED_REASON, UNLABELLED
from embedscope.words import counted

#: Files the OS leaves in folders on its own: never candidates, and not listed.
OS_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"}
#: The folder of resource forks macOS's Compress adds to a zip: not read, and not listed.
MACOS_FORKS = "__MACOSX"
#: Skip reason of a file whose name, or a folder's on its path, starts with a dot.
HIDDEN_REASON = "hidden file"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: Written into an unpacked archive's folder: which archive it holds, and ``UNPACK_VERSION``,
#: raised whenever unpacking changes so that an older unpack is redone rather than reused.
ARCHIVE_MARKER = ".embedscope-archive.json"
UNPACK_VERSION = 2  # 2: zip names read as UTF-8, the one top-level folder stripped
_ZIP_UTF8_FLAG = 0x800
MANIFEST_COLUMNS = [
    "path",
    "label",
    "status",
    "reason",
    "duplicate_of",
    "sha256",
    "bytes",
    "mtime_ns",
    "width",
    "height",
    "mode",
    "format",
    "tags",
    "decoder",
    *STAT_COLUMNS,
]
#: Keys of an :func:`inspect_file` row that are not manifest columns: the image's encoded
#: thumbnail cell and the seconds it took, for the thumbnail cache; and the CPU seconds its
#: decode took (None where it was not decoded at draft scale), for :func:`decode_cost`.
CELL, CELL_SECONDS, DECODE_SECONDS = "cell", "cell_seconds", "decode_seconds"
#: Draft decodes a run must time before its median replaces one a bigger run recorded.
MIN_DECODE_TIMINGS = 8
#: The JPEG draft size ingest decodes at (statistics and thumbnails need no more).
INGEST_DRAFT = (256, 256)


class SourceError(RuntimeError):
    """A source that cannot be used; the message is one sentence saying what to do."""


def default_name(source: str) -> str:
    """Dataset name derived from a source: ``kaggle:o/diamonds`` -> ``diamonds``."""
    if source.startswith("kaggle:"):
        return slug(source.split("/")[-1])
    path = Path(source.rstrip("/\\"))
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return slug(name)


#: Where kagglehub downloads from (asked before a run, so an offline run stops at once).
KAGGLE_URL = "https://www.kaggle.com"


def kaggle_cached(handle: str) -> bool:
    """Whether kagglehub already holds a download of ``owner/dataset`` (it then needs no
    network): its cache is ``$KAGGLEHUB_CACHE`` or ``~/.cache/kagglehub``."""
    cache = Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")
    return (cache / "datasets" / handle).is_dir()


def check_source(source: str) -> None:
    """Raise :class:`SourceError` (one sentence) for a source that cannot work, before any
    stage runs: a missing path, a file that is no archive, a folder without a single file, a
    malformed Kaggle handle. Cheap: nothing is read, downloaded or unpacked."""
    if source == "sample":
        if not SAMPLE_DIR.is_dir():
            raise SourceError(f"the built-in sample is missing at {SAMPLE_DIR}; run `make sample`")
        return
    if source.startswith("kaggle:"):
        handle = source.removeprefix("kaggle:")
        if handle.count("/") != 1 or not all(handle.split("/")):
            raise SourceError(
                f"kaggle source must look like kaggle:<owner>/<dataset>, got {handle!r}"
            )
        if not kaggle_cached(handle) and not reachable(KAGGLE_URL):
            raise SourceError(
                f"Kaggle dataset {handle!r} is not in the local kagglehub cache and "
                f"{urlsplit(KAGGLE_URL).hostname} cannot be reached (offline or behind a "
                "firewall): download it where the network works and pass its folder as SOURCE"
            )
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(
            f"source {source!r} does not exist (expected a folder, an archive, "
            "'sample' or 'kaggle:<owner>/<dataset>')"
        )
    if path.is_file() and not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise SourceError(f"source {source!r} is a file but not a .zip or .tar(.gz) archive")
    if path.is_dir() and not any(files for _, _, files in os.walk(path)):
        raise SourceError(f"source folder {source!r} holds no files: nothing to embed")


def resolve_source(source: str, layout: Layout) -> Path:
    """Return the folder whose files make up the dataset, fetching or unpacking if needed."""
    if source == "sample":
        root = SAMPLE_DIR
        if not root.is_dir():
            raise SourceError(f"the built-in sample is missing at {root}; run `make sample`")
        return root.resolve()
    if source.startswith("kaggle:"):
        return _kaggle_download(source.removeprefix("kaggle:"))
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(
            f"source {source!r} does not exist (expected a folder, an archive, "
            "'sample' or 'kaggle:<owner>/<dataset>')"
        )
    if path.is_dir():
        return path.resolve()
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return _unpack(path, layout.data_dir / "source")
    raise SourceError(f"source {source!r} is a file but not a .zip or .tar(.gz) archive")


def _kaggle_download(handle: str) -> Path:
    """Download a Kaggle dataset with the user's own credentials (kagglehub caches it)."""
    if handle.count("/") != 1:
        raise SourceError(f"kaggle source must look like kaggle:<owner>/<dataset>, got {handle!r}")
    try:
        import kagglehub
    except ImportError:
        raise SourceError(
            "Kaggle sources need the kagglehub package: pip install kagglehub"
        ) from None
    has_credentials = (Path.home() / ".kaggle" / "kaggle.json").exists() or (
        os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")
    )
    try:
        return Path(kagglehub.dataset_download(handle)).resolve()
    except Exception as exc:  # kagglehub raises many types; the user needs one sentence.
        why = _kaggle_failure(exc, bool(has_credentials))
        raise SourceError(f"could not download Kaggle dataset {handle!r}: {why}") from None


#: How to give kagglehub credentials, for the sentences of :func:`_kaggle_failure`.
KAGGLE_CREDENTIALS = "put kaggle.json in ~/.kaggle/ or set KAGGLE_USERNAME and KAGGLE_KEY"


def _kaggle_failure(exc: BaseException, has_credentials: bool) -> str:
    """Why a Kaggle download failed, as the user can act on it: no network, no or refused
    credentials, no such dataset; else the error's first line (never the HTTP library's
    connection-pool internals, which kagglehub passes on)."""
    import requests

    missing = (
        ""
        if has_credentials
        else f"; no Kaggle credentials were found either: {KAGGLE_CREDENTIALS}"
    )
    if isinstance(
        exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError
    ):
        return f"kaggle.com cannot be reached (offline or behind a firewall){missing}"
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    kind = type(exc).__name__
    if status in (401, 403) or kind in ("CredentialError", "UnauthenticatedError"):
        if not has_credentials:
            return f"no Kaggle credentials were found: {KAGGLE_CREDENTIALS}"
        return (
            "Kaggle refused your credentials for it (check them, and accept the dataset's "
            "terms on kaggle.com if it asks for consent)"
        )
    if status == 404 or kind == "NotFoundError":
        return "Kaggle has no such dataset (check the owner and the dataset's name)"
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else kind
    return f"{kind}: {first}{missing}"


def _unpack(archive: Path, target: Path) -> Path:
    """Unpack ``archive`` into ``target`` once, as the folder it holds would be read: names
    decoded as UTF-8 (:func:`_zip_name`), one top-level folder stripped (:func:`_content_root`).
    Members that would land outside the target are refused."""
    stat = archive.stat()
    stamp = {
        "archive": str(archive.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "unpack": UNPACK_VERSION,
    }
    marker = target / ARCHIVE_MARKER
    if read_json(marker) == stamp:
        return target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(target.parent)  # a killed unpack's half-filled folder
    tmp = Path(tempfile.mkdtemp(prefix=f".unpack.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    tree = tmp / "tree"
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for info in members:
                    info.filename = _zip_name(info)  # what extract writes; the header keeps its own
                    dest = (tree / info.filename).resolve()
                    if not dest.is_relative_to(tree.resolve()):
                        raise SourceError(
                            f"archive member {info.filename!r} would be written outside "
                            "the target folder; refusing to unpack"
                        )
                zf.extractall(tree, members)
        else:
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(tree, filter="data")
                except tarfile.FilterError as exc:
                    raise SourceError(f"unsafe archive member refused: {exc}") from None
        tree.mkdir(exist_ok=True)  # an empty archive is an empty folder
        content = _content_root(tree)
        write_json(content / marker.name, stamp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(content, target)
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise SourceError(f"cannot unpack {archive}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target.resolve()


def _zip_name(info: zipfile.ZipInfo) -> str:
    """A member's name as its maker meant it. Info-ZIP's ``zip`` (the Linux tool) stores the
    file system's UTF-8 bytes without setting the UTF-8 flag, which zipfile then reads as
    cp437 (``Ünïcode`` -> ``├£n├»code``): bytes that are valid UTF-8 are read as UTF-8, any
    others keep the reading the archive asks for."""
    if info.flag_bits & _ZIP_UTF8_FLAG:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return info.filename


def _content_root(tree: Path) -> Path:
    """The folder of ``tree`` to read: its one top-level folder when nothing else but OS
    litter (``__MACOSX``, ``.DS_Store``, …) lies beside it, as that folder would be read had
    it been unpacked by hand, so a zip and its folder give the same paths and labels."""
    entries = [p for p in tree.iterdir() if p.name not in OS_LITTER | {MACOS_FORKS}]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return tree


def discover(root: Path, exclude: Sequence[str] = ()) -> list[str]:
    """Relative posix paths of candidate files, hidden ones included (:func:`is_hidden`: the
    manifest lists them as skipped); no OS litter, ``__MACOSX`` folder or symlink loop.

    Paths are :func:`~embedscope.layout.path_text` (any name the OS can hold, as text);
    a folder that vanishes during the walk is left out, not an error.
    """
    root = Path(root)
    seen: set[tuple[int, int]] = set()
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d != MACOS_FORKS and not _excluded(path_text(str(rel_dir / d)), exclude)
        )
        for name in sorted(filenames):
            if name in OS_LITTER:
                continue
            rel = path_text(str(rel_dir / name) if str(rel_dir) != "." else name)
            if not _excluded(rel, exclude):
                found.append(rel)
    return found


def is_hidden(rel: str) -> bool:
    """Whether a manifest path is hidden: its name or one of its folders starts with a dot."""
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p.strip("/")) for p in patterns)


#: Folder names that hold pictures without naming what they show (Roboflow's ``train/images/``,
#: Pascal VOC's ``JPEGImages/``): where every image's parent folder is one, an image's class is
#: the folder above it (:func:`containers_hold_all`; a document set's ``image`` class beside
#: ``text`` and ``table`` stays a class).
CONTAINERS = frozenset({"images", "image", "imgs", "img", "jpegimages", "pictures", "pics"})
#: Words of a folder name that say its images carry no label (STL-10's ``unlabeled/``).
NO_LABEL = frozenset({"unlabeled", "unlabelled", "nolabel", "unannotated"})


def is_container(name: str) -> bool:
    """Whether a folder name is a :data:`CONTAINERS` name (any case, ``_`` and ``-`` aside)."""
    return re.sub(r"[^a-z]", "", name.lower()) in CONTAINERS


def says_unlabelled(name: str) -> bool:
    """Whether a word of a folder name is a :data:`NO_LABEL` word (``unlabeled_images``)."""
    return bool(NO_LABEL.intersection(re.findall(r"[a-z]+", name.lower())))


def containers_hold_all(paths: Iterable[str]) -> bool:
    """Whether every file sits straight in a :data:`CONTAINERS` folder (``train/images/``,
    ``cats/images/``): those folders then name no class."""
    parents = [PurePosixPath(rel).parts[:-1] for rel in paths]
    return bool(parents) and all(p and is_container(p[-1]) for p in parents)


def label_of(rel: str, label_depth: int | None = None, containers: bool = False) -> str:
    """Label from the folders of ``rel``: by default its parent folder, unlabelled in a folder
    that says so (:func:`says_unlabelled`); with ``containers``, the nearest folder above it
    that is not :func:`is_container` (``cats/images/1.jpg`` is a cat; none: unlabelled); or
    the folder at ``label_depth`` (1 = first folder under the root) for nested trees."""
    parts = PurePosixPath(rel).parts[:-1]
    if label_depth is not None and parts:
        return parts[min(label_depth, len(parts)) - 1]
    named = [p for p in parts if not (containers and is_container(p))]
    if not named or says_unlabelled(named[-1]):
        return UNLABELLED
    return named[-1]


#: Words of a split folder's name (``seg_train``, ``train2017``, ``Validation`` ...) -> the split
#: it names: the kit's split words are ``train``, ``val``, ``test`` and ``pred``.
SPLIT_WORDS = {
    **dict.fromkeys(("train", "training", "trn", "trainval"), "train"),
    **dict.fromkeys(("val", "valid", "validate", "validation", "dev", "eval", "evaluation"), "val"),
    **dict.fromkeys(("test", "tests", "testing", "tst", "holdout", "heldout"), "test"),
    # a set to predict, unlabelled (Intel Image Classification's seg_pred/): held out, after test
    **dict.fromkeys(("pred", "predict", "prediction", "predictions", "inference"), "pred"),
}
#: Endings a split word may carry in one word (``trainset``, ``testimages``, ``valdata``).
SPLIT_ENDINGS = re.compile(r"(?:set|sets|data|images|imgs)$")
#: ``split`` parameter values besides a folder depth.
SPLIT_MODES = ("auto", "none")


def split_name(name: str) -> str | None:
    """The split a folder name (or a labels file's ``split`` cell) names, or None: any case,
    any word of it (``seg_train`` -> train, ``val2017`` -> val, ``Holdout`` -> test,
    ``TrainingSet`` and ``testimages`` -> train and test; ``trainval`` -> train)."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name)).lower()
    for word in re.findall(r"[a-z]+", words):
        split = SPLIT_WORDS.get(word) or SPLIT_WORDS.get(SPLIT_ENDINGS.sub("", word))
        if split:
            return split
    return None


def check_split(split: str | int | None) -> str | int:
    """``split`` as ``auto``, ``none`` or a folder depth (1 = first folder under the root), or
    a one-line refusal."""
    if split is None:
        return "none"
    text = str(split).strip().lower()
    if text in SPLIT_MODES:
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise SourceError(f"split must be auto, none or a folder depth (1, 2, ...), not {split!r}")


def split_of(rel: str, split: str | int = "auto", containers: bool = False) -> tuple[str, bool]:
    """The split of a manifest path ('' for none) and whether the image sits in no class folder:
    below its split folder only split folders again (``train/a.png``,
    ``seg_pred/seg_pred/a.jpg``), a folder that says unlabelled, or with ``containers``
    containers (``valid/images/a.jpg``: :func:`containers_hold_all`). ``auto``: the
    first folder from the root whose name is a split word, above the class folder (the parent
    folder counts only for a file one folder deep: ``train/img.png``); a depth: that folder,
    its name as the split (a split word in it as that word)."""
    folders = PurePosixPath(rel).parts[:-1]
    if split == "none" or not folders:
        return "", False
    if isinstance(split, int):
        if len(folders) < split:
            return "", False
        name = folders[split - 1]
        return split_name(name) or name, _classless(folders[split:], containers)
    above = folders if len(folders) == 1 else folders[:-1]
    for depth, name in enumerate(above, 1):
        found = split_name(name)
        if found:
            return found, _classless(folders[depth:], containers)
    return "", False


def _classless(folders: Sequence[str], containers: bool) -> bool:
    """Whether none of ``folders`` (those below a split folder) can be a class folder."""
    return all(
        split_name(f) or (containers and is_container(f)) or says_unlabelled(f) for f in folders
    )


def inspect_file(
    root: str | Path, rel: str, max_pixels: int = MAX_PIXELS, *, cleanvision: bool = False
) -> dict:
    """Facts about one file, and whether it is a usable image (``reason`` says why not), with
    its thumbnail cell (:data:`CELL`, None when it has none) made from the same decode.
    ``rel`` is a manifest path (:func:`~embedscope.layout.path_text`). ``cleanvision``: also
    cleanvision's own statistics (:func:`~embedscope.quality.cleanvision_stats`), on a
    full-size decode.

    ``decoder`` is the :func:`~embedscope.images.decoder_identity` that judged the file, and
    None when the verdict says nothing lasting about it (no permission, an I/O error, memory,
    anything unexpected): such a row is reported for this run and inspected again by the next.
    """
    path = os_path(root, rel)
    row: dict = {
        "path": rel,
        "status": "skipped",
        "reason": "",
        "sha256": None,
        "bytes": None,
        "mtime_ns": None,
        "width": None,
        "height": None,
        "mode": None,
        "format": None,
        "decoder": decoder_identity(),
        CELL: None,
        CELL_SECONDS: 0.0,
        DECODE_SECONDS: None,
    }
    if is_hidden(rel):  # listed, never read: dot-files are settings, caches, resource forks
        row["reason"] = HIDDEN_REASON
        row["bytes"], row["mtime_ns"] = _stat(path)
        return row
    try:
        st = path.stat()
        row["bytes"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
        if not stat.S_ISREG(st.st_mode):  # reading a named pipe would wait forever
            row["reason"] = "not a regular file (named pipe, device or socket)"
            return row
        if st.st_size == 0:
            row["reason"] = "empty file (0 bytes)"
            return row
        fault_point("ingest:inspect")
        data = path.read_bytes()
    except OSError as exc:
        row["reason"], row["decoder"] = skip_reason(exc), None
        return row
    row["sha256"] = hashlib.sha256(data).hexdigest()
    row["reason"] = _check_image(path, row, max_pixels, cleanvision)
    row["status"] = "skipped" if row["reason"] else "ok"
    if not lasting(row["reason"]):
        row["decoder"] = None
    return row


def _check_image(path: Path, row: dict, max_pixels: int, cleanvision: bool = False) -> str:
    """Decode the image (reduced-size draft for JPEG) into ``row``, with the image-quality
    statistics of what was decoded and its thumbnail cell, both from one reduced RGB copy
    (this is the one pass that decodes every file); return a skip reason or ''.
    ``cleanvision``: the decode is full size (as cleanvision reads a file) and cleanvision's own
    statistics are taken on it too; the reduced copy is then shrunk from it."""
    try:
        draft = None if cleanvision else INGEST_DRAFT
        t0 = time.thread_time()  # CPU time: what a decoding worker spends, whatever else runs
        im, header = decode(path, max_pixels=max_pixels, draft=draft)
        row[DECODE_SECONDS] = time.thread_time() - t0 if draft else None
    except Exception as exc:  # whatever happens to one file is its reason, never the run's end
        row.update(getattr(exc, "header", {}))
        return skip_reason(exc)
    with im:
        reduced = stats_copy(im)
        row.update(header, **image_stats(reduced))
        if cleanvision:
            with contextlib.suppress(Exception):  # a mode it cannot read: the reduced copy's
                row.update(cleanvision_stats(im))
        t0 = time.perf_counter()
        # a cell that fails is no reason to skip the image: the page then decodes the original
        # for it, as for any image the cache lacks
        with contextlib.suppress(Exception):
            row[CELL] = encode_cell(decoded_cell(im, reduced))
        row[CELL_SECONDS] = time.perf_counter() - t0
    return ""


def build_manifest(
    root: str | Path,
    *,
    exclude: Sequence[str] = (),
    label_depth: int | None = None,
    labels: str | Path | pd.DataFrame | None = None,
    split: str | int = "auto",
    max_pixels: int = MAX_PIXELS,
    previous: pd.DataFrame | None = None,
    workers: int | None = None,
    thumbnails: ThumbnailCache | None = None,
    quality_thresholds: str = "calibrated",
    decode_times: list[float] | None = None,
) -> pd.DataFrame:
    """One row per candidate file under ``root``; rows of ``previous`` are reused for files
    whose size and mtime did not change, so re-runs on an unchanged folder read nothing. The
    thumbnail cells of the files inspected go to ``thumbnails`` as they come; the CPU seconds
    of each draft-scale decode to ``decode_times`` (see :func:`decode_cost`).
    ``quality_thresholds="cleanvision"`` takes cleanvision's own statistics too (full-size
    decodes; a reused row without them is inspected again)."""
    cleanvision = _cleanvision_mode(quality_thresholds)
    root = Path(root)
    rels = discover(root, exclude)
    reused: dict[str, dict] = {}
    if previous is not None and len(previous):
        stats = [_stat(os_path(root, rel)) for rel in rels]
        now = pd.DataFrame(
            {"path": rels, "bytes": [s[0] for s in stats], "mtime_ns": [s[1] for s in stats]}
        )
        prev = previous.reindex(columns=MANIFEST_COLUMNS)
        prev = prev[prev["reason"] != DROPPED_REASON]  # decisions apply afresh on each run
        # a skip is reused only as the verdict of this decoder (none: it was not lasting)
        judged = prev["decoder"] == decoder_identity() if "decoder" in prev else False
        prev = prev[(prev["status"] == "ok") | judged]
        same = now.merge(prev, on=["path", "bytes", "mtime_ns"], how="inner")
        # an ok row whose statistics are of another version (or from before they existed) is
        # inspected again, once
        current = (same["stats_version"] == STATS_VERSION) & same["phash"].notna()
        if cleanvision:  # taken already, or a mode cleanvision cannot read
            current &= same["cv_entropy"].notna() | same["mode"].isin(CLEANVISION_UNREAD_MODES)
        same = same[(same["status"] != "ok") | current]
        reused = {r["path"]: r for r in same.to_dict(orient="records")}
    todo = [rel for rel in rels if rel not in reused]
    rows = dict(reused)
    cells = thumbnails.writer("ingest") if thumbnails else None
    with cells or contextlib.nullcontext():
        for row in _inspect_all(root, todo, max_pixels, workers, cleanvision):
            cell, seconds, decoded = row.pop(CELL), row.pop(CELL_SECONDS), row.pop(DECODE_SECONDS)
            if decode_times is not None and decoded is not None and row["status"] == "ok":
                decode_times.append(decoded)
            if cells:
                cells.add(row["sha256"], cell, seconds)
            rows[row["path"]] = row
    df = pd.DataFrame([rows[rel] for rel in rels], columns=MANIFEST_COLUMNS)
    containers = containers_hold_all(df["path"])  # one decision for the dataset, used twice
    df["label"] = _labels(df["path"], label_depth, labels, containers)
    _add_splits(df, check_split(split), label_depth, labels, containers)
    df["tags"] = ""  # set by decisions only
    for col in ("bytes", "mtime_ns", "width", "height"):
        df[col] = df[col].astype("Int64")
    return mark_duplicates(df)


def mark_duplicates(manifest: pd.DataFrame) -> pd.DataFrame:
    """``duplicate_of``: the first ok file with the same bytes, for every later ok copy."""
    df = manifest.copy()
    first = df[df["status"] == "ok"].drop_duplicates("sha256").set_index("sha256")["path"]
    dup = df["sha256"].map(first)
    df["duplicate_of"] = dup.where((df["status"] == "ok") & (dup != df["path"]))
    return df


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def _inspect_all(
    root: Path, rels: list[str], max_pixels: int, workers: int | None, cleanvision: bool = False
) -> Iterator[dict]:
    """Rows in order, as they come (their cells go to the cache without piling up)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(rels) < 64:
        yield from (inspect_file(root, rel, max_pixels, cleanvision=cleanvision) for rel in rels)
        return
    chunk = max(16, len(rels) // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        todo = [(root, r, max_pixels, cleanvision) for r in rels]
        yield from pool.map(_inspect_one, todo, chunksize=chunk)


def _inspect_one(args: tuple[Path, str, int, bool]) -> dict:
    root, rel, max_pixels, cleanvision = args
    return inspect_file(root, rel, max_pixels, cleanvision=cleanvision)


def _cleanvision_mode(quality_thresholds: str) -> bool:
    """Whether ``quality_thresholds`` asks for cleanvision's own statistics; a mode that is
    neither is refused in one line."""
    if quality_thresholds not in THRESHOLD_MODES:
        raise SourceError(
            f"quality_thresholds must be one of {', '.join(THRESHOLD_MODES)}, "
            f"not {quality_thresholds!r}"
        )
    return quality_thresholds == "cleanvision"


def _labels(
    paths: pd.Series, label_depth: int | None, labels, containers: bool = False
) -> pd.Series:
    """Each path's folder label (:func:`label_of`), replaced by the labels file's for the paths
    it names: a file naming a few images relabels those few, not the rest of the folder."""
    folder = paths.map(lambda rel: label_of(rel, label_depth, containers))
    if labels is None:
        return folder
    mapping = read_labels(labels) if not isinstance(labels, dict) else labels
    if not mapping:  # a file of splits only
        return folder
    return paths.map(mapping).fillna(folder)


def _add_splits(
    df: pd.DataFrame, split: str | int, label_depth: int | None, labels, containers: bool = False
) -> None:
    """A ``split`` column (:func:`split_of`, replaced by the labels file's ``split`` for the
    paths it names), only when the dataset has splits: with ``auto``, at least two different
    ones among its images. An image whose parent folder is the split folder gets no label
    from it (unless the labels file gives one): labels stay the class folder."""
    if split == "none":
        return
    found = [split_of(rel, split, containers) for rel in df["path"]]
    below = _splits_below_classes(df, found) if split == "auto" else None
    if below is not None:
        found = [(s, False) for s in below]
    splits = pd.Series([s for s, _ in found], index=df.index, dtype=object)
    given = read_splits(labels) if labels is not None and not isinstance(labels, dict) else {}
    if given:
        splits = df["path"].map(given).fillna(splits)
    ok = splits[(df["status"] == "ok") & (splits != "")]
    if split == "auto" and ok.nunique() < 2:
        return
    df["split"] = splits.astype(str)
    named = (
        set(read_labels(labels)) if labels is not None and not isinstance(labels, dict) else set()
    )
    mine = [label_depth is None and rel not in named for rel in df["path"]]
    if below is not None:  # the class is the folder above the split (one class: a wrapper)
        folders = df["path"].map(lambda rel: PurePosixPath(rel).parts[:-2])
        classes = folders.map(lambda f: f[-1] if f else UNLABELLED)
        several = classes[df["status"] == "ok"].nunique() > 1
        df.loc[mine, "label"] = classes[mine] if several else UNLABELLED
        return
    flat = [bool(f) and m for m, (_, f) in zip(mine, found, strict=True)]
    df.loc[flat, "label"] = UNLABELLED


def _splits_below_classes(df: pd.DataFrame, found: list[tuple[str, bool]]) -> list[str] | None:
    """Each image's split where the split folders sit under the class folders
    (``cat/train/1.png``, ``cat/test/2.png``): only where no split was found above any class,
    every usable image's parent folder names a split, at least two different ones, with a
    folder above it; else None (a class that happens to be called ``train`` beside ``bus`` and
    ``car`` stays a class)."""
    if any(s for s, _ in found):
        return None
    parents = [PurePosixPath(rel).parts[:-1] for rel in df["path"]]
    splits = [split_name(p[-1]) if len(p) >= 2 else None for p in parents]
    ok = [s for s, status in zip(splits, df["status"], strict=True) if status == "ok"]
    if not ok or None in ok or len(set(ok)) < 2:
        return None
    return [s or "" for s in splits]


def read_splits(labels: str | Path | pd.DataFrame) -> dict[str, str]:
    """The ``split`` column of a labels file as ``{path: split}`` (a split word as the kit's
    word: ``validation`` -> val); empty when it has none (it was checked by
    :func:`read_labels`)."""
    table = labels if isinstance(labels, pd.DataFrame) else _read_table(Path(labels).expanduser())
    table = table.set_axis([str(c).strip() for c in table.columns], axis=1)
    if "split" not in table:
        return {}
    paths = table["path"].fillna("").astype(str).str.strip()
    given = table["split"].fillna("").astype(str).str.strip()
    keep = (paths != "") & (given != "")
    return {p: split_name(s) or s for p, s in zip(paths[keep], given[keep], strict=True)}


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def read_labels(labels: str | Path | pd.DataFrame) -> dict[str, str]:
    """A labels file (CSV or parquet, columns ``path,label``; a later row for a path wins) as
    ``{path: label}``, checked: a missing or unreadable file, a missing column or an empty
    label raises :class:`SourceError` in one sentence, before any image is read."""
    if isinstance(labels, pd.DataFrame):
        table, what = labels, "the labels table"
    else:
        path = Path(labels).expanduser()
        what = f"labels file {path}"
        if not path.is_file():
            raise SourceError(f"{what} does not exist")
        try:
            table = _read_table(path)
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(
                f"{what} cannot be read as a UTF-8 CSV or parquet file: {reason}"
            ) from None
    table = table.set_axis([str(c).strip() for c in table.columns], axis=1)
    if "path" not in table or not {"label", "split"} & set(table.columns):
        found = ",".join(table.columns) or "none"
        raise SourceError(f"{what} needs the columns path,label; found {found}")
    if "label" not in table:  # a file of splits only (path,split): it relabels nothing
        return {}
    paths = table["path"].fillna("").astype(str).str.strip()
    names = table["label"].fillna("").astype(str).str.strip()
    if (paths == "").any() or (names == "").any():
        row = int(((paths == "") | (names == "")).to_numpy().argmax())
        raise SourceError(
            f"{what} has a row without a path or a label: row {row + 1} of {len(table)}"
        )
    return dict(zip(paths, names, strict=True))


def labels_facts(manifest: pd.DataFrame, labels: str | Path | pd.DataFrame | None) -> dict | None:
    """What a labels file did to ``manifest``: the file, how many of its files it labelled
    and the paths it names that the dataset does not hold (ignored, as a decision's are)."""
    if labels is None:
        return None
    named = read_labels(labels)
    known = set(manifest["path"])
    unknown = [p for p in named if p not in known]
    return {
        "file": None if isinstance(labels, pd.DataFrame) else str(labels),
        "applied": len(named) - len(unknown),
        "unknown_paths": unknown,
    }


def ingest(
    source: str,
    layout: Layout,
    *,
    exclude: Sequence[str] = (),
    label_depth: int | None = None,
    labels: str | Path | None = None,
    split: str | int = "auto",
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    quality_thresholds: str = "calibrated",
) -> pd.DataFrame:
    """Resolve ``source``, build (or refresh) ``data/<name>/manifest.parquet`` and return it;
    the thumbnail cells of the files it decodes go to ``data/<name>/thumbs/``. ``split``:
    ``auto`` (split folders such as ``train/``, ``val/``, ``test/``, or a labels file's
    ``split`` column), ``none``, or the folder depth that holds the split (:func:`split_of`).
    ``quality_thresholds="cleanvision"`` also takes cleanvision's own quality statistics, on
    full-size decodes, so that 03_reduce's flags in that mode are exactly cleanvision's."""
    split = check_split(split)
    _cleanvision_mode(quality_thresholds)  # refused before anything is read
    root = resolve_source(source, layout)
    if source == "sample":
        exclude = [*exclude, "LICENSE.md"]  # the sample's attribution file, not a data file
    if root == layout.data_dir.resolve() or (root / "source.json").is_file():
        # data/sample is both the vendored images and dataset "sample"'s output folder;
        # ".*.tmp" are the outputs' atomic writes in flight
        exclude = [*exclude, *layout.generated_names, ".*.tmp"]
    if (root / ARCHIVE_MARKER).is_file():
        exclude = [*exclude, ARCHIVE_MARKER]  # an unpacked archive's own note, not a data file
    previous, known = None, read_json(layout.source_file) or {}
    if known.get("root") == str(root):
        previous = load_checked(layout.manifest, read_manifest)  # damaged: rebuilt in full
    decode_times: list[float] = []
    manifest = build_manifest(
        root,
        exclude=exclude,
        label_depth=label_depth,
        labels=labels,
        split=split,
        max_pixels=max_pixels,
        previous=previous,
        workers=workers,
        thumbnails=ThumbnailCache(layout),
        quality_thresholds=quality_thresholds,
        decode_times=decode_times,
    )
    write_parquet(layout.manifest, manifest, point="manifest:write")
    cost = _decode_record(decode_times, known.get("decode") if previous is not None else None)
    write_json(layout.source_file, {"source": source, "root": str(root), "decode": cost})
    return manifest


def _decode_record(times: list[float], before: dict | None) -> dict | None:
    """What :func:`decode_cost` reads: the median CPU seconds of this run's draft-scale decodes
    and how many were timed; a record of more decodes stands against a run that timed only a
    few new files (under :data:`MIN_DECODE_TIMINGS`), and one that timed none."""
    if before and len(times) < min(MIN_DECODE_TIMINGS, before.get("images", 0)):
        return before
    if not times:
        return None
    return {"seconds": round(statistics.median(times), 6), "images": len(times)}


def decode_cost(layout: Layout) -> float | None:
    """CPU seconds per image to decode one of the dataset's files at draft scale, as ingest's
    pass measured it on every file it decoded (None when it decoded none that way, e.g. with
    cleanvision's full-size decodes): the embed stage plans its decoding workers from it rather
    than decode files again to find out (on 48 camera photos that re-measure cost 4 decodes
    before the first batch)."""
    record = (read_json(layout.source_file) or {}).get("decode")
    seconds = record.get("seconds") if isinstance(record, dict) else None
    return float(seconds) if isinstance(seconds, int | float) and seconds > 0 else None


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest file, checked: its columns, statuses, unique paths and ok rows' hashes."""
    df = pd.read_parquet(path)
    missing = {"path", "label", "status", "reason", "sha256", "bytes", "mtime_ns"} - set(df.columns)
    if missing:
        raise Damaged(f"columns {sorted(missing)} missing")
    ok = df["status"] == "ok"
    if not df["status"].isin(["ok", "skipped"]).all() or df["path"].duplicated().any():
        raise Damaged("unknown status or repeated path")
    if not df.loc[ok, "sha256"].astype(str).str.fullmatch("[0-9a-f]{64}").all():
        raise Damaged("an ok row lacks a sha256")
    return df


def load_manifest(layout: Layout) -> tuple[pd.DataFrame, Path]:
    """The manifest and the folder its paths are relative to, for the later stages."""
    source = read_json(layout.source_file)
    manifest = load_checked(layout.manifest, read_manifest) if source else None
    if manifest is None or "root" not in source:
        raise SourceError(
            f"no usable manifest at {layout.manifest}: run 01_download for {layout.name!r}"
        )
    return manifest, Path(source["root"])


def require_images(manifest: pd.DataFrame, source: str) -> None:
    """Stop at the first notebook, in one sentence, when nothing in ``source`` can be embedded
    (later stages would otherwise fail on an empty array)."""
    if (manifest["status"] == "ok").any():
        return
    reasons = manifest["reason"].value_counts()
    why = ", ".join(f"{reason} ({count})" for reason, count in reasons.items())
    files = (
        f"{counted(len(manifest), 'file')}, all skipped — reasons: {why}"
        if len(manifest)
        else "no files"
    )
    raise SourceError(f"no images found in {source}: {files}")


def summarize(manifest: pd.DataFrame, labels: str | Path | pd.DataFrame | None = None) -> dict:
    """The counts ``metrics.json`` and ``01_download`` report; with ``labels`` (the labels file
    of the run) also ``labels_file``: see :func:`labels_facts`."""
    ok = manifest[manifest["status"] == "ok"]
    skipped = manifest[manifest["status"] != "ok"]
    facts = labels_facts(manifest, labels)
    return {
        **({"labels_file": facts} if facts else {}),
        "files": int(len(manifest)),
        "images": int(len(ok)),
        "skipped": int(len(skipped)),
        "duplicates": int(ok["duplicate_of"].notna().sum()),
        "labels": {str(k): int(v) for k, v in ok["label"].value_counts().sort_index().items()},
        **(
            {"splits": {str(k): int(v) for k, v in ok["split"].value_counts().sort_index().items()}}
            if "split" in ok
            else {}
        ),
        "skipped_files": [
            {"path": p, "reason": r}
            for p, r in zip(skipped["path"], skipped["reason"], strict=True)
        ],
    }


#: Unknown paths of a labels file listed one a line by :func:`summary_text` (all are in
#: ``metrics.json``).
SHOWN_UNKNOWN = 20


def summary_text(name: str, summary: dict) -> str:
    """What ``01_download`` prints of :func:`summarize`'s counts: one line, then, with a
    labels file, one on what it did and one per path it names that the dataset lacks."""
    lines = [
        f"{name}: {counted(summary['images'], 'image')} in "
        f"{counted(len(summary['labels']), 'label')}, "
        f"{counted(summary['skipped'], 'file')} skipped, "
        f"{counted(summary['duplicates'], 'exact duplicate')}"
    ]
    facts = summary.get("labels_file")
    if facts:
        unknown = facts["unknown_paths"]
        given = f"labels file {facts['file']}" if facts["file"] else "labels table"
        lines.append(
            f"{given}: labelled {counted(facts['applied'], 'file')}, the others keep their "
            f"folder's label; {counted(len(unknown), 'path')} not in the dataset"
        )
        lines += [f"unknown path (nothing changed): {p!r}" for p in unknown[:SHOWN_UNKNOWN]]
        if len(unknown) > SHOWN_UNKNOWN:
            lines.append(f"… and {len(unknown) - SHOWN_UNKNOWN} more (metrics.json lists all)")
    return "\n".join(lines)
