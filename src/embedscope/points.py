"""The point table: one row per embedded image of a map, everything an editor shows of it.

:func:`point_table` builds it from the stages' own files: the projection (``03_reduce``), the
analysis (neighbours, clusters, label issues), ``findings.csv`` and the prompt scores
(``02_embed``). ``04_explore`` writes it once per method and dims as
``reports/<name>/points-<method>-<dims>d.parquet`` (:meth:`~embedscope.layout.Layout.points`),
and every editor reads that file (:func:`load_points`): the page, the live panel and the Dash
app show the same columns because there is one table, not one per editor.

:data:`SCHEMA` declares its columns and dtypes; paths are relative to the dataset root, so the
file names no directory of the machine it was made on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from embedscope.analyse import Analysis, analyse
from embedscope.findings import POINT_COLUMNS, read_findings, with_findings
from embedscope.layout import Damaged, Layout, load_checked, write_parquet
from embedscope.reduce import project
from embedscope.search import PROMPT_PREFIX, load_prompt_scores
from embedscope.store import load_embeddings
from embedscope.vocabulary import UNLABELLED

#: Every column of a point table, in order: name -> (dtype, meaning). ``str`` is pandas' string
#: dtype; ``object`` holds one numpy array per row.
SCHEMA: dict[str, tuple[str, str]] = {
    "row": ("int64", "the image's row in the manifest"),
    "path": ("str", "the image's file, relative to the dataset root"),
    "label": ("str", f"its label ({UNLABELLED} when it has none)"),
    "sha256": ("str", "hash of its bytes: the thumbnail cache's key"),
    "x": ("float32", "map coordinate"),
    "y": ("float32", "map coordinate"),
    "z": ("float32", "map coordinate; NaN everywhere in a 2D map"),
    "neighbors": ("object", "row positions (int32) of its nearest neighbours, nearest first"),
    "cluster": ("int64", "HDBSCAN cluster of the embeddings (-1: noise)"),
    "look_alike_group": ("int64", "embedding near-duplicate group (-1: none)"),
    "near_duplicate_group": (
        "int64",
        "copies of one image within one split; same pHash where unsearched (-1: none)",
    ),
    "mislabel_score": ("float32", "1 - the combined probability of its own label"),
    "suggested_label": ("str", "most probable label by probe, neighbours (and zero-shot)"),
    "suggested_share": ("float32", "that label's probability"),
    "outlier_score": ("float32", "1 - mean cosine similarity to its neighbours"),
    "mislabel": ("bool", "flagged as mislabelled (findings.csv; keep tags honoured)"),
    "issues": ("str", "issue types it is flagged for, ';'-separated (findings.csv)"),
    "reason": ("str", "one line a person reads on why (findings.csv)"),
    "review_priority": ("float64", "order of the review queue, highest first (findings.csv)"),
}
#: Columns only a CLIP-family model's prompt scores add (``prompts.parquet``), after the
#: :data:`SCHEMA` columns: ``<PROMPT_PREFIX><prompt text>`` is a cosine per prompt.
PROMPT_SCHEMA: dict[str, tuple[str, str]] = {
    PROMPT_PREFIX + "*": ("float32", "cosine similarity of the image to that prompt"),
    "zero_shot_label": ("str", "the class whose prompt the image is closest to"),
    "zero_shot_disagrees": ("bool", "labelled, and the zero-shot label is another"),
}
#: ``findings.csv`` columns a point carries when findings has them, after the :data:`SCHEMA`
#: columns, only in a dataset with splits: the split (the editors colour, filter and select by
#: it) and a leak's source (the review queue shows it beside the image).
FINDING_SCHEMA: dict[str, tuple[str, str]] = {
    "split": ("str", "train, val, test (or the split's own name); only with splits"),
    "leak_of": ("str", "the earlier-split image it copies (empty: none); only with splits"),
}
#: What a point has when ``findings.csv`` is missing or does not name it: nothing to review.
NO_FINDINGS = {
    "mislabel": False,
    "issues": "",
    "reason": "",
    "review_priority": 0.0,
    "near_duplicate_group": -1,
}


def point_table(
    layout: Layout,
    model: str | None = None,
    method: str = "pca",
    dims: int = 3,
    random_state: int | None = 0,
    analysis: Analysis | None = None,
) -> pd.DataFrame:
    """The point table of one map (:data:`SCHEMA`), from the stages' files (cached ones reused).

    Its ``attrs`` say what it was made from (model folder, method, dims, random state and a
    digest of findings.csv and the prompt scores), so :func:`load_points` can tell a current
    file from a stale one. Without ``findings.csv`` every point gets :data:`NO_FINDINGS`.
    ``analysis``: this model's :func:`~embedscope.analyse.analyse`, when the caller has it.
    """
    coords, _ = project(layout, method, dims, model=model, random_state=random_state)
    found = analysis if analysis is not None else analyse(layout, model)
    emb = load_embeddings(layout, model)
    table = coords.reset_index(drop=True)
    if "z" not in table:
        table["z"] = np.float32(np.nan)
    table["label"] = table["label"].fillna(UNLABELLED)
    table["neighbors"] = list(np.asarray(found.neighbors, dtype=np.int32))
    table["cluster"] = found.cluster
    table["look_alike_group"] = found.look_alike_group
    table["mislabel_score"] = found.mislabel_score
    table["suggested_label"] = pd.Series(found.suggested_label, dtype=object).fillna("")
    table["suggested_share"] = found.suggested_share
    table["outlier_score"] = found.outlier_score
    if layout.findings.is_file():
        if missing := sorted(set(POINT_COLUMNS) - set(SCHEMA)):
            raise ValueError(f"findings columns {missing} are not in the point table's SCHEMA")
        table = with_findings(table, read_findings(layout), optional=FINDING_SCHEMA)
    for col, value in NO_FINDINGS.items():
        table[col] = table[col].fillna(value) if col in table else value
    extra = [c for c in FINDING_SCHEMA if c in table]
    table = table.fillna(dict.fromkeys(extra, ""))
    table = _typed(table[[*SCHEMA, *extra]], SCHEMA | FINDING_SCHEMA)
    prompts = load_prompt_scores(layout, model).reset_index(drop=True)
    if len(prompts.columns):
        table = pd.concat([table, _typed(prompts, _prompt_dtypes(prompts))], axis=1)
    table.attrs = _made_from(layout, emb.model_key, method, dims, random_state)
    return table


def write_points(layout: Layout, table: pd.DataFrame) -> Path:
    """Write a :func:`point_table` to ``reports/<name>/points-<method>-<dims>d.parquet``
    (atomically); returns the path."""
    made = table.attrs
    return write_parquet(layout.points(made["method"], made["dims"]), table)


def load_points(
    layout: Layout,
    model: str | None = None,
    method: str = "pca",
    dims: int = 3,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """The stored point table of this map when it is current (same model, images, labels,
    random state, findings and prompt scores), else :func:`point_table` computed now (and not
    written: ``04_explore`` writes it). A damaged file is set aside."""
    emb = load_embeddings(layout, model)
    path = layout.points(method, dims)
    stored = load_checked(path, _read_points)
    if stored is not None:
        rows = emb.rows.reset_index(drop=True)
        same = stored.attrs == _made_from(layout, emb.model_key, method, dims, random_state)
        for col in ("path", "sha256", "label"):
            same = same and stored[col].tolist() == rows[col].fillna(UNLABELLED).tolist()
        if same:
            return stored
    return point_table(layout, model, method, dims, random_state)


def neighbor_rows(points: pd.DataFrame) -> np.ndarray:
    """The ``neighbors`` column as one (n, k) array of row positions, as the editors take it."""
    if not len(points):
        return np.zeros((0, 0), np.int64)
    return np.stack(points["neighbors"].to_numpy()).astype(np.int64)


def _typed(table: pd.DataFrame, dtypes: dict[str, tuple[str, str]]) -> pd.DataFrame:
    out = {}
    for col in table.columns:
        dtype = dtypes[col][0]
        out[col] = table[col] if dtype == "object" else table[col].astype(dtype)
    return pd.DataFrame(out, index=table.index)


def _prompt_dtypes(prompts: pd.DataFrame) -> dict[str, tuple[str, str]]:
    wild = PROMPT_SCHEMA[PROMPT_PREFIX + "*"]
    return {c: wild if c.startswith(PROMPT_PREFIX) else PROMPT_SCHEMA[c] for c in prompts}


def _made_from(layout: Layout, model_key: str, method: str, dims: int, random_state) -> dict:
    """What a point table depends on beyond the embedded rows (those are compared whole)."""
    digest = hashlib.sha256()
    for path in (layout.findings, layout.prompts(model_key)):
        digest.update(path.read_bytes() if path.is_file() else b"-")
        digest.update(b"\0")
    return {
        "model_key": model_key,
        "method": method,
        "dims": int(dims),
        "random_state": random_state,
        "inputs": digest.hexdigest(),
    }


def _read_points(path: Path) -> pd.DataFrame:
    """A stored point table, refused unless it has every :data:`SCHEMA` column at its dtype
    and neighbours inside the table."""
    table = pd.read_parquet(path)
    wrong = [
        c for c, (dtype, _) in SCHEMA.items() if c not in table or str(table[c].dtype) != dtype
    ]
    if wrong:
        raise Damaged(f"column(s) {wrong} missing or not of the point table's dtype")
    if not {"model_key", "method", "dims", "inputs"} <= set(table.attrs):
        raise Damaged("it does not say what it was made from")
    near = neighbor_rows(table)
    if near.size and (near.min() < 0 or near.max() >= len(table)):
        raise Damaged("a neighbour row is outside the table")
    return table
