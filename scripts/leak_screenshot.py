"""docs/leak-review.png: a leak in the page's review queue, beside its train image, from a real
``run-all`` of a small train/test set built from the sample's emoji (three classes split 3:1,
with edited copies of train images planted in test/: mirrored, cropped off-centre, brightened,
re-saved as JPEG). Runs in a temporary folder; nothing of ``data/`` or ``reports/`` is touched.

    .venv/bin/python scripts/leak_screenshot.py [docs/leak-review.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from browser import CHROMIUM_ARGS, ensure_chromium
from PIL import ImageEnhance, ImageOps
from playwright.sync_api import sync_playwright

from embedscope.images import load_rgb
from embedscope.runs import run_all
from embedscope.shipped import SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("animals-nature", "food-drink", "travel-places")
#: The copies planted in test/: name -> the edit of a train image.
COPIES = {
    "mirrored": ImageOps.mirror,
    "cropped": lambda im: im.crop((10, 30, 10 + 218, 30 + 218)),  # 85 %, off-centre
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "jpeg": lambda im: im,
}


def leaky_dataset(root: Path) -> dict[str, str]:
    """train/<class>/ and test/<class>/ from the sample (3:1), plus one copy of each kind of a
    train image in test/; returns copy -> source (paths relative to ``root``)."""
    truth = {}
    for c, label in enumerate(CLASSES):
        files = sorted((SAMPLE_DIR / label).iterdir())[:24]
        for k, f in enumerate(files):
            split = "test" if k % 4 == 3 else "train"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            (root / split / label / f.name).write_bytes(f.read_bytes())
        for n, (kind, edit) in enumerate(COPIES.items()):
            if (n + c) % 3:  # four copies over the three classes
                continue
            source = f"train/{label}/{files[n * 4].name}"
            image = load_rgb(root / source)  # on white, as the kit sees it
            suffix = ".jpg" if kind == "jpeg" else ".png"
            dest = f"test/{label}/copy-{kind}{suffix}"
            edit(image).save(root / dest, **({"quality": 60} if kind == "jpeg" else {}))
            truth[dest] = source
    return truth


def screenshot(out: Path) -> Path:
    """Run ``run-all`` on :func:`leaky_dataset` and save the review queue on its first leak."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        leaky_dataset(tmp / "leaky")
        report = run_all(str(tmp / "leaky"), "leaky", dims=2, data_root=tmp / "data",
                         reports_root=tmp / "reports")  # fmt: skip
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(ensure_chromium()), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto((report / "explorer.html").as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            page.click("#review-open")
            page.select_option("#review-issue", value="leak")
            page.wait_for_selector("#review-picture .review-copy")
            page.screenshot(path=str(out))
            browser.close()
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "leak-review.png"
    print(f"[pictures] {screenshot(target)}")
