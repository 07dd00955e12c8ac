"""make bench's leak sets (scripts/bench_leaks.py): a source is de-duplicated before it is split,
so that a copy the source already holds (a brightness or contrast twin, a re-encode, a mirror)
cannot become a false train-test pair, while look-alikes of another colour stay."""

from __future__ import annotations

import io
import json
from pathlib import Path

from bench_leaks import TWIN_AT, without_twins
from PIL import Image, ImageEnhance, ImageOps

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
#: Blue, black and pink hearts, a red and a brown circle: one shape each, another colour.
ALIKE = [
    "smileys-emotion/1F499.webp",
    "smileys-emotion/1F5A4.webp",
    "smileys-emotion/1FA77.webp",
    "symbols/1F534.webp",
    "symbols/1F7E4.webp",
]


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_source_twins_dropped_look_alikes_of_another_colour_kept(tmp_path: Path) -> None:
    pool = [("x", Image.open(SAMPLE / name).convert("RGB")) for name in ALIKE]
    heart = pool[0][1]
    twins = [
        ImageEnhance.Brightness(heart).enhance(1.25),
        ImageEnhance.Contrast(heart).enhance(0.7),
        ImageOps.mirror(heart),
        _jpeg(heart, 20),
        heart.resize((128, 128)),
    ]
    pool += [("x", im) for im in twins]
    cache = tmp_path / "twins.json"
    kept, dropped = without_twins(pool, cache)
    assert kept == list(range(len(ALIKE))) and dropped == len(twins)
    # cached: the answer is read back for the same pool and criterion, not computed again
    assert json.loads(cache.read_text())["key"]["twin_at"] == TWIN_AT
    assert without_twins(pool, cache) == (kept, dropped)
    assert without_twins(pool[:-1], cache) == (kept, dropped - 1)  # another pool: recomputed
