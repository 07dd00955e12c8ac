"""Splits and leaks: split folders and columns, held-out copies of train images found through
ingest, embed (a tiny real model), the leak search and the findings; honest split numbers; a
dataset without splits unchanged."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_vit
from PIL import Image, ImageEnhance, ImageOps

from embedscope.analyse import analyse
from embedscope.embed import embed
from embedscope.findings import findings_table, issue_counts
from embedscope.findings.leaks import (
    THRESHOLD,
    dataset_leaks,
    find_leaks,
    leak_pairs,
    match,
    near_duplicates,
    small_copy,
    split_rank,
    write_leaks,
)
from embedscope.images import load_rgb
from embedscope.ingest import SourceError, build_manifest, check_split, ingest, split_name, split_of
from embedscope.layout import Layout
from embedscope.splits import split_report
from embedscope.store import load_embeddings
from embedscope.vocabulary import UNLABELLED

CLASSES = {"red": (200, 40, 40), "blue": (40, 60, 210)}
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def picture(seed: int, tint: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A distinct picture: smooth random shapes in a class's tint (look-alikes, not copies)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (6, 6))
    shade = (
        np.asarray(
            Image.fromarray((coarse * 255).astype("uint8")).resize(
                (size, size), Image.Resampling.BICUBIC
            ),
            np.float32,
        )
        / 255
    )
    arr = np.clip(np.array(tint)[None, None, :] * (0.4 + shade[..., None]), 0, 255)
    return Image.fromarray(arr.astype("uint8"))


#: The copies planted in test/, each of train/<class>/<class>_<n>.png: kind -> the edit.
COPIES = {
    "mirrored": lambda im: ImageOps.mirror(im),
    "cropped": lambda im: im.crop((0, 5, 54, 59)),  # 85 % of the side, off-centre
    "brightness/contrast": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "re-encoded": None,  # JPEG quality 35
}


def test_a_lively_picture_squashed_onto_a_nearly_flat_one_is_no_copy() -> None:
    """The sample's pale exclamation mark: any lively emoji mapped onto it left a residual small
    next to the lively one's spread, so a standing person, a chess pawn and a plug matched it
    at 0.67-0.71 (a false leak on the bench's emoji half); a brightened copy of the mark, nearly
    white, stays a copy."""
    mark = load_rgb(SAMPLE / "symbols" / "2755.webp")
    for name in ("people-body/1F9CD-200D-2642-FE0F", "activities/265F", "objects/1F50C"):
        lively = small_copy(load_rgb(SAMPLE / f"{name}.webp"))
        assert match(lively, small_copy(mark))[0] < 0.5, name
    brighter = ImageEnhance.Brightness(mark).enhance(1.25)
    assert match(small_copy(brighter), small_copy(mark))[0] >= THRESHOLD


def test_a_blank_frame_is_no_source_of_every_picture_yet_a_copy_of_a_blank_frame(
    tmp_path: Path,
) -> None:
    """A map onto a blank image explains it whatever the other shows: a black frame and a
    frame of JPEG-like noise in train were each the "source" of every held-out emoji they were
    proposed for (at 0.89-1.0), and took a real copy's leak from its true source. Now a
    picture and a blank frame are no copies either way round, a copy still finds its source
    with the blank frames among its candidates, and a blank frame of the same colour in test is
    a copy of the blank one in train (of another colour it is not). A single pixel or a strip
    two pixels high is no copy of anything (a red pixel matched a patch of any emoji at 1.0)."""
    rng = np.random.default_rng(3)
    noise = np.clip(200 + rng.normal(0, 8, (64, 64, 3)), 0, 255).astype(np.uint8)
    blanks = {
        "black.png": Image.new("RGB", (64, 64)),
        "noise.png": Image.fromarray(noise),
    }
    emoji = sorted((SAMPLE / "smileys-emotion").glob("*.webp"))[:6]
    for blank in blanks.values():
        for p in emoji:
            lively = small_copy(load_rgb(p))
            assert match(lively, small_copy(blank))[0] < 0.5, p.name
            assert match(small_copy(blank), lively)[0] < 0.5, p.name
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    rows = []
    for name, blank in blanks.items():
        blank.save(tmp_path / "train" / name)
        rows.append((f"train/{name}", "train"))
    for p in emoji:
        load_rgb(p).save(tmp_path / "train" / f"{p.stem}.png")
        rows.append((f"train/{p.stem}.png", "train"))
    ImageOps.mirror(load_rgb(emoji[0])).save(tmp_path / "test" / "mirrored.png")
    load_rgb(emoji[1]).save(tmp_path / "test" / "resaved.jpg", quality=40)
    Image.new("RGB", (40, 40), (1, 2, 0)).save(tmp_path / "test" / "black.jpg")
    Image.new("RGB", (64, 64), (120, 40, 40)).save(tmp_path / "test" / "red.png")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "test" / "pixel.png")
    Image.fromarray(noise[:2].repeat(10, axis=1)).save(tmp_path / "test" / "strip.png")
    held = ["mirrored.png", "resaved.jpg", "black.jpg", "red.png", "pixel.png", "strip.png"]
    rows += [(f"test/{name}", "test") for name in held]
    table = pd.DataFrame(rows, columns=["path", "split"])
    vectors = np.random.default_rng(0).normal(size=(len(table), 16))
    found = find_leaks(tmp_path, table, vectors, table["split"]).set_index(table["path"])
    assert found.loc["test/mirrored.png", "leak_of"] == f"train/{emoji[0].stem}.png"
    assert found.loc["test/resaved.jpg", "leak_of"] == f"train/{emoji[1].stem}.png"
    assert found.loc["test/black.jpg", "leak_of"] == "train/black.png"
    assert not found.loc[["test/red.png", "test/pixel.png", "test/strip.png"], "leak"].any()
    # within one split, the blank frames join no group of pictures
    groups = near_duplicates(tmp_path, table, vectors, table["split"])["near_duplicate_group"]
    assert (groups.to_numpy()[table["split"] == "train"] == -1).all()


def test_without_a_train_split_test_images_are_searched_among_val(tmp_path: Path) -> None:
    """val/ and test/ alone: a test copy of a val image is a leak from val (the search once
    needed a train split and found nothing); val images are the sources, never flagged."""
    rows = []
    for split in ("val", "test"):
        (tmp_path / split).mkdir()
    for i in range(8):
        picture(40 + i, (90, 160, 60)).save(tmp_path / "val" / f"{i}.png")
        rows.append((f"val/{i}.png", "val"))
    ImageOps.mirror(Image.open(tmp_path / "val" / "3.png")).save(tmp_path / "test" / "copy.png")
    picture(99, (90, 160, 60)).save(tmp_path / "test" / "other.png")
    rows += [("test/copy.png", "test"), ("test/other.png", "test")]
    table = pd.DataFrame(rows, columns=["path", "split"])
    vectors = np.random.default_rng(0).normal(size=(len(table), 16))
    found = find_leaks(tmp_path, table, vectors, table["split"]).set_index(table["path"])
    assert found.loc["test/copy.png", "leak_of"] == "val/3.png"
    assert found.loc["test/copy.png", "source_split"] == "val"
    assert found["leak"].sum() == 1


def test_a_copy_in_val_is_no_runner_up_of_a_test_copy_of_the_same_train_image(
    tmp_path: Path,
) -> None:
    """One train image copied twice: cropped and re-encoded into val, brightened and halved
    into test. The val copy, a copy of the test copy's source, was taken as its runner-up
    (it matched the source a little less well than the test copy did), and the ratio test
    dropped the test copy to 0.55. A test copy whose best match is the val copy names the
    train image it leaks (``leak_of``), as a person joining test to train needs."""
    emoji = sorted(SAMPLE.rglob("*.webp"))[:20]
    rows = []
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
    for i, p in enumerate(emoji):
        load_rgb(p).save(tmp_path / "train" / f"{i}.png")
        rows.append((f"train/{i}.png", "train"))
    copied = [0, 1, 3]
    for i in copied:
        image = load_rgb(emoji[i])
        image.crop((20, 10, 236, 226)).save(tmp_path / "val" / f"crop{i}.jpg", quality=40)
        brighter = ImageEnhance.Brightness(image.resize((128, 128))).enhance(1.2)
        brighter.save(tmp_path / "test" / f"bright{i}.webp")
        rows += [(f"val/crop{i}.jpg", "val"), (f"test/bright{i}.webp", "test")]
    table = pd.DataFrame(rows, columns=["path", "split"])
    vectors = np.random.default_rng(0).normal(size=(len(table), 16))
    found = find_leaks(tmp_path, table, vectors, table["split"]).set_index(table["path"])
    for i in copied:
        assert found.loc[f"val/crop{i}.jpg", "leak_of"] == f"train/{i}.png"
        copy = found.loc[f"test/bright{i}.webp"]  # the train image, even where the val
        assert copy["leak"] and copy["leak_of"] == f"train/{i}.png", copy  # copy matched best
        assert copy["source_split"] == "train"


def make_splits(root: Path) -> dict[str, str]:
    """train/<class>/ (8 each), test/<class>/ (3 distinct each) and 4 copies of train images
    into test/, one of them filed under the other class; returns copy path -> source path."""
    truth = {}
    for c, (label, tint) in enumerate(CLASSES.items()):
        for split, count in (("train", 8), ("test", 3)):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                picture(100 * c + i + (50 if split == "test" else 0), tint).save(
                    root / split / label / f"{label}_{i}.png"
                )
    for n, (kind, edit) in enumerate(COPIES.items()):
        label = "red" if n % 2 == 0 else "blue"
        other = "red" if label == "blue" else "blue"
        filed = other if kind == "re-encoded" else label  # a copy with another label
        source = f"train/{label}/{label}_{n}.png"
        im = Image.open(root / source).convert("RGB")
        dest = f"test/{filed}/copy_{n}" + (".jpg" if edit is None else ".png")
        if edit is None:
            im.save(root / dest, quality=35)
        else:
            edit(im).save(root / dest)
        truth[dest] = source
    return truth


def test_split_folders_are_recognised_at_any_depth_in_any_spelling() -> None:
    assert [
        split_name(n)
        for n in (
            "Train",
            "seg_train",
            "val2017",
            "Validation",
            "dev",
            "TESTING",
            "holdout",
            "cats",
        )
    ] == ["train", "train", "val", "val", "val", "test", "test", None]
    assert [split_name(n) for n in ("TrainingSet", "testImages", "trainval", "evaluation")] == [
        "train",
        "test",
        "train",
        "val",
    ]
    assert split_name("Sunset") is None and split_name("contest") is None
    assert split_of("data/train/cat/a.png") == ("train", False)
    assert split_of("seg_test/seg_test/forest/1.jpg") == ("test", False)
    assert split_of("train/a.png") == ("train", True)  # a split folder, no class folder
    assert split_of("cats/test/a.png") == ("", False)  # a path alone: the parent is the class
    assert split_of("fold_a/cat/x.png", 1) == ("fold_a", False)
    assert split_of("train/cat/a.png", "none") == ("", False)
    # below the split folder only the split again or a container: no class folder
    assert split_of("seg_pred/seg_pred/1.jpg") == ("pred", True)
    assert split_of("valid/images/a.jpg", containers=True) == ("val", True)
    assert split_of("train/image/a.png") == ("train", False)  # a class named image
    assert split_of("train/cat/images/a.jpg") == ("train", False)
    assert check_split("2") == 2 and check_split(None) == "none"
    with pytest.raises(SourceError, match="split must be auto, none or a folder depth"):
        check_split("sideways")


def test_splits_become_a_manifest_column_and_labels_stay_the_class(tmp_path: Path) -> None:
    make_splits(tmp_path / "ds")
    manifest = build_manifest(tmp_path / "ds", workers=1)
    assert set(manifest["split"]) == {"train", "test"}
    assert set(manifest["label"]) == {"red", "blue"}
    assert "split" not in build_manifest(tmp_path / "ds", split="none", workers=1)
    # a labels file's split column overrides the folder, and a split-only file relabels nothing
    (tmp_path / "splits.csv").write_text("path,split\ntrain/red/red_0.png,Validation\n")
    named = build_manifest(tmp_path / "ds", labels=tmp_path / "splits.csv", workers=1)
    assert named.set_index("path").loc["train/red/red_0.png", ["split", "label"]].tolist() == [
        "val",
        "red",
    ]
    # images straight in a split folder carry no label from it
    flat = tmp_path / "flat"
    for split in ("train", "test"):
        (flat / split).mkdir(parents=True)
        picture(1 if split == "train" else 2, (90, 90, 90)).save(flat / split / "a.png")
    assert set(build_manifest(flat, workers=1)["label"]) == {UNLABELLED}


def test_split_folders_under_the_class_folders_are_splits_when_every_image_sits_in_one(
    tmp_path: Path,
) -> None:
    """cat/train/, cat/test/, dog/train/ ...: the labels were train and test, and no split.
    A class named like a split beside others (a vehicles set's train, bus, car) stays a class,
    and one folder above the splits is a wrapper, no class."""

    def tree(root: Path, folders: list[str]) -> Path:
        for n, folder in enumerate(folders):
            (root / folder).mkdir(parents=True)
            for i in range(2):
                picture(10 * n + i, (90, 90, 90)).save(root / folder / f"{i}.png")
        return root

    below = tree(tmp_path / "below", ["cat/train", "cat/test", "dog/Training", "dog/valid"])
    m = build_manifest(below, workers=1).set_index("path")
    assert m.loc["cat/test/0.png", ["label", "split"]].tolist() == ["cat", "test"]
    assert m.loc["dog/Training/1.png", ["label", "split"]].tolist() == ["dog", "train"]
    assert set(m["split"]) == {"train", "val", "test"} and set(m["label"]) == {"cat", "dog"}
    assert "split" not in build_manifest(below, split="none", workers=1)
    vehicles = tree(tmp_path / "vehicles", ["transport/train", "transport/bus", "land/test"])
    plain = build_manifest(vehicles, workers=1)
    assert "split" not in plain and set(plain["label"]) == {"train", "bus", "test"}
    wrapper = build_manifest(tree(tmp_path / "wrapper", ["data/train", "data/test"]), workers=1)
    assert set(wrapper["split"]) == {"train", "test"} and set(wrapper["label"]) == {UNLABELLED}


def test_public_layouts_keep_their_classes_and_a_set_to_predict_is_a_held_out_split(
    tmp_path: Path,
) -> None:
    """Intel Image Classification (seg_train/seg_train/<class>/, seg_pred/seg_pred/ unlabelled),
    Roboflow's YOLO export (train/images/, valid/images/) and STL-10 (train/<class>/,
    unlabeled/): before, seg_pred, images and unlabeled were each taken for a class (and
    seg_pred for no split, so its copies of train images were never searched)."""

    def tree(root: Path, folders: list[str]) -> pd.DataFrame:
        for n, folder in enumerate(folders):
            (root / folder).mkdir(parents=True)
            for i in range(2):
                picture(10 * n + i, (90, 90, 90)).save(root / folder / f"{i}.png")
        return build_manifest(root, workers=1).set_index("path")

    intel = tree(
        tmp_path / "intel",
        [
            "seg_train/seg_train/sea",
            "seg_train/seg_train/street",
            "seg_test/seg_test/sea",
            "seg_pred/seg_pred",
        ],
    )
    assert intel.loc["seg_pred/seg_pred/0.png", ["split", "label"]].tolist() == [
        "pred",
        UNLABELLED,
    ]
    assert set(intel["label"]) == {"sea", "street", UNLABELLED}
    assert split_rank("pred") > split_rank("test")  # searched among train, val and test
    yolo = tree(tmp_path / "yolo", ["train/images", "valid/images", "test/images"])
    assert set(yolo["split"]) == {"train", "val", "test"} and set(yolo["label"]) == {UNLABELLED}
    stl = tree(tmp_path / "stl", ["train/cat", "test/dog", "unlabeled"])
    assert stl.loc["unlabeled/1.png", "label"] == UNLABELLED
    assert set(stl["label"]) == {"cat", "dog", UNLABELLED}
    # a container under every class folder: the class is the folder above it
    nested = tree(tmp_path / "nested", ["cats/images", "dogs/images"])
    assert set(nested["label"]) == {"cats", "dogs"} and "split" not in nested
    # but a class called image beside others stays one, split or not
    documents = tree(tmp_path / "documents", ["train/image", "train/text", "test/image"])
    assert set(documents["label"]) == {"image", "text"}


def test_copies_match_their_source_and_look_alikes_do_not() -> None:
    source = picture(7, (200, 40, 40))
    mine = small_copy(source)
    for kind, edit in COPIES.items():
        copy = edit(source) if edit else source
        score, found = match(small_copy(copy), mine)
        assert score > 0.95, kind
    other, _ = match(small_copy(picture(8, (200, 40, 40))), mine)
    assert other < 0.6  # smooth random shapes of one tint: alike, yet far below every copy


def test_a_brightened_picture_on_white_is_named_a_brightness_change_and_a_re_encode_is_not() -> (
    None
):
    """The kind a reason names: an emoji brightened by a fifth moved its pixels by 20 levels or
    more, but 3 on average over a mostly white frame, and was named "resized" (re-encoded)."""
    for name in ("activities/2660", "symbols/1F4F5", "flags/1F1F6-1F1E6"):
        emoji = load_rgb(SAMPLE / f"{name}.webp")
        brighter, again = io.BytesIO(), io.BytesIO()
        ImageEnhance.Brightness(emoji).enhance(1.2).save(brighter, "JPEG", quality=70)
        emoji.save(again, "JPEG", quality=35)
        for data, kind in ((brighter, "brightness/contrast"), (again, "resized")):
            copy = Image.open(io.BytesIO(data.getvalue())).convert("RGB")
            assert match(small_copy(copy), small_copy(emoji))[1] == kind, name


def test_heavy_downscales_are_compared_at_their_own_detail_and_colour_counts() -> None:
    """A 22-pixel copy of a 64-pixel picture (a third of the side) is compared at 22 pixels;
    a grey-identical picture in another colour (a blue heart beside a red one) is no copy."""
    source = picture(7, (200, 40, 40))
    small = source.resize((22, 22), Image.Resampling.BICUBIC)
    score, kind = match(small_copy(small), small_copy(source))
    assert score > 0.95 and kind == "resized"
    grey = np.asarray(source.convert("L"), np.float32)[..., None] / 255
    red = Image.fromarray((grey * [255, 30, 30]).astype("uint8"))
    blue = Image.fromarray((grey * [30, 30, 255]).astype("uint8"))
    assert match(small_copy(blue), small_copy(red))[0] < 0.5


def test_a_pair_scores_the_same_whichever_image_comes_first() -> None:
    """Within one split the near-duplicate search matches a pair the way round the first
    search to meet it goes: a source before its copy. A downscaled grey emoji (as small as
    Fashion-MNIST's) scored up to 0.16 lower with the source first, which lost half of the
    bench's copies at 0.75 of the side; the smaller image is now the template either way."""
    for f in sorted(SAMPLE.rglob("*.webp"))[:40:4]:
        source = load_rgb(f).convert("L").resize((28, 28), Image.Resampling.BOX).convert("RGB")
        for share in (0.75, 0.5):
            copy = small_copy(source.resize((round(28 * share),) * 2))
            assert match(copy, small_copy(source)) == match(small_copy(source), copy), f.name


def test_a_real_look_alike_is_no_leak_while_a_real_copy_is(tmp_path: Path) -> None:
    """Two real emoji that differ only in the mouth (slightly smiling, diagonal mouth: their
    colours correlate 0.98) are no copies: the worst block's residual (the mouth) tells them
    apart, while an off-centre 85 % crop of the smiley, re-encoded, still matches."""
    faces = SAMPLE / "smileys-emotion"
    smiley, diagonal = (load_rgb(faces / f"{c}.webp") for c in ("1F642", "1FAE4"))
    copy = smiley.crop((0, 30, 218, 248))
    copy.save(tmp_path / "copy.jpg", quality=50)
    copy = load_rgb(tmp_path / "copy.jpg")
    alike, _ = match(small_copy(diagonal), small_copy(smiley))
    copied, kind = match(small_copy(copy), small_copy(smiley))
    assert copied > 0.85 > 0.6 > alike and kind == "cropped"
    # the search: the smiley in train among other emoji, the look-alike and the copy in test
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    rows = []
    for p in [faces / "1F642.webp", *sorted((SAMPLE / "flags").glob("*.webp"))[:6]]:
        load_rgb(p).save(tmp_path / "train" / f"{p.stem}.png")
        rows.append((f"train/{p.stem}.png", "train"))
    diagonal.save(tmp_path / "test" / "diagonal.png")
    copy.save(tmp_path / "test" / "copy.png")
    rows += [("test/diagonal.png", "test"), ("test/copy.png", "test")]
    table = pd.DataFrame(rows, columns=["path", "split"])
    vectors = np.random.default_rng(0).normal(size=(len(table), 16))
    found = find_leaks(tmp_path, table, vectors, table["split"]).set_index(table["path"])
    assert found.loc["test/copy.png", "leak"]
    assert found.loc["test/copy.png", "leak_of"] == "train/1F642.png"
    assert not found.loc["test/diagonal.png", "leak"]


def test_a_copy_the_vectors_miss_is_proposed_by_its_tiny_picture(tmp_path: Path) -> None:
    """Vectors blind to the copy (random) and one candidate per search: the downscaled copy
    is still found, through the tiny grey picture; a source with its own near duplicate in
    train stays a confident match (the twin is no runner-up)."""
    rows = []
    for i in range(20):
        (tmp_path / "train").mkdir(exist_ok=True)
        picture(300 + i, (90, 160, 60)).save(tmp_path / "train" / f"{i}.png")
        rows.append((f"train/{i}.png", "train"))
    source = Image.open(tmp_path / "train" / "5.png")
    source.save(tmp_path / "train" / "5-twin.jpg", quality=90)  # the source's own twin
    rows.append(("train/5-twin.jpg", "train"))
    (tmp_path / "test").mkdir()
    source.resize((24, 24), Image.Resampling.BICUBIC).save(tmp_path / "test" / "small.png")
    picture(999, (90, 160, 60)).save(tmp_path / "test" / "other.png")
    rows += [("test/small.png", "test"), ("test/other.png", "test")]
    table = pd.DataFrame(rows, columns=["path", "split"])
    vectors = np.random.default_rng(0).normal(size=(len(table), 16))
    found = find_leaks(tmp_path, table, vectors, table["split"], candidates=1)
    found.index = table["path"]
    assert found.loc["test/small.png", "leak"]
    assert found.loc["test/small.png", "leak_of"] in {"train/5.png", "train/5-twin.jpg"}
    assert found.loc["test/small.png", "leak_score"] >= THRESHOLD
    assert (
        not found.loc["test/other.png", "leak"]
        and not found["leak"].to_numpy()[table["split"] == "train"].any()
    )


@pytest.fixture(scope="module")
def leaked(tmp_path_factory) -> tuple[Layout, Path, dict, pd.DataFrame, object]:
    tmp = tmp_path_factory.mktemp("leaks")
    root = tmp / "ds"
    truth = make_splits(root)
    layout = Layout("ds", tmp / "data", tmp / "reports")
    model = str(tiny_vit(tmp / "vit"))
    manifest = ingest(str(root), layout, workers=1)
    embed(layout, model, progress=False)
    return layout, root, truth, manifest, analyse(layout, model)


def test_held_out_copies_get_leak_columns_pairs_and_honest_numbers(leaked) -> None:
    layout, root, truth, manifest, analysis = leaked
    emb = load_embeddings(layout)
    leaks = dataset_leaks(root, emb.rows, emb.vectors, manifest)
    found = findings_table(emb.rows, analysis, manifest, leaks=leaks).set_index("path")
    assert {"split", "leak_of", "leak_score", "leak", "leak_kind", "conflicting_labels"} <= set(
        found
    )
    flagged = found[found["leak"]]
    assert dict(zip(flagged.index, flagged["leak_of"], strict=True)) == truth
    assert (found.loc[flagged.index, "split"] == "test").all()
    assert not found.loc[found["split"] == "train", "leak"].any()
    kinds = dict(zip(flagged.index, flagged["leak_kind"], strict=True))
    assert kinds["test/red/copy_0.png"] == "mirrored" and kinds["test/blue/copy_1.png"] == "cropped"
    assert "copies train/red/red_0.png (mirrored" in found.loc["test/red/copy_0.png", "reason"]
    assert (
        found["conflicting_labels"].sum() == 1
        and found.loc["test/red/copy_3.jpg", "conflicting_labels"]
    )
    assert {"leak": 4, "conflicting_labels": 1}.items() <= issue_counts(found.reset_index()).items()
    pairs = leak_pairs(emb.rows, leaks["split"], leaks)
    write_leaks(pairs, layout.leaks)
    written = pd.read_csv(layout.leaks)
    assert list(written.columns[:4]) == ["path", "split", "leak_of", "source_split"]
    assert len(written) == 4 and written["score"].is_monotonic_decreasing
    honest = split_report(emb.vectors, emb.rows["label"], leaks["split"], leaks["leak"])
    test = honest["test"]
    assert test["images"] == 10 and test["leaks"] == 4 and test["scored"] == 10
    assert {
        "knn_accuracy_all",
        "knn_accuracy_without_leaks",
        "probe_accuracy_all",
        "probe_accuracy_without_leaks",
    } <= set(test)
    # a higher threshold finds fewer
    strict = dataset_leaks(root, emb.rows, emb.vectors, manifest, threshold=0.9999)
    assert strict["leak"].sum() < 4
    # a parameter of the wrong kind is refused in one line, before any search
    with pytest.raises(ValueError, match="near_duplicate_limit must be a whole number, not 'lots'"):
        dataset_leaks(root, emb.rows, emb.vectors, manifest, near_duplicate_limit="lots")
    with pytest.raises(ValueError, match=r"leak_threshold must be in \(0, 1\], not 2"):
        dataset_leaks(root, emb.rows, emb.vectors, manifest, threshold=2)


def test_a_dataset_without_splits_is_unchanged(leaked, tmp_path: Path) -> None:
    layout, root, *_ = leaked
    plain = tmp_path / "plain"
    for label in CLASSES:
        (plain / label).mkdir(parents=True)
        for f in (root / "train" / label).iterdir():
            (plain / label / f.name).write_bytes(f.read_bytes())
    auto = build_manifest(plain, workers=1)
    assert "split" not in auto
    assert auto.drop(columns=["mtime_ns"]).equals(
        build_manifest(plain, split="none", workers=1).drop(columns=["mtime_ns"])
    )
    found = dataset_leaks(plain, auto[["path", "label", "sha256"]], np.zeros((len(auto), 4)), auto)
    assert not {"split", "leak", "leak_of"} & set(found)  # only the near-duplicate columns
