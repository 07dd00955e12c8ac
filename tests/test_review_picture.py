"""The review picture (issue 29, part 3): the page carries a larger cell, decoded from the
original, for its flagged rows only, so blur and fine detail can be judged in the review queue
(and so in the JupyterLab panel, which runs the same script on the same data)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
from PIL import Image

from embedscope.explore.atlas import LARGE_CELL, LARGE_COLS
from embedscope.explore.page import explorer_data
from embedscope.thumbs import thumbnail_cell


def _detail(a: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels: high for sharp fine detail."""
    g = a.astype(float).mean(axis=2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def _images(root: Path, n: int = 12) -> pd.DataFrame:
    """``n`` 400-px checkerboards of 8-px squares (fine detail a 64-px cell cannot hold); rows 3, 7
    and 10 (those there are) are flagged."""
    rels = []
    for i in range(n):
        board = ((np.indices((400, 400)) // 8).sum(axis=0) % 2 * 255).astype("uint8")
        im = np.repeat((board * 0.8 + 4 * i).astype("uint8")[:, :, None], 3, axis=2)  # grey
        rel = f"c{i % 2}/img_{i}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / rel)
        rels.append(rel)
    issues = ["" for _ in rels]
    for r in (3, 7, 10)[: (n > 3) + (n > 7) + (n > 10)]:
        issues[r] = "blurry"
    return pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.zeros(n), "path": rels,
                         "label": [r[:2] for r in rels], "issues": issues,
                         "reason": ["edges soft" if t else "" for t in issues],
                         "review_priority": [float(i) for i in range(n)]})  # fmt: skip


def _cell(uri: str, k: int, size: int, cols: int) -> np.ndarray:
    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2]))))
    r, c = divmod(k, cols)
    return sheet[r * size : (r + 1) * size, c * size : (c + 1) * size]


def test_flagged_rows_only_get_a_sharp_large_cell(tmp_path: Path) -> None:
    points = _images(tmp_path)
    data = explorer_data(points, tmp_path)
    large = data["large"]
    rows = np.frombuffer(base64.b64decode(large["rows"]["b64"]), "<i4").tolist()
    cells = np.frombuffer(base64.b64decode(large["cells"]["b64"]), "<i4").tolist()
    assert rows == data["review"]["rows"] == [10, 7, 3]  # the queue's order, flagged only
    assert cells == [0, 1, 2] and (large["cell"], large["cols"]) == (LARGE_CELL, LARGE_COLS)
    assert large["first"] == 1 and len(data["sheets"]) == 2  # one small sheet, then one large
    for k, row in enumerate(rows):
        big = _cell(data["sheets"][large["first"]], k, LARGE_CELL, LARGE_COLS)
        made = np.asarray(thumbnail_cell(tmp_path / points["path"][row], LARGE_CELL))
        assert np.abs(big.astype(float) - made).mean() < 12  # the original's picture
        small = _cell(data["sheets"][0], int(data_thumb(data)[row]), 64, data["cols"])
        up = np.asarray(Image.fromarray(small).resize((LARGE_CELL,) * 2, Image.BICUBIC))
        assert _detail(big) > 2 * _detail(up), "the large cell keeps the fine detail"


def data_thumb(data: dict) -> list[int]:
    return np.frombuffer(base64.b64decode(data["thumb"]["b64"]), f"<{data['thumb']['dtype']}")


def test_no_flags_no_large_cells_and_folder_mode_writes_files(tmp_path: Path) -> None:
    points = _images(tmp_path, n=6)
    plain = explorer_data(points.assign(issues=""), tmp_path)
    assert plain["large"] is None and len(plain["sheets"]) == 1
    folder = tmp_path / "explorer-files"
    data = explorer_data(points, tmp_path, folder=folder, stem="ab12-")
    (name,) = data["sheets"][data["large"]["first"] :]
    assert name == "explorer-files/thumbs/ab12-large-0.webp"
    with Image.open(tmp_path / unquote(name)) as sheet:
        assert sheet.size == (LARGE_COLS * LARGE_CELL, LARGE_CELL)  # one row of cells
    # an original that is gone: no large cell (the page shows the small one), no failure
    (tmp_path / points["path"][3]).unlink()
    gone = explorer_data(points, tmp_path)
    assert np.frombuffer(base64.b64decode(gone["large"]["cells"]["b64"]), "<i4").tolist() == [-2]


def test_the_live_panel_gets_the_large_cells_as_binary_parts_and_sheets(tmp_path: Path) -> None:
    """The JupyterLab panel runs the page's script on the same data: the large cells' rows
    travel as binary parts and their sheets are sent on request like the small ones."""
    from embedscope.explore.live import _binary

    data = explorer_data(_images(tmp_path), tmp_path)
    head, parts, sheets = _binary(data)
    rows = head["large"]["rows"]
    assert rows["dtype"] == "i4" and np.frombuffer(parts[rows["buf"]], "<i4").tolist() == [10, 7, 3]
    assert len(sheets) == len(data["sheets"]) == 2 and sheets[1][0] == "image/webp"
