"""One leak anchor run on one folder, inside the bench's throwaway venv (never the kit's):
``python leak_anchors.py <anchor> <folder> <out.json> [<vectors.npy> <paths.json>]``.

Writes ``{"pairs": [[a, b], ...]}``: the pairs of images (paths relative to the folder) the
anchor calls duplicates, in either order; ``scripts/bench_leaks.py`` scores them with the
kit's own recall and false-pair code. Anchors: ``cleanvision`` (0.3.7, exact + near
duplicates), ``phash`` (imagededup's PHash at its default ``max_distance_threshold=10``),
``fastdup`` (its own model and default threshold) and ``fiftyone`` (Brain's
``compute_leaky_splits`` given the kit's vectors, at its default threshold).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path


def _rel(folder: Path, p: str) -> str:
    """A path an anchor reports (absolute, relative to the set's folder: imagededup, or to the
    working folder: fastdup) made relative to the set's folder."""
    found = [c for c in (folder / p, Path.cwd() / p) if c.is_file()]
    return (found[0] if found else folder / p).resolve().relative_to(folder).as_posix()


def cleanvision(folder: Path) -> list[list[str]]:
    from cleanvision import Imagelab

    lab = Imagelab(data_path=str(folder))
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, verbose=False)
    pairs = []
    for kind in ("exact_duplicates", "near_duplicates"):
        for group in lab.info[kind]["sets"]:
            pairs += [
                [_rel(folder, a), _rel(folder, b)] for a, b in itertools.combinations(group, 2)
            ]
    return pairs


def phash(folder: Path) -> list[list[str]]:
    from imagededup.methods import PHash

    found = PHash(verbose=False).find_duplicates(image_dir=folder, recursive=True)
    return [[_rel(folder, a), _rel(folder, b)] for a, bs in found.items() for b in bs]


def fastdup_pairs(folder: Path) -> list[list[str]]:
    import tempfile

    import fastdup

    work = Path(tempfile.mkdtemp(prefix="fastdup-"))
    fd = fastdup.create(work_dir=str(work), input_dir=str(folder))
    fd.run(overwrite=True, verbose=False)
    sim = fd.similarity()
    return [
        [_rel(folder, a), _rel(folder, b)]
        for a, b in zip(sim["filename_from"], sim["filename_to"], strict=True)
    ]


def fiftyone_pairs(folder: Path, vectors: Path, paths: Path) -> list[list[str]]:
    import fiftyone as fo
    import fiftyone.brain as fob
    import numpy as np

    rel = json.loads(paths.read_text())
    x = np.load(vectors)
    ds = fo.Dataset()
    samples = []
    for p, v in zip(rel, x, strict=True):
        samples.append(fo.Sample(filepath=str(folder / p), tags=[p.split("/")[0]], emb=v.tolist()))
    ds.add_samples(samples)
    index = fob.compute_leaky_splits(ds, splits=["train", "test"], embeddings="emb")
    pairs = []
    for s in index.leaks_view():
        for other in index.leaks_for_sample(s).values("filepath"):
            if other != s.filepath:
                pairs.append([_rel(folder, s.filepath), _rel(folder, other)])
    return pairs


if __name__ == "__main__":
    anchor, folder, out = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3])
    run = {"cleanvision": cleanvision, "phash": phash, "fastdup": fastdup_pairs}
    if anchor == "fiftyone":
        pairs = fiftyone_pairs(folder, Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        pairs = run[anchor](folder)
    out.write_text(json.dumps({"pairs": pairs}))
