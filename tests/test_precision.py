"""Precision chosen by agreement: real models embedded both ways, the fidelity rule applied."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import vit_config
from PIL import Image

import embedscope.embed.calibrate
import embedscope.embed.precision
from embedscope.embed import embed, pool
from embedscope.embed.calibrate import calibration_limit, calibration_size
from embedscope.embed.precision import (
    CLEAR_AGREEMENT,
    KNN_LOSS_MARGIN,
    MIN_AGREEMENT,
    SCREEN_IMAGES,
    Z_95,
    PrecisionRace,
    agreement,
    calibration_needed,
    judge,
    paired_loss_upper,
)
from embedscope.images import load_rgb
from embedscope.ingest import UNLABELLED, ingest
from embedscope.knn import knn_vote, neighbors
from embedscope.layout import Layout, read_json
from embedscope.models import load_model
from embedscope.store import load_embeddings

SAMPLE = Path(__file__).parents[1] / "data" / "sample"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _check_always_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests judge fidelity on sets too small for a check to pay for itself (a first run
    keeps float32 there: tests/test_payoff.py), so here the check always runs."""
    monkeypatch.setattr(embedscope.embed.calibrate, "unpaid", lambda *args: None)


def _vit(path: Path, *, patch_bias: float = 0.0, **sizes) -> Path:
    """A random ViT saved with save_pretrained; ``patch_bias`` gives every patch token a large
    fixed offset (the "massive activations" real transformers grow), so what tells images
    apart is a small difference on top of it: float32 keeps it, bf16 and int8 round it away."""
    from transformers import ViTImageProcessorPil, ViTModel

    torch.manual_seed(0)
    net = ViTModel(vit_config(**sizes), add_pooling_layer=False)
    if patch_bias:
        signs = torch.randint(0, 2, (net.config.hidden_size,))
        with torch.no_grad():
            net.embeddings.patch_embeddings.projection.bias.copy_(patch_bias * (signs * 2 - 1))
    net.save_pretrained(path)
    side = net.config.image_size
    ViTImageProcessorPil(size={"height": side, "width": side}).save_pretrained(path)
    return path


def _near_twins(root: Path, n: int = 40) -> Path:
    """``n`` images that differ from one texture by a little noise, in two classes."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3))
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:02d}.png")
    return root


def _clusters(n: int = 1000, classes: int = 10, spread: float = 1.4):
    """``n`` vectors around ``classes`` random centres: kNN accuracy near 0.96."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    x = rng.normal(size=(classes, 32))[labels] + spread * rng.normal(size=(n, 32))
    return x.astype(np.float32), labels.astype(str), rng


def test_the_loss_bound_without_a_changed_vote_has_its_closed_form() -> None:
    """With no vote changed, Tango's score bound solves n d / (1 - d) = z^2."""
    for n in (128, 256, 1000):
        assert paired_loss_upper(0, 0, n) == pytest.approx(Z_95**2 / (n + Z_95**2), rel=1e-6)
    assert paired_loss_upper(0, 0, 128) > KNN_LOSS_MARGIN > paired_loss_upper(0, 0, 256)
    assert (
        paired_loss_upper(8, 0, 256) > paired_loss_upper(8, 8, 256) > paired_loss_upper(8, 16, 256)
    )


def test_the_whole_dataset_has_its_loss_seen_not_bounded() -> None:
    """A calibration that is all of the dataset knows the kNN accuracy lost: its bound is the
    change seen; a sample of it, even most of it, is bounded (its votes are not the
    dataset's: fewer, farther neighbours)."""
    x, labels, rng = _clusters(n=360)
    other = x + 0.25 * rng.normal(size=x.shape).astype(np.float32)
    whole = agreement(x, other, labels, population=360)
    lost, gained = whole["knn_losses"], whole["knn_gains"]
    assert lost + gained > 0
    assert whole["knn_loss_upper"] == pytest.approx((lost - gained) / 360, abs=1e-4)
    assert judge(whole)[1].endswith(f"(all 360 images) < {KNN_LOSS_MARGIN}") == judge(whole)[0]
    part = agreement(x[:300], other[:300], labels[:300], population=360)
    expected = paired_loss_upper(part["knn_losses"], part["knn_gains"], 300)
    assert part["knn_loss_upper"] == pytest.approx(expected, abs=1e-4)
    assert agreement(x, other, labels)["knn_loss_upper"] > whole["knn_loss_upper"]


