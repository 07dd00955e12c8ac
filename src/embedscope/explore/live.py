"""Stage 5, live in JupyterLab: the page's own explorer as an anywidget.

``explorer.js`` + ``scatter.js`` (the code of ``explorer.html``, not a copy) run inside the
notebook in a shadow root holding the page's markup and style: the same renderer, selection,
gallery, review queue and keys. This module is glue:

- **Data.** The page's data (:func:`~embedscope.explore.page.explorer_data`) travels as binary
  parts, in custom messages of at most :data:`CHUNK_BYTES` each (never one 100 MB comm
  message); the thumbnail sheets follow one message per sheet, when the panel first needs one.
  The sheets are files (the page's folder mode, in :attr:`LiveExplorer.sheets_dir`), read from
  disk when asked for: the kernel never holds them (a million points' sheets are ~1 GB).
- **Keys.** Key events stop at the widget (``data-lm-suppress-shortcuts`` and no
  propagation), so the review keys a, k, d, t (and Esc, b, l) never reach JupyterLab's notebook
  shortcuts (``d d`` deletes a cell there).
- **Decisions.** After every change the panel sets ``decisions_csv`` (the page's complete
  ``decisions.csv`` text); Python merges it into the dataset's kept decisions,
  ``data/<name>/decisions.csv`` (:func:`~embedscope.decisions.merge_decisions`, under the
  lock ``make run-all`` takes), atomically, so the next run applies them. Without a ``layout``
  (or ``decisions_file``) they stay in the kernel: :attr:`LiveExplorer.decisions`,
  :meth:`LiveExplorer.save_decisions`.
- **Selection.** ``live.selected`` is the box/lasso selection as a DataFrame;
  :meth:`LiveExplorer.select`, :meth:`~LiveExplorer.search` and
  :meth:`~LiveExplorer.more_like_this` make one from Python.

Shared without a kernel, the output is a link to the report's ``explorer.html`` (``text/html``
beside the widget view), and ``04_explore`` shows that page inline above it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
import weakref
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anywidget
import numpy as np
import pandas as pd
import traitlets

from embedscope.decisions import (
    COLUMNS,
    DecisionLog,
    merge_into,
    own_labels,
    validate_decisions,
    write_decisions,
)
from embedscope.explore.page import (
    MAX_LARGE,
    explorer_data,
    explorer_markup,
    labels_of,
    place_neighbors,
    valid_neighbors,
)
from embedscope.layout import Layout, process_alive
from embedscope.search import Searcher
from embedscope.thumbs import CELL_SIZE, ThumbnailCache

#: Bytes per data message. 100,000 points of a 3D map with neighbours are ~7 MB of parts:
#: 7 messages, each far below any websocket limit, and the kernel stays responsive between them.
CHUNK_BYTES = 1 << 20
#: Name of a panel's private sheet folder in the temporary folder: the prefix, the kernel's pid.
PRIVATE_PREFIX = "embedscope-live-"
#: Height of the panel in the notebook, in CSS px.
HEIGHT = 760


def widget_module() -> str:
    """The widget's module: scatter.js and explorer.js as the page has them, then the glue that
    puts the page's markup in a shadow root, receives the data and passes the host object."""
    here = files("embedscope.explore")
    css = here.joinpath("explorer.css").read_text(encoding="utf-8")
    css = css.replace(":root", ":host").replace("html, body", ":host")  # the page's frame
    return "\n".join(
        [
            here.joinpath("scatter.js").read_text(encoding="utf-8"),
            here.joinpath("explorer.js").read_text(encoding="utf-8"),
            f"const CSS = {json.dumps(css)};",
            f"const MARKUP = {json.dumps(explorer_markup())};",
            here.joinpath("live.js").read_text(encoding="utf-8"),
        ]
    )


