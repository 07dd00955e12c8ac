"""The embed stage on real (tiny, randomly initialised) transformers models loaded through
``from_pretrained``, and on the built-in model: pooling, cache, resume, precision."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import killed_at, make_classes, tiny_vit

from embedscope.embed import embed, pool, resolve_pooling
from embedscope.ingest import ingest
from embedscope.layout import Layout
from embedscope.models import load_model
from embedscope.store import load_embeddings, model_key


def _tiny_clip(path: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "vocab_size": 100,
        },
        vision_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> Layout:
    layout = Layout("tiny", tmp_path / "data", tmp_path / "reports")
    ingest(str(make_classes(tmp_path / "images", per_class=4)), layout)
    return layout


def test_vit_embeds_one_cls_vector_per_image_and_caches(dataset: Layout, tmp_path: Path) -> None:
    vit = str(tiny_vit(tmp_path / "vit"))
    facts = embed(dataset, vit, batch_size=5, progress=False, precision="fp32")
    assert facts["pooling"] == "cls" and facts["dim"] == 32 and facts["images"] == 12
    assert facts["embedded_now"] == 12 and facts["from_cache"] == 0
    emb = load_embeddings(dataset, vit)
    assert emb.vectors.shape == (12, 32) and emb.vectors.dtype == np.float32
    assert list(emb.rows.columns) == ["row", "path", "label", "sha256"]
    # the vector of a row equals embedding that image alone
    net, processor, _ = load_model(vit)
    from embedscope.images import load_rgb

    root = Path(dataset.data_root).parent / "images"
    with torch.inference_mode():
        px = processor(images=load_rgb(root / emb.rows["path"][3]), return_tensors="pt")
        alone = pool(net, px["pixel_values"], "cls")[0].numpy()
    np.testing.assert_allclose(emb.vectors[3], alone, rtol=1e-2, atol=1e-2)
    # re-running embeds nothing; adding images embeds only those
    again = embed(dataset, vit, progress=False, precision="fp32")
    assert again["embedded_now"] == 0 and again["from_cache"] == 12
    make_classes(root, per_class=6, seed=1)  # overwrites 12 files with new content, adds 6
    ingest(str(root), dataset)
    third = embed(dataset, vit, progress=False, precision="fp32")
    assert third["embedded_now"] == 18 and third["images"] == 18


def test_model_identity_keys_the_cache(tmp_path: Path) -> None:
    a = load_model(str(tiny_vit(tmp_path / "a", seed=0)))[2]
    b = load_model(str(tiny_vit(tmp_path / "b", seed=1)))[2]
    assert a != b
    assert model_key("x", a, "cls") != model_key("x", b, "cls")
    assert model_key("x", a, "cls") != model_key("x", a, "mean")


def test_clip_uses_projected_image_features(dataset: Layout, tmp_path: Path) -> None:
    clip = str(_tiny_clip(tmp_path / "clip"))
    facts = embed(dataset, clip, progress=False)
    assert facts["pooling"] == "image_features" and facts["dim"] == 12


def test_pooling_never_keeps_the_token_grid(tmp_path: Path) -> None:
    net, _, _ = load_model(str(tiny_vit(tmp_path / "vit")))
    x = torch.rand(2, 3, 32, 32)
    for how in ("cls", "mean", "pooler"):
        assert pool(net, x, how).shape == (2, 32)
    assert resolve_pooling(net) == "cls"
    from transformers import Dinov2Config, Dinov2Model

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    assert resolve_pooling(Dinov2Model(Dinov2Config(**small, image_size=28))) == "cls"
    with pytest.raises(ValueError, match="pooling must be one of"):
        resolve_pooling(net, "flatten")


def test_builtin_model_pools_1280_and_tries_bf16_only_where_native(builtin_cache: Path) -> None:
    from embedscope.embed.precision import candidates, cpu_has_bf16

    net, _, _ = load_model("mobilenet_v2")
    assert resolve_pooling(net) == "pooler"
    # a CNN has no linear layers worth quantising: bf16 where the CPU has it, else nothing
    assert candidates(torch.device("cpu"), net) == (["bf16"] if cpu_has_bf16() else [])
    with torch.inference_mode():
        assert pool(net, torch.rand(2, 3, 224, 224), "pooler").shape == (2, 1280)


@pytest.mark.faults
def test_a_file_broken_after_ingest_is_skipped_not_fatal(dataset: Layout, tmp_path: Path) -> None:
    victim = tmp_path / "images" / "red" / "red_0.png"
    victim.write_bytes(victim.read_bytes()[:40])  # truncated after the manifest said ok
    facts = embed(dataset, str(tiny_vit(tmp_path / "vit")), progress=False)
    assert facts["images"] == 11
    assert [s["path"] for s in facts["skipped_files"]] == ["red/red_0.png"]


_RUN = """
import sys
from embedscope.embed import embed
from embedscope.layout import Layout
embed(Layout("big", sys.argv[1], sys.argv[2]), "mobilenet_v2", batch_size=4, shard_size=8,
      num_workers=int(sys.argv[3]), progress=False, precision="fp32")