def test_the_calibration_is_sized_from_the_votes_it_saw_flip() -> None:
    """10 of 256 votes flipped (d = 0.039): with no loss, votes lost net of gained over n
    images have a 97.5% quantile of 1.96 sqrt(d n); the least n at which Tango's bound of
    that passes 0.02 is 1,325, near the normal approximation (1.6449 + 1.96)^2 d / 0.02^2
    = 1269.1 (the caller caps it at :func:`calibration_limit`: all of a dataset up to 1,024
    images). With one vote flipped the normal one says 127, where a single vote lost still
    bounds the loss above 0.02 (it takes more images: 0.0173 at 256)."""
    figures = {
        "images": 256,
        "knn_scored": 256,
        "neighbour_agreement": 0.93,
        "knn_losses": 6,
        "knn_gains": 4,
        "population": None,
    }
    needed = calibration_needed(figures)
    assert needed == 1325
    d = 10 / 256
    for n, passes in ((needed, True), (needed - 1, False)):
        net = 1.96 * (d * n) ** 0.5
        bound = paired_loss_upper((d * n + net) / 2, (d * n - net) / 2, n)
        assert (bound < KNN_LOSS_MARGIN) == passes
    # half of them scored: d doubles, and as many images again unscored
    assert calibration_needed(figures | {"knn_scored": 128}) == 2 * 2564
    assert calibration_needed(figures | {"knn_losses": 1, "knn_gains": 0}) == 256  # enough
    assert paired_loss_upper(1, 0, 256) < KNN_LOSS_MARGIN < paired_loss_upper(1, 0, 255 // 2)
    assert calibration_needed(figures | {"knn_losses": 2, "knn_gains": 0}) == 358
    # more images cannot change these verdicts: neighbours already differ, or surely lossy
    assert calibration_needed(figures | {"neighbour_agreement": 0.8}) == 256
    assert calibration_needed(figures | {"knn_losses": 30, "knn_gains": 2}) == 256
    assert calibration_needed(figures | {"knn_scored": None}) == 256  # no labels to vote
    assert [calibration_size(n) for n in (100, 360, 4096, 100_000)] == [100, 256, 512, 1024]
    assert [calibration_limit(n) for n in (100, 360, 4096, 100_000)] == [100, 360, 1024, 8192]


def test_a_faithful_candidate_is_accepted() -> None:
    x, labels, rng = _clusters()
    figures = agreement(x, x + 0.09 * rng.normal(size=x.shape).astype(np.float32), labels)
    assert 0.9 <= figures["neighbour_agreement"] <= 0.95  # about bf16 MobileNetV2's 0.918
    kept, reason = judge(figures)
    assert kept and figures["knn_loss_upper"] < KNN_LOSS_MARGIN, reason


def test_a_candidate_that_loses_knn_votes_is_rejected_whatever_its_agreement() -> None:
    """30 of 1,000 images rightly voted under float32 come out beside another class's image:
    neighbour agreement stays near 0.92, kNN accuracy drops by 0.03."""
    x, labels, rng = _clusters()
    idx, sim = neighbors(x, 10)
    right = knn_vote(labels, idx, sim) == labels
    other = x.copy()
    for i in rng.choice(np.flatnonzero(right), 30, replace=False):
        j = rng.choice(np.flatnonzero(right & (labels != labels[i])))
        other[i] = x[j] + 0.05 * rng.normal(size=x.shape[1])
    figures = agreement(x, other, labels)
    assert 0.9 <= figures["neighbour_agreement"] <= 0.94
    assert -0.04 <= figures["knn_accuracy_delta"] <= -0.02
    kept, reason = judge(figures)
    assert not kept and reason.startswith("kNN accuracy may drop"), reason


def test_a_candidate_whose_neighbours_differ_is_rejected() -> None:
    x, labels, rng = _clusters()
    figures = agreement(x, x + 0.3 * rng.normal(size=x.shape).astype(np.float32), labels)
    assert figures["neighbour_agreement"] < MIN_AGREEMENT
    kept, reason = judge(figures)
    assert not kept and reason.startswith("neighbour agreement"), reason
    unlabelled = np.full(len(x), UNLABELLED)  # no votes to compare: agreement alone decides
    assert judge(agreement(x, x, unlabelled))[0]
    assert not judge(agreement(x, x + 0.3 * rng.normal(size=x.shape), unlabelled))[0]


@pytest.mark.parametrize("offered", [None, "bf16", "int8"])
def test_auto_falls_back_to_float32_when_the_candidate_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offered: str | None
) -> None:
    """``offered``: the candidate this machine's hardware offers (None), or one set for the
    test so both reduced paths are checked on every machine."""
    if offered:
        monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: [offered])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # judged on fidelity alone
    layout = Layout("twins", tmp_path / "data", tmp_path / "reports")
    ingest(str(_near_twins(tmp_path / "images")), layout)
    model = str(_vit(tmp_path / "vit", patch_bias=20.0))
    # a kit cache of its own: an earlier parameter's clear-cut verdict is not reused (below)
    monkeypatch.setenv("EMBEDSCOPE_CACHE", str(tmp_path / "cache"))
    facts = embed(layout, model, progress=False)
    check = facts["precision_check"]
    assert check["candidate"] in ("bf16", "int8") and check["images"] == 40
    assert check["neighbour_agreement"] < MIN_AGREEMENT and not check["kept"]
    assert check["reason"].startswith("neighbour agreement")
    assert facts["precision"] == "fp32"
    # the calibration batch's vectors were kept, and they are float32's
    forced = embed(layout, model, progress=False, precision="fp32")
    assert forced["model_key"] == facts["model_key"] and forced["from_cache"] == 40
    net, processor, _ = load_model(model)
    emb = load_embeddings(layout, model)
    px = processor(images=load_rgb(tmp_path / "images" / emb.rows["path"][5]), return_tensors="pt")
    with torch.inference_mode():
        alone = pool(net, px["pixel_values"], "cls")[0].numpy()
    np.testing.assert_allclose(emb.vectors[5], alone, rtol=1e-4, atol=1e-4)


