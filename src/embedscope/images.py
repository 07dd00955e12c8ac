"""Turning any image file a user can see into an RGB picture, one place for every stage."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images larger than this many pixels (decompression-bomb guard); configurable per call.
MAX_PIXELS = 178_956_970


class ImageError(ValueError):
    """A file that is not a usable image; the message is the one-line reason a person reads,
    ``header`` what the file's header said when it could be read."""

    def __init__(self, reason: str, header: dict | None = None) -> None:
        super().__init__(reason)
        self.header = header or {}


def decode(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, dict]:
    """Open and fully decode the first frame of ``path`` under the decompression-bomb guard.

    Returns the image and its header as stored (width, height, mode, format), read before any
    reduction. ``draft`` lets a JPEG decode straight at the smallest DCT scale still covering
    that size (several times faster on photos); other formats ignore it. Every failure is an
    :class:`ImageError` saying why, so callers report it instead of crashing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            raise ImageError("not an image (content is not a format Pillow can read)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"too many pixels (decompression-bomb limit {max_pixels:,})") from None
        except OSError as exc:
            raise ImageError(_corrupt(exc)) from None
        header = {"width": im.width, "height": im.height, "mode": im.mode, "format": im.format}
        try:
            if im.width * im.height > max_pixels:
                raise ImageError(
                    f"too many pixels ({im.width}x{im.height} > {max_pixels:,}, "
                    "decompression-bomb limit)",
                    header,
                )
            im.seek(0)
            if draft and im.format == "JPEG":
                im.draft("RGB", draft)
            im.load()
        except ImageError:
            im.close()
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            im.close()
            raise ImageError(f"too many pixels (limit {max_pixels:,})", header) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            im.close()
            raise ImageError(_corrupt(exc), header) from None
        return im, header


def _corrupt(exc: BaseException) -> str:
    reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return f"truncated or corrupt image data ({reason})"


def load_rgb(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Open ``path`` as an RGB image: EXIF orientation applied, first frame of animations,
    transparency composited onto white, 1-bit/16-bit/CMYK/palette modes converted.

    Raises :class:`ImageError` (a ``ValueError``) with a one-line reason for unusable files.
    """
    im, _ = decode(path, max_pixels=max_pixels, draft=draft)
    with im:
        return to_rgb(ImageOps.exif_transpose(im))


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
