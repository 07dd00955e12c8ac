"""Stage 2 — embed: one pooled vector per manifest image, streamed to disk and cached.

Vectors go to the embedding store (:mod:`embedscope.store`: shards keyed by the image's
sha256 under a folder named after the model identity, then ``vectors.npy`` + ``rows.parquet``),
so re-running embeds nothing, adding images embeds only those, and a killed run resumes from
its last complete shard. The parts, each importing only those listed before it:

* :mod:`~embedscope.embed.pixels` — file to model input: decode at draft scale, fit to the
  model's geometry as uint8 (in worker processes), normalise on the model's device;
* :mod:`~embedscope.embed.precision` — reduced precisions, the race against float32 and the
  fidelity rule;
* :mod:`~embedscope.embed.encoder` — pooling and :class:`Encoder` (a model at one precision);
* :mod:`~embedscope.embed.stream` — worker and thread counts, the pipelined forward loop and
  the shard writer;
* :mod:`~embedscope.embed.calibrate` — ``precision="auto"`` on the dataset's own images;
* :mod:`~embedscope.embed.plan` — what a run must do (:func:`plan`) and its outputs
  (:func:`finish`);
* the engines: :mod:`~embedscope.embed.local` and :mod:`~embedscope.embed.ray_engine`.
"""

from __future__ import annotations

from embedscope.embed.encoder import POOLINGS, Encoder, pool, resolve_pooling
from embedscope.embed.local import embed_local
from embedscope.embed.plan import resolve_device
from embedscope.embed.precision import PRECISIONS
from embedscope.embed.ray_engine import embed_ray, start_local_ray
from embedscope.embed.stream import embedded
from embedscope.layout import Layout

__all__ = [
    "POOLINGS",
    "PRECISIONS",
    "Encoder",
    "embed",
    "embedded",
    "pool",
    "resolve_device",
    "resolve_pooling",
    "start_local_ray",
]


def embed(
    layout: Layout,
    model: str = "mobilenet_v2",
    *,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    pooling: str = "auto",
    num_workers: int | None = None,
    shard_size: int = 512,
    calibration_images: int | None = None,
    precision_race: str = "remembered",
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    concurrency: int | None = None,
) -> dict:
    """Embed every ok manifest image not yet cached for this model; return run facts.

    ``precision="auto"`` embeds ``calibration_images`` images (default: 256, or an eighth of
    the dataset up to 1,024, spread over it, grown once when the kNN votes it flips need more;
    see :mod:`embedscope.embed.calibrate`) in float32 and in the reduced precisions the
    hardware offers, and keeps the fastest of those only if it is measured faster and the
    analysis cannot tell it from float32 (:mod:`embedscope.embed.precision`). The race's
    speed-ups are remembered per model and hardware for every dataset, the decision per
    dataset (:mod:`embedscope.embed.calibrate`); ``precision_race="again"`` races and judges
    anew. The decision, speed-ups and figures are reported as ``precision_check``. Unless
    ``calibration_images`` is given, the check runs only where it can pay for itself (a first
    run is never slower than float32's): a dataset of up to 1,024 images keeps float32.

    ``engine="ray"`` runs the same step on Ray Data (see :mod:`embedscope.embed.ray_engine`;
    ``ray_address`` and ``concurrency`` apply to it only; ``num_workers`` to local only).
    """
    common = {
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "pooling": pooling,
        "shard_size": shard_size,
        "calibration_images": calibration_images,
        "precision_race": precision_race,
        "progress": progress,
    }
    if engine == "ray":
        return embed_ray(layout, model, ray_address=ray_address, concurrency=concurrency, **common)
    if engine != "local":
        raise ValueError(f"engine must be local or ray, not {engine!r}")
    return embed_local(layout, model, num_workers=num_workers, **common)
