"""Real image files made on the fly for tests: classes of distinct colours and every odd case."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


def make_classes(root: Path, per_class: int = 6, size: int = 48, seed: int = 0) -> Path:
    """Class folders of noisy solid-colour PNG/JPEG images: easy, known-answer classes."""
    rng = np.random.default_rng(seed)
    for label, rgb in COLOURS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255)
            im = Image.fromarray(arr.astype("uint8"))
            if i % 2:
                im.save(folder / f"{label}_{i}.jpg", quality=90)
            else:
                im.save(folder / f"{label}_{i}.png")
    return root


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (16, 16), colour=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()