def test_auto_keeps_a_candidate_the_analysis_cannot_tell_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small ViT on the sample's 360 images: bf16 neighbours and kNN accuracy match
    float32's, so auto keeps bf16 (set as the offer: emulated bf16 rounds the same way)."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # tiny: speed means nothing
    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    ingest(str(SAMPLE), layout)
    sizes = dict(hidden_size=64, intermediate_size=256, image_size=64, patch_size=16)
    model = str(_vit(tmp_path / "vit", **sizes))
    facts = embed(layout, model, progress=False, calibration_images=360)
    check = facts["precision_check"]
    assert check["kept"] and check["images"] == 360, check["reason"]
    assert check["neighbour_agreement"] >= MIN_AGREEMENT
    assert check["knn_loss_upper"] < KNN_LOSS_MARGIN
    assert facts["precision"] == "bf16" and facts["images"] == 360
    # the decision is remembered for this dataset, model and hardware: no second calibration
    again = embed(layout, model, progress=False)
    assert again["precision_check"] == check and again["from_cache"] == 360


def test_auto_grows_the_calibration_to_what_its_first_verdict_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first 256 of the sample's 360 images flip some kNN votes under bf16; sized for a
    loss margin of 0.001 the check needs far more images than the dataset holds, so it takes
    all 360: their loss is then seen, not bounded, and every calibration vector is kept at
    the chosen precision (nothing embedded twice)."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(
        embedscope.embed.calibrate,
        "calibration_needed",
        lambda figures: calibration_needed(figures, margin=0.001),
    )
    layout = Layout("sample", tmp_path / "data", tmp_path / "reports")
    ingest(str(SAMPLE), layout)
    sizes = dict(hidden_size=64, intermediate_size=256, image_size=64, patch_size=16)
    model = str(_vit(tmp_path / "vit", **sizes))
    facts = embed(layout, model, progress=False)
    check = facts["precision_check"]
    first = check["grown_from"]
    assert first["images"] == 256 and first["knn_losses"] + first["knn_gains"] > 0
    assert check["images"] == check["population"] == 360
    lost, gained = check["knn_losses"], check["knn_gains"]
    assert check["knn_loss_upper"] == pytest.approx((lost - gained) / 360, abs=1e-4)
    assert check["kept"] == judge(check)[0] and "all 360 images" in check["reason"]
    precision = "bf16" if check["kept"] else "fp32"
    forced = embed(layout, model, progress=False, precision=precision)
    assert forced["from_cache"] == 360


