"""Analyst tables with thumbnails, for the notebooks: a row per image, its picture first.

The thumbnails are inline ``data:`` JPEGs, so the tables survive sharing the executed notebook
and its HTML export; text cells are escaped, so file names show as text.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from embedscope.explore.atlas import thumbnail_jpeg
from embedscope.layout import os_path


class ImageTable:
    """A DataFrame shown with a thumbnail column in Jupyter (``_repr_html_``)."""

    def __init__(self, df: pd.DataFrame, image_root: str | Path, *, size: int = 64) -> None:
        self.df, self.root, self.size = df.reset_index(drop=True), Path(image_root), size

    def _img(self, rel: str) -> str:
        jpeg = thumbnail_jpeg(os_path(self.root, rel), self.size, quality=80)
        if jpeg is None:
            return '<span style="color:#888">unreadable</span>'
        data = base64.b64encode(jpeg).decode()
        return f'<img src="data:image/jpeg;base64,{data}" width="{self.size}" alt="">'

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["image", *self.df.columns])
        rows = []
        for _, row in self.df.iterrows():
            cells = [self._img(str(row["path"]))]
            cells += [html.escape(_fmt(v)) for v in row.to_numpy()]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def __repr__(self) -> str:
        return repr(self.df)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def image_table(df: pd.DataFrame, image_root: str | Path, *, size: int = 64) -> ImageTable:
    """Show ``df`` (which needs a ``path`` column relative to ``image_root``) with thumbnails."""
    if "path" not in df.columns:
        raise ValueError("image_table needs a 'path' column")
    return ImageTable(df, image_root, size=size)


class ImageSections:
    """Several :class:`ImageTable` under their headings, shown as one output."""

    def __init__(self, tables: dict[str, ImageTable]) -> None:
        self.tables = tables

    def _repr_html_(self) -> str:
        return (
            "".join(
                f"<h4>{html.escape(title)}</h4>{table._repr_html_()}"
                for title, table in self.tables.items()
            )
            or "<p>nothing to show</p>"
        )

    def __repr__(self) -> str:
        return "\n\n".join(f"{title}\n{table!r}" for title, table in self.tables.items())


def image_sections(
    frames: dict[str, pd.DataFrame], image_root: str | Path, *, size: int = 64
) -> ImageSections:
    """One :func:`image_table` per heading, e.g. the top images of each finding type."""
    return ImageSections({t: image_table(df, image_root, size=size) for t, df in frames.items()})
