"""The JupyterLab panel's Python side: the page's explorer as an anywidget.

Its messages are dispatched the way the widget's comm delivers them (``_handle_custom_msg``,
traitlet changes), on real files; the browser side is the page's own explorer.js, driven in a
real JupyterLab by ``test_jupyterlab.py``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_classes, png_bytes

from embedscope.decisions import read_decisions
from embedscope.explore import live as live_module
from embedscope.explore.live import LiveExplorer
from embedscope.explore.page import explorer_data
from embedscope.layout import Layout

EVIL = "<img src=x onerror=alert(1)>.png"


def _points(tmp_path: Path) -> tuple[pd.DataFrame, Path, np.ndarray]:
    root = make_classes(tmp_path / "imgs", per_class=3)
    (root / "red" / EVIL).write_bytes(png_bytes(colour=9))
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))
    rng = np.random.default_rng(0)
    pts = pd.DataFrame(rng.normal(size=(len(rels), 3)), columns=list("xyz"))
    pts["path"], pts["label"] = rels, [r.split("/")[0] for r in rels]
    pts["mislabel_score"] = np.linspace(0, 1, len(rels))
    nbrs = np.array([[(i + k) % len(rels) for k in range(1, 5)] for i in range(len(rels))])
    return pts, root, nbrs


class _Sent(list):
    """What the widget sent to its views: (content, buffers) per message."""


def _capture(live: LiveExplorer) -> _Sent:
    sent = _Sent()
    live.send = lambda content, buffers=None: sent.append((content, buffers or []))  # type: ignore[method-assign]
    return sent


def _received(sent: _Sent) -> tuple[dict, list[bytes]]:
    """The data and its parts as the panel reassembles them from the chunks."""
    (data,) = [c for c, _ in sent if c["kind"] == "data"]
    parts = [bytearray(n) for n in data["sizes"]]
    for content, buffers in sent:
        if content["kind"] == "chunk":
            body = bytes(buffers[0])
            parts[content["part"]][content["offset"] : content["offset"] + len(body)] = body
    return data["data"], [bytes(p) for p in parts]


def test_the_panel_gets_the_pages_data_in_chunks_and_sheets_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pts, root, nbrs = _points(tmp_path)
    monkeypatch.setattr(live_module, "CHUNK_BYTES", 64)  # many chunks, even on a tiny map
    live = LiveExplorer(pts, root, neighbors=nbrs)
    sent = _capture(live)
    live._handle_custom_msg({"kind": "hello"}, [])
    assert all(len(b[0]) <= 64 for c, b in sent if c["kind"] == "chunk")
    assert sum(c["kind"] == "chunk" for c, _ in sent) > 5
    data, parts = _received(sent)
    page = explorer_data(pts, root, neighbors=nbrs)  # what the page inlines
    assert parts[data["path"]["buf"]].decode().split("\0") == page["path"]
    x = np.frombuffer(parts[data["x"]["buf"]], "<f4")
    assert x.tobytes() == base64.b64decode(page["x"]["b64"])
    near = np.frombuffer(parts[data["neighbors"]["inline"]["buf"]], "<i4")
    assert near.tobytes() == base64.b64decode(page["neighbors"]["inline"]["b64"])
    assert data["classes"] == page["classes"] and data["rules"] == page["rules"]
    assert data["sheets"] == [None] * len(page["sheets"])  # not sent with the data
    assert len(json.dumps(data)) < 10_000  # the JSON message is small: arrays go as bytes
    sent.clear()
    live._handle_custom_msg({"kind": "sheet", "k": 0}, [])
    ((content, (body,)),) = sent
    assert content["mime"] == "image/webp" and bytes(body)[8:12] == b"WEBP"
    bundle, _ = live._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "needs a running kernel" in bundle["text/html"]  # shared: a line leads to the page


def test_the_kernel_holds_no_sheet_they_are_read_from_disk_when_asked(tmp_path: Path) -> None:
    """A million points' sheets are ~1 GB: the panel keeps only their files and reads one when
    the view asks for it; its private folder goes with the widget."""
    pts, root, nbrs = _points(tmp_path)
    live = LiveExplorer(pts, root, neighbors=nbrs)
    assert all(isinstance(src, Path) and src.is_file() for _, src in live._sheets)
    assert not any(isinstance(src, bytes) for _, src in live._sheets)
    sent = _capture(live)
    live._handle_custom_msg({"kind": "hello"}, [])
    data, parts = _received(sent)
    near = np.frombuffer(parts[data["neighbors"]["inline"]["buf"]], "<i4")  # not chunk files
    assert near.reshape(len(pts), -1)[0].tolist() == [1, 2, 3, 4]
    sheet = live._sheets[0][1]
    sheet.write_bytes(b"RIFF\0\0\0\0WEBP-on-disk-now")  # read at the request, not before
    sent.clear()
    live._handle_custom_msg({"kind": "sheet", "k": 0}, [])
    assert bytes(sent[0][1][0]) == b"RIFF\0\0\0\0WEBP-on-disk-now"
    sheet.unlink()  # gone meanwhile: an empty sheet, so the card never waits for ever
    live._handle_custom_msg({"kind": "sheet", "k": 0}, [])
    assert bytes(sent[1][1][0]) == b""
    folder = live.sheets_dir.parent
    live.close()
    assert not folder.exists()
    # a kernel killed with SIGKILL leaves its folder: the next panel removes it, not a live one's
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    orphan = Path(tempfile.gettempdir()) / f"{live_module.PRIVATE_PREFIX}{dead}-x1"
    (orphan / "live-files").mkdir(parents=True)
    alive = LiveExplorer(pts, root)
    assert not orphan.exists() and alive.sheets_dir.is_dir()
    alive.close()
    given = LiveExplorer(pts, root, sheets_dir=tmp_path / "sheets")  # a folder of the user's
    assert given._sheets[0][1].parent == tmp_path / "sheets" / "thumbs"
    given.close()
    assert given._sheets[0][1].is_file()  # the user's folder is kept


def test_decisions_reach_the_kept_file_merged_atomically(tmp_path: Path) -> None:
    pts, root, nbrs = _points(tmp_path)
    layout = Layout("t", tmp_path / "data", tmp_path / "reports")
    layout.data_dir.mkdir(parents=True)
    layout.decisions.write_text("path,label,tags\nelsewhere.png,,drop\nred/red_0.png,blue,\n")
    kept = read_decisions(layout.decisions).assign(was=["", "red"])
    live = LiveExplorer(pts, root, neighbors=nbrs, decisions=kept, layout=layout)
    assert live.decisions["path"].tolist() == ["elsewhere.png", "red/red_0.png"]
    # the panel's complete set (decisionsCsv): the kept one taken back, two new ones
    live.decisions_csv = (
        "path,label,tags\nblue/blue_0.png,green,\nelsewhere.png,,drop\n"
        f'red/red_0.png,,\n"red/{EVIL}",,drop;blurry\n'
    )
    assert "Written to" in live.saved
    assert layout.decisions.read_text() == (
        f"path,label,tags\nblue/blue_0.png,green,\nelsewhere.png,,drop\nred/{EVIL},,drop;blurry\n"
    )
    layout.decisions.write_text(  # another editor's run merged one meanwhile
        layout.decisions.read_text() + "green/green_1.png,,keep:dark\n"
    )
    live.decisions_csv = "path,label,tags\nelsewhere.png,,drop\n"  # undone: both taken back
    assert layout.decisions.read_text() == (
        "path,label,tags\nelsewhere.png,,drop\ngreen/green_1.png,,keep:dark\n"
    )
    assert list(layout.data_dir.glob("*.tmp")) == []
    live.decisions_csv = "path,label\nx,y\n"  # not the format: said, nothing written
    assert live.saved.startswith("decisions not written:")
    assert "green/green_1.png" in layout.decisions.read_text()


def test_selection_both_ways(tmp_path: Path) -> None:
    pts, root, nbrs = _points(tmp_path)
    live = LiveExplorer(pts, root, neighbors=nbrs)
    sent = _capture(live)
    rows = np.array([3, 1], dtype="<i4")
    live._handle_custom_msg({"kind": "selected"}, [memoryview(rows.tobytes())])
    assert live.selected.index.tolist() == [3, 1]
    live.select([5, 2, 99], scores={5: 0.9, 2: 0.5, 99: 0.1})
    assert np.frombuffer(bytes(sent[-1][1][0]), "<i4").tolist() == [5, 2]
    live._handle_custom_msg({"kind": "selected"}, [memoryview(np.array([2, 5], "<i4").tobytes())])
    assert live.selected["score"].tolist() == [0.9, 0.5]  # the panel's echo keeps the search's
    with pytest.raises(ValueError, match="no searcher"):
        live.search("a dog")
    out = live.save_decisions(tmp_path / "curated" / "decisions.csv")
    assert out.read_text() == "path,label,tags\n"


def test_the_panel_gives_large_cells_to_as_many_flagged_images_as_a_one_file_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The panel sends every sheet at start: it keeps a one-file page's cap of large cells,
    not the 20x larger one of a folder-mode page, which loads a sheet only when shown."""
    pts, root, _ = _points(tmp_path)
    pts["issues"] = "mislabel"  # every image flagged
    monkeypatch.setattr(live_module, "MAX_LARGE", 3)
    live = LiveExplorer(pts, root)
    sent = _capture(live)
    live._handle_custom_msg({"kind": "hello"}, [])
    data, parts = _received(sent)
    rows = np.frombuffer(parts[data["large"]["rows"]["buf"]], "<i4")
    assert len(rows) == 3
    page = explorer_data(pts, root, folder=tmp_path / "page-files")  # a folder-mode page
    assert len(base64.b64decode(page["large"]["rows"]["b64"])) == 4 * len(pts)
    live.close()