class LiveExplorer(anywidget.AnyWidget):
    """The explorer page inside JupyterLab, on the points of ``04_explore`` (x, y, optional
    z, label, path, scores, findings) and the dataset's kept ``decisions``
    (:func:`~embedscope.decisions.dataset_decisions`), where its decisions start. With
    ``layout`` its decisions land in ``data/<name>/decisions.csv`` as they are made."""

    _esm = widget_module()
    #: The panel's complete decisions (``decisions.csv`` text), set by the panel.
    decisions_csv = traitlets.Unicode("").tag(sync=True)
    #: What happened to the last decisions: where they were written, or why not.
    saved = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(HEIGHT).tag(sync=True)

    def __init__(
        self,
        points: pd.DataFrame,
        image_root: str | Path,
        *,
        neighbors: np.ndarray | None = None,
        thumbnails: ThumbnailCache | None = None,
        decisions: pd.DataFrame | None = None,
        layout: Layout | None = None,
        decisions_file: str | Path | None = None,
        searcher: Searcher | None = None,
        title: str = "embedscope",
        page: str | Path | None = None,
        thumb_size: int = CELL_SIZE,
        sheets_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.points = points.reset_index(drop=True)
        self.searcher = searcher
        self.decisions_file = (
            Path(decisions_file) if decisions_file else layout.decisions if layout else None
        )
        self.page = Path(page) if page else layout.explorer if layout else None
        near = valid_neighbors(neighbors, len(self.points))  # checked before the slow part
        #: Where the panel's thumbnail sheets lie (``thumbs/*.webp``, as beside a page): the
        #: folder given (one per panel), else a private temporary one, removed with the widget.
        self._remove_sheets: weakref.finalize | None = None
        if sheets_dir:
            self.sheets_dir = Path(sheets_dir)
        else:
            _sweep_private_folders()
            private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
            self.sheets_dir = private / "live-files"
            self._remove_sheets = weakref.finalize(self, shutil.rmtree, private, True)
        data = explorer_data(
            self.points,
            image_root,
            title=title,
            thumb_size=thumb_size,
            thumbnails=thumbnails,
            decisions=decisions,
            folder=self.sheets_dir,
            max_large=MAX_LARGE,  # every sheet is sent at start: a one-file page's cap
        )
        data["neighbors"] = place_neighbors(near, None)  # inline: they travel as one part
        data["folder"] = None
        self._data, self._parts, self._sheets = _binary(data, self.sheets_dir.parent)
        labelled = self.points.assign(label=labels_of(self.points))  # a map without labels
        log = DecisionLog(labels=own_labels(labelled, decisions), base=decisions)
        self._table = log.table
        self._written: set[str] = set()  # paths this panel wrote a decision for
        self._selected: list[int] = []
        self._scores: dict[int, float] = {}
        self.on_msg(self._on_msg)
        self.observe(self._on_decisions, names="decisions_csv")

    # ---- messages from the panel --------------------------------------------------------
    def _on_msg(self, _widget: Any, content: dict, buffers: list) -> None:
        kind = content.get("kind")
        if kind == "hello":  # a view opened: the data, then its parts in chunks
            self.send_data()
        elif kind == "sheet":
            k = int(content["k"])
            mime, src = self._sheets[k]
            try:  # from disk, when asked
                body = src.read_bytes() if isinstance(src, Path) else src
            except OSError:  # gone meanwhile: an empty sheet (no picture), never a hung card
                body = b""
            self.send({"kind": "sheet", "k": k, "mime": mime}, buffers=[body])
        elif kind == "selected":
            rows = np.frombuffer(bytes(buffers[0]) if buffers else b"", dtype="<i4")
            if set(rows.tolist()) != set(self._selected):  # else: select()'s own, kept in order
                self._selected, self._scores = [int(r) for r in rows], {}

    def send_data(self) -> list[int]:
        """Send the data and its parts (each in messages of at most :data:`CHUNK_BYTES`);
        returns the size of every message's buffer, for tests and the bench."""
        sizes = [len(p) for p in self._parts]
        self.send({"kind": "data", "data": self._data, "sizes": sizes})
        sent = []
        for k, part in enumerate(self._parts):
            view = memoryview(part)
            for at in range(0, len(part), CHUNK_BYTES):
                chunk = view[at : at + CHUNK_BYTES]
                self.send({"kind": "chunk", "part": k, "offset": at}, buffers=[chunk])
                sent.append(len(chunk))
        return sent

    def _on_decisions(self, change: dict) -> None:
        """The panel's complete decisions: kept here, and merged into the decisions file."""
        try:
            self._table = _parse(change["new"])
            self.saved = self._write(self._table) if self.decisions_file else ""
        except (OSError, ValueError) as exc:
            self.saved = f"decisions not written: {exc}"

    def _write(self, table: pd.DataFrame) -> str:
        """Merge ``table`` into the decisions file as a run's ``DECISIONS=`` is merged
        (:func:`~embedscope.decisions.merge_into`: locked, atomic). A decision this panel
        wrote and then took back (undo) goes in as an empty row, which takes it back."""
        path = self.decisions_file
        assert path is not None
        later = table
        gone = sorted(self._written - set(table["path"]))
        if gone:
            empty = pd.DataFrame({"path": gone, "label": "", "tags": ""})
            later = pd.concat([table, empty], ignore_index=True)
        merged = merge_into(path, later, point="decisions:write")
        decided = table["label"].ne("") | table["tags"].ne("")
        self._written = (self._written - set(gone)) | set(table["path"][decided])
        return f"Written to {path} ({len(merged)} kept): the next run applies them."

    # ---- the Python side ---------------------------------------------------------------------
    @property
    def decisions(self) -> pd.DataFrame:
        """The decisions so far: one row per image, columns path, label, tags (the panel's
        complete set, kept decisions included)."""
        return self._table.copy()

    def save_decisions(self, path: str | Path) -> Path:
        """Write the decisions (atomically) as a ``decisions.csv`` for ``make run-all``."""
        return write_decisions(self._table, path)

    @property
    def selected(self) -> pd.DataFrame:
        """The rows selected in the panel (box, lasso, "select by") or by :meth:`select`."""
        out = self.points.loc[self._selected]
        return out.assign(score=[self._scores[r] for r in self._selected]) if self._scores else out

    def select(self, rows, *, scores: dict[int, float] | None = None) -> None:
        """Make ``rows`` (point numbers) the panel's selection, shown in its gallery."""
        valid = [int(r) for r in rows if 0 <= int(r) < len(self.points)]
        self._selected = list(dict.fromkeys(valid))
        self._scores = {r: float(scores[r]) for r in self._selected} if scores else {}
        body = np.asarray(self._selected, dtype="<i4").tobytes()
        self.send({"kind": "select"}, buffers=[body])

    def clear_selection(self) -> None:
        self.select([])

    def search(self, text: str, k: int = 20) -> pd.DataFrame:
        """Rank every image by cosine to ``text`` (CLIP-family models); the top ``k`` become
        the selection, with their scores."""
        return self._found(*self._searcher().text(text, k))

    def more_like_this(self, item: int | str | Path | None = None, k: int = 20) -> pd.DataFrame:
        """The top ``k`` images by cosine to ``item`` (a row or an image file; default: the
        first selected row); they become the selection, with their scores."""
        item = (self._selected[0] if self._selected else None) if item is None else item
        if item is None:
            raise ValueError("select a point first")
        return self._found(*self._searcher().like(item, k))

    def _searcher(self) -> Searcher:
        if self.searcher is None:
            raise ValueError("no searcher: build LiveExplorer(..., searcher=Searcher...)")
        return self.searcher

    def _found(self, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        self.select(rows.tolist(), scores=dict(zip(rows.tolist(), scores.tolist(), strict=True)))
        return self.points.loc[rows.tolist()].assign(score=scores)

    def close(self) -> None:
        """Close the widget; its private sheet folder goes with it (else at kernel exit)."""
        remove = getattr(self, "_remove_sheets", None)  # None: __init__ failed before it
        if remove is not None:
            remove()
        super().close()

    # ---- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"LiveExplorer({len(self.points):,} points)"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, and for a notebook shared without its kernel (or a viewer without
        widgets: GitHub, nbviewer) a line that leads to the report's page."""
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # anywidget: (data, meta)
        data["text/html"] = offline_note(self.page, len(self.points))
        return bundle


def offline_note(page: Path | None, n: int) -> str:
    """The ``text/html`` beside the widget: where the same explorer lives as a page."""
    import html

    if page is None:
        return (
            f"<p>The live explorer of {n:,} points needs a running kernel: run the notebook "
            "in JupyterLab, or open the report's <code>explorer.html</code>.</p>"
        )
    rel = os.path.relpath(page) if page.is_absolute() else str(page)
    return (
        f"<p>The live explorer of {n:,} points needs a running kernel. The same explorer, "
        f'offline: <a href="{html.escape(rel)}" target="_blank">{html.escape(rel)}</a>.</p>'
    )


def _sweep_private_folders() -> list[Path]:
    """Remove the private sheet folders of kernels that no longer run (a kernel killed with
    SIGKILL never cleans up, and a million points' sheets are ~1 GB)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*-*"):
        pid = folder.name.removeprefix(PRIVATE_PREFIX).partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _binary(
    data: dict, base: Path | None = None
) -> tuple[dict, list[bytes], list[tuple[str, bytes | Path]]]:
    """The page's data with every typed array ({dtype, b64}) and the path list replaced by
    a binary part ({dtype, buf: k} / {buf: k}), and the thumbnail sheets taken out (sent when
    the panel asks): ``(mime, bytes)`` for a data URI, ``(mime, file)`` for a sheet file (its
    URL relative to ``base``), read only when asked for."""
    parts: list[bytes] = []

    def walk(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"dtype", "b64"}:
            parts.append(base64.b64decode(v["b64"]))
            return {"dtype": v["dtype"], "buf": len(parts) - 1}
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    sheets = []
    for uri in data["sheets"]:
        if not uri.startswith("data:"):
            sheets.append(("image/webp", Path(base or ".") / unquote(uri)))
            continue
        head, _, b64 = uri.partition(",")
        sheets.append((head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(b64)))
    rest = {k: v for k, v in data.items() if k not in ("sheets", "path")}
    out = walk(rest)
    parts.append("\0".join(data["path"]).encode("utf-8"))
    out["path"] = {"buf": len(parts) - 1}
    out["sheets"] = [None] * len(sheets)
    return out, parts, sheets


def _parse(text: str) -> pd.DataFrame:
    """The panel's ``decisions.csv`` text as a checked table (every cell text)."""
    if not text:
        return pd.DataFrame(columns=list(COLUMNS), dtype=str)
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return validate_decisions(table, source="the panel's decisions")
