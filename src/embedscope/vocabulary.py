"""The kit's shared words, in one place: what a label, a tag, a column, a precision or a method
is called. Every stage imports them from here; this module imports nothing of the package, so
any module may use it without pulling in a stage (``tests/test_imports.py`` keeps the direction).
"""

from __future__ import annotations

#: What the stages write into ``data/<name>/`` (never part of a dataset's images: the sample's
#: data folder is also its image folder). Here, not in :mod:`embedscope.layout`, because the
#: wheel's build step (``setup.py``) reads it without the package's dependencies.
GENERATED_NAMES = (
    "manifest.parquet",
    "source.json",
    "source",
    "embeddings",
    "projections",
    "analysis",
    "thumbs",
    "decisions.csv",
)

#: Label given to images that sit directly in the dataset root (no class folder).
UNLABELLED = "(unlabelled)"
#: Skip reason of images a decisions file dropped (see :mod:`embedscope.decisions`).
DROPPED_REASON = "dropped by decision"

#: Columns every per-image table shares: the path relative to the dataset root, and the label.
PATH, LABEL = "path", "label"
#: Manifest column: each image's label before any decision (its folder's, or the labels file's).
ORIGINAL_LABEL = "original_label"
#: Manifest column of the tags decisions gave an image.
TAGS = "tags"
#: Per-image columns analyse gives and several stages read (findings, editors, search): the
#: label the evidence suggests and its probability, the two scores every editor can colour by,
#: and the HDBSCAN cluster.
SUGGESTED_LABEL, SUGGESTED_SHARE = "suggested_label", "suggested_share"
MISLABEL_SCORE, OUTLIER_SCORE, CLUSTER = "mislabel_score", "outlier_score", "cluster"

#: The columns of a decisions file, in this order.
DECISION_COLUMNS = (PATH, LABEL, TAGS)
#: The tag that leaves an image out of the next run.
DROP = "drop"
#: Separator of the ``tags`` column.
TAG_SEPARATOR = ";"
#: ``keep:<issue type>``: the next run does not flag the image for that issue again.
KEEP_PREFIX = "keep:"

#: Columns of the findings (``findings.csv``, and the points the editors carry) the review
#: queue reads: the issue types an image is flagged for, why, and how urgent it is.
ISSUES, REASON, PRIORITY = "issues", "reason", "review_priority"
#: Separator of the ``issues`` column (the same as the tags', so a type reads like a tag).
ISSUE_SEPARATOR = TAG_SEPARATOR
#: Issue types renamed since, old name -> name: ``keep:label`` tags in decisions files written
#: before the rename still keep an image unflagged. The label type became ``mislabel`` so that
#: every type's columns are ``<type>`` (flag) and ``<type>_score``: ``label`` is the image's
#: label column.
ISSUE_ALIASES = {"label": "mislabel"}

#: Dimension reductions of ``03_reduce`` (``METHOD=``).
METHODS = ("pca", "ipca", "umap", "tsne")

#: The dtype name of each precision. Accepted as input too ("float32" means "fp32"), and hashed
#: into the folder of a model's vectors (:func:`embedscope.store.model_key`), which is why it
#: stays: a cache made before keeps its folder.
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8"}
#: Precisions of ``02_embed`` (``precision=``), in the one spelling the kit uses everywhere.
PRECISIONS = tuple(DTYPE_NAMES)


def issue_type(name: str) -> str:
    """``name`` as the issue type it means today (an old name maps to its new one)."""
    name = str(name).strip()
    return ISSUE_ALIASES.get(name, name)


def precision_name(precision: str) -> str:
    """``precision`` in the kit's spelling (``"float32"`` -> ``"fp32"``), or a one-line
    refusal; ``"auto"`` stays ``"auto"``."""
    text = str(precision).strip().lower()
    if text == "auto" or text in PRECISIONS:
        return text
    by_dtype = {dtype: short for short, dtype in DTYPE_NAMES.items()}
    if text in by_dtype:
        return by_dtype[text]
    raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, not {precision!r}")
