"""Real image files made on the fly for tests: classes of distinct colours and every odd case."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import CHROMIUM_ARGS, MISSING, find_chromium
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


def vit_config(**overrides):
    """A small ViT configuration (2 layers, 32 wide, 32 px images unless overridden)."""
    from transformers import ViTConfig

    sizes = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    return ViTConfig(**(sizes | overrides))


def tiny_vit(path: Path, seed: int = 0, pooling_layer: bool = False) -> Path:
    """A 2-layer, 32-wide ViT with random weights, saved the way a hub model is."""
    import torch
    from transformers import ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = vit_config()
    ViTModel(cfg, add_pooling_layer=pooling_layer).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


#: Files of :func:`make_messy` that ingest must skip (with ``max_pixels=1_000_000``); the
#: hidden ones are listed as "hidden file".
SKIPPED_IN_MESSY = {"odd/empty.jpg", "odd/notes.jpg", "odd/truncated.jpg", "odd/bomb.png",
                    ".hidden.png", "odd/._resource.png"}  # fmt: skip


def make_messy(root: Path) -> Path:
    """A folder mixing every case ingest must survive (bomb.png is 9 MP: skipped only under a
    lower ``max_pixels``)."""
    make_classes(root, per_class=3)
    odd = root / "odd"
    odd.mkdir()
    good_jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(good_jpeg, format="JPEG")
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "notes.jpg").write_text("this is not an image")
    (odd / "truncated.jpg").write_bytes(good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 2])
    (odd / "png_named.JPG").write_bytes(png_bytes(colour=1))
    for mode, colour in [
        ("L", 9),
        ("LA", (9, 128)),
        ("P", 3),
        ("RGBA", (255, 0, 0, 0)),
        ("CMYK", (0, 0, 0, 0)),
        ("1", 1),
        ("I;16", 60000),
    ]:
        ext = "jpg" if mode == "CMYK" else ("tif" if mode == "I;16" else "png")
        Image.new(mode, (8, 5), colour).save(odd / f"mode_{mode.replace(';', '')}.{ext}")
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(odd / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (1, 1), (1, 2, 3)).save(odd / "tiny.bmp")
    Image.new("RGB", (4000, 20), (5, 5, 5)).save(odd / "panorama.webp")
    exif_im = Image.new("RGB", (30, 10), (0, 0, 0))
    exif = exif_im.getexif()
    exif[0x0112] = 6  # rotate 90: stored 30x10, shown 10x30
    exif_im.save(odd / "exif.jpg", exif=exif)
    Image.new("RGB", (3000, 3000)).save(odd / "bomb.png")  # 9 MP: over a 1 MP limit below
    (odd / "naïve ünïcode 名前.png").write_bytes(png_bytes(colour=2))
    (odd / "<img src=x onerror=alert(1)>.png").write_bytes(png_bytes(colour=3))
    (odd / "dup of red.png").write_bytes((root / "red" / "red_0.png").read_bytes())
    (root / ".hidden.png").write_bytes(png_bytes())
    (odd / ".DS_Store").write_bytes(b"\0\0")
    (odd / "Thumbs.db").write_bytes(b"\0\0")
    (odd / "._resource.png").write_bytes(b"\0\0")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "top-level.png").write_bytes(png_bytes(colour=4))
    return root


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Content and mtime of every file under ``root``: to prove a stage modified nothing."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def launch_chromium(pw: Any) -> Any:
    """A headless Chromium from ``find_chromium`` (scripts/browser.py), driven by Playwright;
    a missing browser FAILS the test (browser tests never skip) with the sentence that fixes it."""
    path = find_chromium()
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    return pw.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)


class Gate:
    """A ``wait`` fault action (:mod:`embedscope.faults`): the processes armed with :meth:`arm`
    stop at the point, each adding its pid to the marker file, until :meth:`open`."""

    def __init__(self, release: Path) -> None:
        self.release, self.marker = release, Path(f"{release}.reached")

    def arm(self, point: str) -> str:
        return f"{point}=wait:{self.release}"

    def reached(self, proc: Any, count: int = 1) -> list[int]:
        """Block until ``count`` processes stand at the point; their pids. Fails if ``proc``
        (the stage, a ``subprocess.Popen``) ends first: it never got there."""
        poll_until(lambda: len(self.pids()) >= count, proc, f"{self.marker.name} reached")
        return self.pids()

    def pids(self) -> list[int]:
        text = self.marker.read_text() if self.marker.exists() else ""
        return [int(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def open(self) -> None:
        self.release.touch()


def poll_until(done: Any, proc: Any, what: str) -> None:
    """Block until ``done()`` holds, checked every 10 ms (a state the stage makes, never a
    guess of its speed); fails if ``proc`` ends first, or after 5 minutes."""
    import time

    deadline = time.monotonic() + 300
    while not done():
        assert proc.poll() is None, f"exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"not {what} in 5 minutes"
        time.sleep(0.01)


def killed_at(
    script: str, data: Path, reports: Path, point: str, env: dict, shards: int, *args: object
) -> int:
    """Run ``script`` (an embed run on dataset "big" under ``data``, given ``data``, ``reports``
    and ``args``) in a new process group, armed to stop at fault ``point``; once a process of
    the run (the driver, a DataLoader worker, a Ray actor) stands there and ``shards`` shards
    are complete, SIGKILL the group (the run and its workers). Returns how many shards were
    complete then."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from embedscope.faults import ENV

    gate = Gate(data.parent / "gate")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(data), str(reports), *map(str, args)],
        env=env | {ENV: gate.arm(point)},
        start_new_session=True,
    )
    embeddings = data / "big" / "embeddings"
    try:
        gate.reached(proc)
        poll_until(lambda: len(list(embeddings.rglob("shards/*.npz"))) >= shards, proc, "shards")
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of the group left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        gate.open()  # a process outside the group (a Ray actor) stopped there goes on
    assert not list(embeddings.rglob("vectors.npy")), "killed before its end"
    return len(list(embeddings.rglob("shards/*.npz")))


