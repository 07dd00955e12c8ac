"""Turning any image file a user can see into an RGB picture, one place for every stage."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import PIL
from PIL import Image, ImageOps, UnidentifiedImageError, features

#: Refuse images larger than this many pixels (decompression-bomb guard); configurable per call.
MAX_PIXELS = 178_956_970
#: Bump whenever decoding changes what it accepts (a fix, a new format, another conversion):
#: failures cached under an older :func:`decoder_identity` are then tried again.
DECODER_VERSION = 1
#: The codecs and image modules whose versions decide what Pillow can read.
_CODECS = ("jpg", "libjpeg_turbo", "jpg_2000", "zlib", "zlib_ng", "libtiff", "webp", "avif")
#: Start of the reason for a failure that says nothing lasting about the file (permissions, an
#: I/O error, memory, a bug): reported for this run, never cached, tried again by the next.
NOT_NOW = "not readable this run"


class ImageError(ValueError):
    """A file that is not a usable image; the message is the one-line reason a person reads,
    ``header`` what the file's header said when it could be read. ``lasting``: a property of
    the file's bytes (not an image, truncated, too many pixels, an unsupported mode), the same
    on every run with the same decoder, so worth caching."""

    lasting = True

    def __init__(self, reason: str, header: dict | None = None) -> None:
        super().__init__(reason)
        self.header = header or {}


class Unreadable(ImageError):
    """The file could not be read this time (no permission, an I/O error): nothing is known
    about its image, so it is not cached."""

    lasting = False


@functools.cache
def decoder_identity() -> str:
    """What decides which files decode: :data:`DECODER_VERSION`, Pillow's version and its
    codecs'. A cached failure holds only while this stays the same."""
    found = [f"embedscope-decoder {DECODER_VERSION}", f"Pillow {PIL.__version__}"]
    for name in _CODECS:
        try:
            version = features.version(name)
        except ValueError:  # a feature this Pillow does not know
            version = None
        found.append(f"{name} {version or '-'}")
    return "; ".join(found)


def skip_reason(exc: BaseException) -> str:
    """The one-line reason a file that raised ``exc`` is skipped: a lasting :class:`ImageError`
    says it; anything else (environmental, unexpected) starts with :data:`NOT_NOW`."""
    if isinstance(exc, ImageError) and exc.lasting:
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:  # never the path: reports are shared
        detail = exc.strerror
    else:
        detail = (str(exc).strip().splitlines() or [""])[0][:120] or type(exc).__name__
    return f"{NOT_NOW} ({detail}); tried again on the next run"


def lasting(reason: str) -> bool:
    """Whether a skip reason (:func:`skip_reason`) is a fact about the file worth caching."""
    return not reason.startswith(NOT_NOW)


def _read_error(exc: OSError, header: dict | None = None) -> ImageError:
    """An OSError met while decoding: the OS speaking (an errno: permissions, I/O) is
    :class:`Unreadable`; Pillow reports bad bytes as OSErrors without one."""
    if exc.errno is not None:
        return Unreadable(f"unreadable: {exc.strerror or type(exc).__name__}", header)
    return ImageError(_corrupt(exc), header)


def decode(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, dict]:
    """Open and fully decode the first frame of ``path`` under the decompression-bomb guard.

    Returns the image and its header as stored (width, height, mode, format), read before any
    reduction. ``draft`` lets a JPEG decode straight at the smallest DCT scale still covering
    that size (several times faster on photos); other formats ignore it. Every failure of the
    file is an :class:`ImageError` saying why (:class:`Unreadable` when the OS could not read
    it), so callers report it instead of crashing.
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
            raise _read_error(exc) from None
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
        except OSError as exc:
            im.close()
            raise _read_error(exc, header) from None
        except (SyntaxError, ValueError, EOFError) as exc:
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
    im, header = decode(path, max_pixels=max_pixels, draft=draft)
    with im:
        try:
            return to_rgb(ImageOps.exif_transpose(im))
        except OSError as exc:
            raise _read_error(exc, header) from None
        except (SyntaxError, ValueError, EOFError) as exc:  # EXIF or mode Pillow cannot turn
            reason = (str(exc).splitlines() or [""])[0][:120] or type(exc).__name__
            raise ImageError(f"unsupported image ({header['mode']}: {reason})", header) from None


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
