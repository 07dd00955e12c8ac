"""The copy search's speed-ups change nothing it finds: the cheap first test of a pair
(``could_match``) passes every real copy (sample emoji edited with PIL the ways leaks are:
re-encoded, resized, cropped centred and off-centre, mirrored, brightness and contrast, also
as small grey pictures like Fashion-MNIST's), and the pair checks spread over processes give
exactly the one-process result."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageOps
from test_near_duplicates import SAMPLE, make_plain

import embedscope.findings.leaks
from embedscope.findings.leaks import (
    SCREEN_FROM,
    _Spread,
    _standard,
    _tiny_pictures,
    _weights,
    _window_scores,
    could_match,
    dataset_leaks,
    find_leaks,
    match,
    near_duplicates,
    small_copy,
)
from embedscope.images import load_rgb


def _encoded(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, share: float, corner: bool) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * share), round(h * share)
    x, y = (w - cw, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
    return im.crop((x, y, x + cw, y + ch))


#: The leaks bench's kinds at their hardest strengths.
EDITS = {
    "jpeg 20": lambda im: _encoded(im, 20),
    "resized 0.35": lambda im: im.resize((round(im.width * 0.35), round(im.height * 0.35))),
    "crop 0.85": lambda im: _crop(im, 0.85, False),
    "crop corner 0.85": lambda im: _crop(im, 0.85, True),
    "mirrored jpeg 50": lambda im: _encoded(ImageOps.mirror(im), 50),
    "brightness 0.75": lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    "brightness 1.25": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "contrast 0.7": lambda im: ImageEnhance.Contrast(im).enhance(0.7),
    "contrast 1.3": lambda im: ImageEnhance.Contrast(im).enhance(1.3),
}


def test_the_first_test_passes_every_real_copy_and_stops_look_alikes() -> None:
    folders = sorted(p for p in SAMPLE.iterdir() if p.is_dir())
    files = [sorted(f.glob("*.webp"))[k] for f in folders[:4] for k in (0, 5)]
    sources = [load_rgb(f) for f in files]
    # and as 28-pixel grey pictures, Fashion-MNIST's kind (its weak spot: few pixels)
    sources += [
        im.convert("L").resize((28, 28), Image.Resampling.BOX).convert("RGB") for im in sources[:4]
    ]
    checked = 0
    for source in sources:
        original = small_copy(source)
        for name, edit in EDITS.items():
            copy = small_copy(edit(source))
            if match(copy, original)[0] >= SCREEN_FROM:
                checked += 1
                assert could_match(copy, original) and could_match(original, copy), name
    assert checked >= 0.9 * len(sources) * len(EDITS)
    # different emoji (no copies): many stop at the first test (the 28-pixel ones all pass it)
    smalls = [small_copy(im) for im in sources[:8]]
    pairs = [(a, b) for k, a in enumerate(smalls) for b in smalls[k + 1 :]]
    assert sum(not could_match(a, b) for a, b in pairs) >= len(pairs) / 3
    assert could_match(smalls[-1], small_copy(sources[-1]))  # 28-pixel: never stopped


def _splits(root: Path, truth: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The plain set's rows, sources as train and copies as test, with the tiny pictures as
    vectors (no model needed: they propose the candidates as the kit's vectors would)."""
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.*"))
    rows = pd.DataFrame({"path": paths, "label": [p.split("/")[0] for p in paths]})
    rows["split"] = ["test" if p in truth else "train" for p in paths]
    plain, _ = _tiny_pictures(root, rows["path"].to_numpy(dtype=object), {}, {})
    return rows, plain + 1e-3 * np.random.default_rng(0).standard_normal(plain.shape).astype(
        np.float32
    )


