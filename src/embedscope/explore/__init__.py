"""Stage 5 — explore: the map a person looks at, in four forms.

- ``page``: ``explorer.html``, one offline file that survives sharing (``explorer.js`` and
  ``explorer.css`` beside it are inlined at write time);
- ``live``: the page's explorer as an anywidget in JupyterLab (needs a kernel);
- ``dash``: the same map served as a Dash app (``make serve``);
- ``static``: a matplotlib plot and the older project's CSV, for viewers without JavaScript;
- ``atlas`` (thumbnails) and ``palette`` (class colours) are shared by all four.
"""

from embedscope.explore.atlas import (
    ATLAS_COLS,
    NO_THUMBNAIL,
    UNREADABLE,
    build_sheets,
    thumbnail_cell,
    thumbnail_jpeg,
    thumbnail_sheets,
)
from embedscope.explore.page import show_inline, write_explorer
from embedscope.explore.palette import MISSING_COLOUR, PALETTE, class_colour
from embedscope.explore.static import static_plot, write_embedding_csv

__all__ = [
    "ATLAS_COLS",
    "MISSING_COLOUR",
    "NO_THUMBNAIL",
    "PALETTE",
    "UNREADABLE",
    "build_sheets",
    "class_colour",
    "show_inline",
    "static_plot",
    "thumbnail_cell",
    "thumbnail_jpeg",
    "thumbnail_sheets",
    "write_embedding_csv",
    "write_explorer",
]