def test_a_clearly_lossy_candidate_stops_after_its_first_images() -> None:
    """Two candidates race float32 on 12 batches of 32: one adds a little noise (faithful),
    one returns unrelated vectors. The unrelated one is dropped once 128 images ran both
    ways (it is not run again) and its speed-up comes from the batches it ran; the faithful
    one runs to the end."""
    torch.manual_seed(0)
    centres = torch.randn(8, 48)
    batches = [centres[torch.arange(32) % 8] + 0.5 * torch.randn(32, 48) for _ in range(12)]
    runs = {"noisy": 0, "unrelated": 0}

    def noisy(pixels: torch.Tensor) -> torch.Tensor:
        runs["noisy"] += 1
        return pixels + 0.02 * torch.randn_like(pixels)

    def unrelated(pixels: torch.Tensor) -> torch.Tensor:
        runs["unrelated"] += 1
        return torch.randn_like(pixels)

    lows = {"noisy": noisy, "unrelated": unrelated}
    contest = PrecisionRace(torch.nn.Identity(), lows, CPU, race=(20, 24))
    for pixels in batches:
        contest(pixels)
    assert runs == {"noisy": 12, "unrelated": SCREEN_IMAGES // 32}
    assert contest.figures()["candidate_images"] == 12 * 32 + SCREEN_IMAGES  # the check's cost
    dropped = contest.unfaithful["unrelated"]
    assert dropped["images"] == SCREEN_IMAGES and dropped["neighbour_agreement"] < CLEAR_AGREEMENT
    assert set(contest.lows) == {"noisy"}
    measured = contest._measured()
    assert measured["batches"] == 11 and measured["speedups"]["unrelated"] > 0


def test_a_clearly_lossy_winner_leaves_the_next_fastest_candidate_not_float32() -> None:
    """The race decides after 7 batches of 16 (112 images), before the screen at 128: the
    fastest candidate returns unrelated vectors, the next is faithful and also surely faster
    than float32. Both run until the screen; it drops the lossy one, and the faithful one runs
    on, is judged on every image and kept (before, the race narrowed to the lossy winner, the
    screen dropped it and float32 was kept)."""
    import time

    torch.manual_seed(0)
    centres = torch.randn(8, 48)
    batches = [centres[torch.arange(16) % 8] + 0.5 * torch.randn(16, 48) for _ in range(14)]
    runs = {"lossy": 0, "faithful": 0}

    def slow(pixels: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return pixels

    def lossy(pixels: torch.Tensor) -> torch.Tensor:
        runs["lossy"] += 1
        time.sleep(0.002)
        return torch.randn_like(pixels)

    def faithful(pixels: torch.Tensor) -> torch.Tensor:
        runs["faithful"] += 1
        time.sleep(0.008)
        return pixels + 0.02 * torch.randn_like(pixels)

    contest = PrecisionRace(slow, {"lossy": lossy, "faithful": faithful}, CPU, race=(6, 24))
    reference = np.concatenate([contest(b).numpy() for b in batches])
    assert contest.result["batches"] == 6 and contest.result["speedups"]["lossy"] > 2
    assert runs == {"lossy": SCREEN_IMAGES // 16, "faithful": 14}
    assert set(contest.unfaithful) == {"lossy"} and set(contest.lows) == {"faithful"}
    labels = np.array([f"c{i % 8}" for i in range(len(reference))], dtype=object)
    check, vectors = contest.verdict(reference, labels)
    assert check["candidate"] == "faithful" and check["kept"] and len(vectors) == 14 * 16
    assert check["candidate_images"] == SCREEN_IMAGES + 14 * 16


def test_a_clear_cut_rejection_is_remembered_for_every_dataset_until_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ViT whose int8 forward scrambles its neighbours (agreement near 0.1): the first
    dataset's check stops after 128 of its 160 images and keeps float32; a second dataset
    neither races nor checks int8 (nothing is embedded twice); ``"again"`` checks anew."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["int8"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # fidelity decides
    monkeypatch.setenv("EMBEDSCOPE_CACHE", str(tmp_path / "cache"))  # no earlier verdicts
    model = str(_vit(tmp_path / "vit", patch_bias=20.0))
    checks = []
    for name, race in (("first", "remembered"), ("second", "remembered"), ("third", "again")):
        layout = Layout(name, tmp_path / "data", tmp_path / "reports")
        ingest(str(_near_twins(tmp_path / name, n=160)), layout)
        facts = embed(layout, model, progress=False, batch_size=16, precision_race=race)
        assert facts["precision"] == "fp32" and facts["images"] == 160
        checks.append(facts["precision_check"])
    first, second, third = checks
    for check in (first, third):
        assert check["images"] == SCREEN_IMAGES and check["clear_cut"] and not check["kept"]
        assert check["neighbour_agreement"] < CLEAR_AGREEMENT and "int8 dropped" in check["reason"]
    assert second["fidelity"] == "remembered" and "images" not in second
    assert "clearly lossy" in second["reason"] and not second["kept"]
    # the first dataset again: its own decision stands (no race, no check), its vectors read
    again = embed(Layout("first", tmp_path / "data", tmp_path / "reports"), model, progress=False)
    assert again["from_cache"] == 160 and again["precision_check"] == first


def test_every_candidate_dropped_at_the_screen_is_remembered_not_only_the_one_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 and int8 both race a ViT that both scramble: the screen drops both, the check
    reports one, and both clear-cut rejections are remembered, so a second dataset races and
    checks neither."""
    monkeypatch.setattr(
        embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16", "int8"]
    )
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # fidelity decides
    monkeypatch.setenv("EMBEDSCOPE_CACHE", str(tmp_path / "cache"))
    model = str(_vit(tmp_path / "vit", patch_bias=20.0))
    checks = []
    for name in ("first", "second"):
        layout = Layout(name, tmp_path / "data", tmp_path / "reports")
        ingest(str(_near_twins(tmp_path / name, n=160)), layout)
        checks.append(embed(layout, model, progress=False, batch_size=16)["precision_check"])
    memory = read_json(tmp_path / "cache" / "precision-fidelity.json", default={})
    assert sorted(k.split("|")[2] for k in memory) == ["bf16", "int8"]
    assert set(checks[0]["speedups"]) == {"bf16", "int8"} and checks[0]["clear_cut"]
    assert checks[1]["fidelity"] == "remembered" and "speedups" not in checks[1]


def _twins_and_vit(tmp_path: Path) -> tuple[Layout, str]:
    layout = Layout("twins", tmp_path / "data", tmp_path / "reports")
    ingest(str(_near_twins(tmp_path / "images")), layout)
    return layout, str(_vit(tmp_path / "vit"))


def test_the_race_keeps_the_fastest_candidate_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both reduced paths run side by side with float32 on the calibration batches; the one
    with the larger measured speed-up goes on (any speed-up counts here: the model is tiny)."""
    monkeypatch.setattr(
        embedscope.embed.calibrate, "candidates", lambda device, net: ["bf16", "int8"]
    )
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)
    layout, model = _twins_and_vit(tmp_path)
    check = embed(layout, model, progress=False)["precision_check"]
    speedups = check["speedups"]
    assert set(speedups) == {"bf16", "int8"} and all(v > 0 for v in speedups.values())
    assert check["candidate"] == max(speedups, key=speedups.get)
    assert check["images"] == 40 and "neighbour_agreement" in check


def test_a_candidate_that_is_not_faster_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A speed-up no hardware reaches: the candidate loses the race whatever its fidelity,
    the run is float32's and the calibration vectors it kept are float32's too."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["int8"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 1e9)
    layout, model = _twins_and_vit(tmp_path)
    facts = embed(layout, model, progress=False)
    check = facts["precision_check"]
    assert not check["kept"] and check["reason"].startswith("not faster here")
    assert check["candidate"] == "int8" and facts["precision"] == "fp32"
    forced = embed(layout, model, progress=False, precision="fp32")
    assert forced["model_key"] == facts["model_key"] and forced["from_cache"] == 40


def test_the_race_is_remembered_for_the_next_dataset_until_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speed-ups belong to the model and the hardware: a second dataset reuses them (and
    judges fidelity on its own images); ``precision_race="again"`` times them anew."""
    monkeypatch.setattr(embedscope.embed.calibrate, "candidates", lambda device, net: ["int8"])
    monkeypatch.setattr(embedscope.embed.precision, "MIN_SPEEDUP", 0.0)  # fidelity decides
    monkeypatch.setattr(embedscope.embed.calibrate, "MAX_REMEMBERED_LOAD", math.inf)  # any load
    images = _near_twins(tmp_path / "images")
    model = str(_vit(tmp_path / "vit"))
    checks = []
    for name, race in (("first", "remembered"), ("second", "remembered"), ("third", "again")):
        layout = Layout(name, tmp_path / "data", tmp_path / "reports")
        ingest(str(images), layout)
        facts = embed(layout, model, progress=False, batch_size=4, precision_race=race)
        checks.append(facts["precision_check"])
    first, second, third = checks
    assert first["race"] == "measured" and 6 <= first["race_batches"] <= 9  # 10 batches
    assert set(first["speedups"]) == set(first["speedup_low"]) == {"int8"}
    assert second["race"] == "remembered" and second["speedups"] == first["speedups"]
    assert second["images"] == 40 and "neighbour_agreement" in second  # judged on its images
    assert third["race"] == "measured" and 6 <= third["race_batches"] <= 9


def test_a_remembered_race_decides_before_any_batch_on_its_lower_bound() -> None:
    """The speed-up must surely reach 1.1x: a fast estimate with a low bound under it loses."""

    def race(low: float) -> PrecisionRace:
        result = {"speedups": {"int8": 1.6}, "speedup_low": {"int8": low}, "batches": 6}
        return PrecisionRace(
            torch.nn.Identity(), {"int8": torch.nn.Identity()}, CPU, remembered=result
        )

    won, lost = race(1.2), race(1.05)
    assert set(won.lows) == {"int8"} and won.figures()["race"] == "remembered"
    assert lost.lows == {} and lost.not_faster()["reason"].startswith("not faster here (1.6x")
    assert won.batches == 0 and not won.seconds["fp32"]  # nothing was timed