#: The live panel's element in a JupyterLab or Notebook 7 output.
PANEL_JS = "document.querySelector('.jp-OutputArea .embedscope-live')"
#: [page x, page y, row] of the first point the live panel draws where a hover finds it.
DRAWN_POINT_JS = f"""() => {{ const el = {PANEL_JS}, api = el.embedscope;
    const r = el.shadowRoot.getElementById('plot').getBoundingClientRect();
    const xy = api.screenPositions();
    for (let i = 0; i < xy.length / 2; i++) {{ const j = api.pointAt(xy[2 * i], xy[2 * i + 1]);
      if (j === i) return [r.left + xy[2 * i], r.top + xy[2 * i + 1], i]; }} }}"""
#: Screen position, trace name and row (customdata) of a 2D plotly trace's first point, in the
#: plot found by the CSS selector (plotly's SVG scatter: every point has a known position).
FIRST_POINT_JS = """(sel) => { const gd = document.querySelector(sel);
    const L = gd._fullLayout, r = gd.getBoundingClientRect(), t = gd._fullData[0];
    return [r.left + L.xaxis._offset + L.xaxis.l2p(t.x[0]),
            r.top + L.yaxis._offset + L.yaxis.l2p(t.y[0]), t.customdata[0], t.name]; }"""
#: [row, trace name] of every point of that plot within ``r`` px of page position (x, y): the
#: points a hover there may name (identical embeddings share a position).
POINTS_NEAR_JS = """([sel, x, y, r]) => { const gd = document.querySelector(sel);
    const L = gd._fullLayout, b = gd.getBoundingClientRect(), out = [];
    for (const t of gd._fullData) { if (t.visible !== true) continue;
      for (let i = 0; i < t.x.length; i++) {
        const px = b.left + L.xaxis._offset + L.xaxis.l2p(t.x[i]);
        const py = b.top + L.yaxis._offset + L.yaxis.l2p(t.y[i]);
        if (Math.hypot(px - x, py - y) <= r) out.push([t.customdata[i], t.name]); } }
    return out; }"""


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's real BPE vocabulary and merges, from the ``open-clip-torch`` wheel (installed
    ``--no-deps`` by ``make test``; never imported), numbered the way OpenAI's
    ``SimpleTokenizer`` (and so every Hugging Face CLIP checkpoint) numbers them."""
    import gzip
    import importlib.util

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the test vocabulary is missing: make test installs it (open-clip-torch)")
    bpe = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def tiny_clip(path: Path, seed: int = 0) -> Path:
    """A 1-layer CLIP with random weights and CLIP's real tokenizer (49,408 tokens), saved the
    way a hub model is: model, image processor and tokenizer in one folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    vocab, merges = clip_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    torch.manual_seed(seed)
    width = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    width |= {"intermediate_size": 32}
    text = width | {"vocab_size": len(tokenizer), "bos_token_id": 49406, "eos_token_id": 49407}
    config = CLIPConfig(
        text_config=text,
        vision_config=width | {"image_size": 32, "patch_size": 8},
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def dash_call(client, outputs: list[str], inputs: dict, state: dict | None = None, changed=None):
    """POST one callback to Dash's endpoint, as the browser does; ``outputs`` are
    ``"id.prop"``, ``inputs`` and ``state`` map ``"id.prop"`` to values in the callback's
    order; ``changed`` (default: the first input) is the one that fired. Returns the
    response's ``{id: {prop: value}}``."""

    def spec(key: str, value=None) -> dict:
        ident, prop = key.rsplit(".", 1)
        return {"id": ident, "property": prop, "value": value}

    many = len(outputs) > 1
    payload = {
        "output": f"..{'...'.join(outputs)}.." if many else outputs[0],
        "outputs": [spec(o) for o in outputs] if many else spec(outputs[0]),
        "inputs": [spec(k, v) for k, v in inputs.items()],
        "state": [spec(k, v) for k, v in (state or {}).items()],
        "changedPropIds": [changed or next(iter(inputs))],
    }
    reply = client.post("/_dash-update-component", json=payload)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:500]
    return reply.get_json()["response"]


def plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly >= 6's typed array {dtype, bdata}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def tiny_notebook(path: Path, code: str) -> Path:
    """A notebook of a parameters cell (``x = 1``) and ``code``, for the kernel's own tests."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nb.cells.append(nbformat.v4.new_code_cell(code))
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path
