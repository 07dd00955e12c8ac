"""Turning any image file a user can see into an RGB picture, one place for every stage."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps

#: Refuse images larger than this many pixels (decompression-bomb guard); configurable per call.
MAX_PIXELS = 178_956_970


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` as an RGB image: EXIF orientation applied, first frame of animations,
    transparency composited onto white, 1-bit/16-bit/CMYK/palette modes converted.

    Raises ``ValueError`` with a one-line reason for files that are not usable images.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise ValueError(
                        f"{im.width}x{im.height} pixels exceeds the limit of {max_pixels:,}"
                    )
                im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"decompression bomb: {exc}") from None
        except OSError as exc:
            raise ValueError(f"unreadable or corrupt image: {exc}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing alpha onto white (not black, as PIL would)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bit instead of clipping to white.
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype("uint8"), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")