"""


@pytest.mark.faults
@pytest.mark.parametrize(
    "point, workers, shards",  # shards: complete before the kill, at least
    [
        ("shard:write@3", 0, 2),  # the run itself, with its third shard in a temp file
        # a DataLoader worker at its 21st image: batches (1, 1, 2, 2, then 4 each) go to the two
        # workers in turn, so the run gets about 40 images and no further; 3 shards are written
        ("embed:decode@21", 2, 3),
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, builtin_cache: Path, point: str, workers: int, shards: int
) -> None:
    images = make_classes(tmp_path / "big", per_class=40, size=96)
    data, reports = tmp_path / "data", tmp_path / "reports"
    layout = Layout("big", data, reports)
    ingest(str(images), layout)
    env = {**os.environ, "EMBEDSCOPE_CACHE": str(builtin_cache)}
    partial = killed_at(_RUN, data, reports, point, env, shards, workers)
    assert partial == shards if point.startswith("shard:") else shards <= partial <= 5
    stored = data / "big" / "embeddings"
    cached = 0
    for path in stored.rglob("shards/*.npz"):  # complete shards (the first batches are smaller)
        with np.load(path) as shard:
            cached += len(shard["sha256"])
    resumed = embed(layout, "mobilenet_v2", progress=False, precision="fp32")
    assert resumed["from_cache"] == cached >= 8 * partial and resumed["images"] == 120
    # no temporary litter, nothing set aside
    assert not list(stored.rglob("*.tmp*")) and not list(stored.rglob("*.damaged-*"))
    fresh = Layout("fresh", data, reports)
    ingest(str(images), fresh)
    embed(fresh, "mobilenet_v2", progress=False, precision="fp32")
    a, b = load_embeddings(layout), load_embeddings(fresh)
    assert list(a.rows["sha256"]) == list(b.rows["sha256"])
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-3)


def test_fast_pixels_reproduce_the_processors_or_step_aside(builtin_cache: Path) -> None:
    from PIL import Image
    from transformers import CLIPImageProcessor, ConvNextImageProcessor, ViTImageProcessor

    from embedscope.embed.pixels import FastPixels

    rng = np.random.default_rng(0)
    sizes = [(480, 640), (300, 301), (1000, 200), (224, 224), (256, 256), (33, 900)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    processors = [load_model("mobilenet_v2")[1], ViTImageProcessor(), CLIPImageProcessor()]
    for proc in processors:
        fast = FastPixels(proc)
        assert fast.matches(images), type(proc).__name__
        for im in images:
            ref = proc(images=im, return_tensors="pt")["pixel_values"][0]
            small = fast(im)  # what workers send: uint8 at the model's input geometry
            assert small.dtype == torch.uint8 and small.shape == (*ref.shape[1:], 3)
            assert torch.allclose(fast.to_model(small[None])[0], ref, atol=0.025)
    # ConvNeXt resizes by crop_pct first: a different recipe, so the processor keeps the job
    assert not FastPixels(ConvNextImageProcessor()).matches(images)
