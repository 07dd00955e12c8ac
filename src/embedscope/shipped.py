"""Where the files the kit ships beside its code are: the notebooks and the sample.

They are kept once, at the repository's top (``notebooks/``, ``data/sample/``), where a checkout
(an editable install) reads them; the wheel's build step (``setup.py``) copies them into the
package, as ``embedscope/notebooks`` and ``embedscope/sample``, so that an installed kit runs
from any directory without a checkout.
"""

from __future__ import annotations

from pathlib import Path

#: The installed package's own folder (``src/embedscope`` in a checkout).
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped(name: str, checkout: str) -> Path:
    """The folder ``name`` inside the installed package when the wheel carried it there, else
    ``checkout`` (relative to the repository's top) of the checkout the package runs from."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parents[1] / checkout


#: The four pipeline notebooks and ``05_compare``.
NOTEBOOKS_DIR = shipped("notebooks", "notebooks")
#: The built-in sample (``--source sample``): 360 emoji in 9 class folders, with its licence.
SAMPLE_DIR = shipped("sample", "data/sample")
