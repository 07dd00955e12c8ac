"""Shared fixtures: every test uses its own model cache, never the user's ~/.cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("embedscope-cache")
    old = os.environ.get("EMBEDSCOPE_CACHE")
    os.environ["EMBEDSCOPE_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: fail fast
    yield cache
    if old is None:
        os.environ.pop("EMBEDSCOPE_CACHE", None)
    else:
        os.environ["EMBEDSCOPE_CACHE"] = old


@pytest.fixture(scope="session")
def builtin_cache(_private_cache: Path) -> Path:
    """The cache with the built-in model converted (once per test session)."""
    from embedscope.models import builtin_model_dir

    builtin_model_dir()
    return _private_cache