def test_spread_over_processes_the_checks_give_the_one_process_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and a search starts one pool for its reads, its first checks and every round of
    the checks that follow (a pool's start is 1-4 s from a loaded notebook kernel)."""
    pools = []

    class Counted(embedscope.findings.leaks.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(embedscope.findings.leaks, "ProcessPoolExecutor", Counted)
    root = tmp_path / "plain"
    truth = make_plain(root)
    rows, vectors = _splits(root, truth)
    paths = rows["path"].to_numpy(dtype=object)
    alone: dict = {"smalls": {}, "tinies": {}}
    cached: dict = {"smalls": {}, "tinies": {}}  # read on 2 workers, then kept for every run below
    pictures = []
    for c, w in ((alone, 1), (cached, 2)):
        with _Spread(w) as spread:
            pictures.append(_tiny_pictures(root, paths, c["smalls"], c["tinies"], spread=spread))
    for a, b in zip(*pictures, strict=True):
        np.testing.assert_array_equal(a, b)
    for p in paths:
        np.testing.assert_array_equal(alone["smalls"][p][0], cached["smalls"][p][0])
    split = rows["split"]
    one = find_leaks(root, rows, vectors, split, workers=1, **alone)
    pools.clear()
    two = find_leaks(root, rows, vectors, split, workers=2, **cached)
    assert len(pools) == 1  # the thumbnails were read above: the checks' pool alone
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert one["leak"].sum() == len(truth)
    scopes = [""] * len(rows)
    one = near_duplicates(root, rows, vectors, scopes, workers=1, **cached)
    pools.clear()
    two = near_duplicates(root, rows, vectors, scopes, workers=2, **cached)
    assert len(pools) == 1
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert (one["near_duplicate_group"] >= 0).sum() >= len(truth)


def test_every_windows_correlation_comes_out_as_centring_each_window_gives() -> None:
    """The alignment's fast path (one product with the picture, its mirror and a column of
    ones; spreads from the sums) gives each window's correlation as centring and norming
    that window does, flat windows (a blank margin) at 0."""
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 255, (30, 26))
    grey[:12, :12] = 200.0  # a flat corner: windows inside it have no spread
    template = rng.uniform(0, 255, (9, 7))
    windows = np.lib.stride_tricks.sliding_window_view(grey, (9, 7)).reshape(-1, 63)
    pair = _standard(np.stack([template.ravel(), template[:, ::-1].ravel()]))
    expected = _standard(windows) @ pair.T
    got = _window_scores(grey, _weights(template), 9, 7)
    assert got.shape == expected.shape and (expected == 0).any()
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_a_rerun_takes_its_pair_checks_from_the_last_run_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pair checks kept across runs (data/<name>/analysis/pair-checks.parquet): a rerun
    matches no pair again and finds exactly the same; a renamed file keeps its verdicts (they
    follow the picture); under another code digest, or from a damaged file (set aside), every
    pair is matched again, with the same result."""
    matched = []
    real = embedscope.findings.leaks._checked

    def counted(*args):
        matched.append(1)
        return real(*args)

    monkeypatch.setattr(embedscope.findings.leaks, "_checked", counted)
    root = tmp_path / "plain"
    truth = make_plain(root)
    rows, vectors = _splits(root, truth)
    store = tmp_path / "data" / "analysis" / "pair-checks.parquet"

    def run(rows: pd.DataFrame) -> tuple[pd.DataFrame, int, dict]:
        matched.clear()
        found = dataset_leaks(root, rows, vectors, rows, checks=store)  # in one process
        return found, len(matched), found.attrs["search"]

    first, count, cost = run(rows)
    assert count == cost["pair_checks_matched"] > 0 and store.is_file()
    within = cost["pair_checks_reused"]  # a picture met twice (an exact copy) in one run
    assert first["leak"].sum() == len(truth)
    again, count, cost = run(rows)
    assert count == 0 and cost["pair_checks_matched"] == 0
    assert cost["pair_checks_reused"] > 0
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    # a copy renamed: its picture's verdicts stay
    old = next(iter(truth))
    (root / old).rename(root / old.replace("copy-", "renamed-"))
    renamed = rows.assign(path=rows["path"].str.replace(old, old.replace("copy-", "renamed-")))
    moved, count, _ = run(renamed)
    assert count == 0
    pd.testing.assert_frame_equal(
        moved.drop(columns=["path", "near_duplicate_of"]),
        first.drop(columns=["path", "near_duplicate_of"]),
        check_exact=True,
    )
    (root / old.replace("copy-", "renamed-")).rename(root / old)
    # other code: every pair again
    monkeypatch.setattr(embedscope.findings.leaks, "CHECKS_DIGEST", "other-code")
    fresh, count, cost = run(rows)
    assert count == cost["pair_checks_matched"] > 0 and cost["pair_checks_reused"] == within
    pd.testing.assert_frame_equal(first, fresh, check_exact=True)
    # a damaged file is set aside in one line, and the pairs matched again
    store.write_bytes(b"PAR1 not a table")
    damaged, count, _ = run(rows)
    assert count > 0 and list(store.parent.glob("pair-checks.parquet.damaged-*"))
    pd.testing.assert_frame_equal(first, damaged, check_exact=True)
