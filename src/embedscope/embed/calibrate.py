"""``precision="auto"`` on a real run: embed a calibration sample of the dataset in float32
and in the candidates (:mod:`embedscope.embed.precision` races and judges them), and remember
the decision per dataset, model and hardware."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from embedscope.embed.encoder import Encoder
from embedscope.embed.pixels import make_loader, stamps_of
from embedscope.embed.precision import PrecisionRace, candidates
from embedscope.embed.stream import choose_workers, embedded, thread_options
from embedscope.layout import Layout, read_json, write_json


def calibration_sample(images: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` images spread evenly over the (path-ordered) dataset, so every class
    tends to be there, not only the first folder's."""
    pick = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    return images.iloc[pick] if len(images) else images


def auto_precision(
    layout: Layout,
    reference: Encoder,
    identity: str,
    root: Path,
    sample: pd.DataFrame,
    *,
    batch_size: int,
    num_workers: int | None,
) -> tuple[Encoder, dict, dict[str, np.ndarray], dict[str, str]]:
    """The encoder ``precision="auto"`` keeps, the check that decided, and the vectors of
    ``sample`` (images by sha256, with ``path`` and ``label``) at the kept precision, with
    the files it could not read, by sha256.

    A decision already taken for this dataset, model, pooling and hardware is reused as is
    (nothing is embedded then).
    """
    dev = reference.device
    names = candidates(dev, reference.net)
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    cache = layout.data_dir / "embeddings" / "precision.json"
    decisions = read_json(cache, default={}) or {}
    cache_key = f"{identity}|{reference.pooling}|{hardware}|{'+'.join(names)}"
    if not names:
        check = {"candidate": None, "kept": False, "reason": "no faster precision here"}
        return reference, check, {}, {}
    low = lambda name: Encoder(reference.net, reference.pooling, dev, reference.pixels, name)  # noqa: E731
    if cache_key in decisions:
        check = decisions[cache_key]
        return (low(check["candidate"]) if check["kept"] else reference), check, {}, {}
    race = PrecisionRace(reference, {name: low(name) for name in names}, dev)
    paths = sample["path"].tolist()
    workers, _ = choose_workers(num_workers, root, paths, batch_size, reference)
    loader = make_loader(
        root,
        paths,
        reference.pixels,
        batch_size=batch_size,
        num_workers=workers,
        device=dev,
        stamps=stamps_of(sample),
    )
    shas, ref, failed = [], [], {}
    threads = thread_options(dev, workers)
    for ids, vecs, bad in embedded(loader, race, threads=threads):
        failed.update({sample.index[i]: reason for i, reason in bad})  # one decode, all forwards
        if vecs is not None:
            shas += [sample.index[i] for i in ids]
            ref.append(vecs)
    if len(shas) < 3:
        check = {"candidate": names[0], "kept": False, "reason": "too few readable images to judge"}
        return reference, check, {}, failed
    ref_all = np.concatenate(ref)
    check, kept_vectors = race.verdict(ref_all, sample.loc[shas, "label"].to_numpy())
    decisions[cache_key] = check
    write_json(cache, decisions)
    kept = race.lows[check["candidate"]] if check["kept"] else reference
    vectors = ref_all if kept_vectors is None else kept_vectors
    return kept, check, dict(zip(shas, vectors, strict=True)), failed
