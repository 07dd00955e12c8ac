"""Counts in the sentences people read: "1 file", "2 files", never "1 files"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the plural unless ``n`` is one (``plural``: an irregular form,
    default ``noun + "s"``); thousands get separators."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
