"""Analyst tables carry their thumbnails inline and show file names as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import make_classes, png_bytes

from embedscope.tables import image_table


def test_image_table_has_inline_thumbnails_and_escaped_text(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "imgs", per_class=1)
    (root / "red" / "<b>x.png").write_bytes(png_bytes())
    (root / "red" / "gone.png").write_bytes(b"not an image")
    df = pd.DataFrame(
        {"path": ["red/red_0.png", "red/<b>x.png", "red/gone.png"], "score": [0.5, 0.25, 1.0]}
    )
    page = image_table(df, root)._repr_html_()
    assert page.count('src="data:image/jpeg;base64,') == 2
    assert "&lt;b&gt;x.png" in page and "<b>x" not in page
    assert "unreadable" in page and "0.250" in page
    with pytest.raises(ValueError, match="path"):
        image_table(df.drop(columns="path"), root)
