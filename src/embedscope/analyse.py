"""Stage 4 — analyse: numbers that say how well a model separates the classes.

Everything here takes plain arrays. Neighbours are cosine similarity on the full embeddings
(:mod:`embedscope.knn`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedscope.knn import knn_report, neighbors, normalize, sample_rows
from embedscope.label_issues import VERSION as LABEL_ISSUES_VERSION
from embedscope.label_issues import label_issues
from embedscope.layout import Damaged, Layout, load_checked, write_npz
from embedscope.store import load_embeddings


def look_alikes(idx: np.ndarray, sim: np.ndarray, threshold: float = 0.97) -> np.ndarray:
    """Look-alike group per image (-1: none): images joined by a
    neighbour pair with cosine similarity >= ``threshold``, grouped transitively."""
    parent = np.arange(len(idx))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(sim >= threshold), strict=True):
        a, b = find(i), find(int(idx[i, j]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(idx))])
    sizes = np.bincount(roots, minlength=len(idx))
    groups = np.full(len(idx), -1)
    grouped = sizes[roots] > 1  # numbered by root, in one pass (a loop per group is n x groups)
    groups[grouped] = np.unique(roots[grouped], return_inverse=True)[1]
    return groups


#: Above this many points HDBSCAN is fitted on a seeded sample of this size and every other
#: point joins the cluster of its nearest sampled point: HDBSCAN's core distances take
#: min_cluster_size neighbours per point (n/100), so a fit on all is quadratic in n.
CLUSTER_SAMPLE = 20_000


def clusters(vectors: np.ndarray, *, min_cluster_size: int | None = None) -> np.ndarray:
    """Unsupervised clusters (HDBSCAN on 50 PCA dimensions of the normalised vectors); -1 is
    noise. They show structure the labels do not name. Beyond :data:`CLUSTER_SAMPLE` points
    the fit runs on a sample and the rest take their nearest sampled point's cluster."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    n = len(vectors)
    fit = sample_rows(n, CLUSTER_SAMPLE)
    x = normalize(vectors[fit])
    pca = None
    if x.shape[1] > 50 and len(x) > 50:
        pca = PCA(50, random_state=0).fit(x)
        x = pca.transform(x)
    size = min_cluster_size or max(5, n // 100)
    size = max(2, round(size * len(fit) / n))  # the same share of the points
    found = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(x)
    if len(fit) == n:
        return found
    out = np.empty(n, found.dtype)
    x = x.astype(np.float32)
    half_sq = 0.5 * np.einsum("ij,ij->i", x, x)
    for s in range(0, n, 4096):  # nearest sampled point, Euclidean as HDBSCAN measured
        block = normalize(vectors[s : s + 4096])
        block = (pca.transform(block) if pca is not None else block).astype(np.float32)
        out[s : s + len(block)] = found[np.argmin(half_sq - block @ x.T, axis=1)]
    return out


def cluster_table(labels: np.ndarray, found: np.ndarray) -> pd.DataFrame:
    """Size of each cluster, its most common label and purity (share carrying that label)."""
    df = pd.DataFrame({"cluster": found, "label": np.asarray(labels, dtype=object)})
    df = df[df["cluster"] >= 0]
    rows = []
    for c, g in df.groupby("cluster"):
        top = g["label"].value_counts()
        rows.append(
            {
                "cluster": int(c),
                "size": len(g),
                "label": top.index[0],
                "purity": round(float(top.iloc[0] / len(g)), 4),
            }
        )
    return pd.DataFrame(rows, columns=["cluster", "size", "label", "purity"])


def projection_quality(
    vectors: np.ndarray, coords: np.ndarray, labels: np.ndarray, *, sample: int = 5000, seed=0
) -> dict:
    """Silhouette of the labels on embeddings and projection, and trustworthiness of the
    projection (on at most ``sample`` points: both are quadratic in N)."""
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels, dtype=object)
    take = sample_rows(len(vectors), sample, seed)
    # the sample's rows only: normalising all first copied every vector (5 GB at 1M x 1,280)
    x, c, y = normalize(vectors[take]), np.asarray(coords)[take], labels[take]
    out: dict = {}
    n_classes = len(set(y))
    if 2 <= n_classes < len(y):
        out["silhouette_embedding"] = round(float(silhouette_score(x, y, metric="cosine")), 4)
        out["silhouette_projection"] = round(float(silhouette_score(c, y)), 4)
    k = min(10, (len(y) - 1) // 2)
    if k >= 1:
        tw = trustworthiness(x, c, n_neighbors=k, metric="cosine")
        out["trustworthiness"] = round(float(tw), 4)
    return out


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class Analysis:
    """What :func:`analyse` found: the dataset's ``report`` (for ``metrics.json``) and per-image
    arrays, each aligned with the embeddings' rows.

    Typed fields, so a misspelt column fails where it is written, not in a later notebook.
    ``analysis["cluster"]`` reads a per-image field by name too: :func:`findings_table` takes
    this or any mapping of the same columns (tests hand it plain dicts).
    """

    report: dict
    #: (n, k) row positions of each image's nearest neighbours (cosine), nearest first.
    neighbors: np.ndarray
    #: (n, k) their cosine similarities.
    similarity: np.ndarray
    #: The label-issue columns of :func:`embedscope.label_issues.label_issues`.
    mislabel_score: np.ndarray
    label_issue: np.ndarray
    suggested_label: np.ndarray
    suggested_share: np.ndarray
    probe_label: np.ndarray
    probe_share: np.ndarray
    neighbour_votes: np.ndarray
    #: 1 - mean similarity to the neighbours.
    outlier_score: np.ndarray
    #: Embedding near-duplicate group (-1: none), see :func:`look_alikes`.
    look_alike_group: np.ndarray
    #: HDBSCAN cluster (-1: noise), see :func:`clusters`.
    cluster: np.ndarray

    @property
    def k(self) -> int:
        """Neighbours per image (fewer than asked for in a tiny dataset)."""
        return int(self.neighbors.shape[1])

    def __getitem__(self, name: str) -> Any:
        if name == "report" or name not in self.__dataclass_fields__ and name != "k":
            raise KeyError(name)
        return getattr(self, name)


def analyse(
    layout: Layout, model: str | None = None, *, k: int = 10, duplicate_threshold: float = 0.97
) -> Analysis:
    """Neighbours, k-NN report, label issues and per-image scores of a dataset's stored
    embeddings (an :class:`Analysis`).

    The label issues use the zero-shot labels of ``prompts.parquet`` when the model has them.
    Neighbours, clusters and label issues are cached under
    ``data/<name>/analysis/<model_key>/`` while the embedded images and their labels are
    unchanged.
    """
    emb = load_embeddings(layout, model)
    fingerprint = hashlib.sha256("\n".join(emb.rows["sha256"]).encode() + f"{k}".encode())
    path = layout.neighbors(emb.model_key)
    cached = load_checked(path, lambda p: _read_neighbors(p, len(emb.rows)))
    if cached is not None and cached[3] != fingerprint.hexdigest():
        cached = None  # written for other vectors or another k: recomputed, not damaged
    if cached is None:  # neighbours and HDBSCAN depend on the vectors only: compute them once
        cached = (*neighbors(emb.vectors, k), clusters(emb.vectors))
        write_npz(
            path,
            neighbors=cached[0],
            similarity=cached[1],
            cluster=cached[2],
            fingerprint=fingerprint.hexdigest(),
        )
    idx, sim, found = cached[:3]
    labels = emb.rows["label"].to_numpy(dtype=object)
    report = knn_report(labels, idx, sim)
    issues, facts = _label_issues(layout, emb, idx, sim, fingerprint)
    dup = look_alikes(idx, sim, duplicate_threshold)
    table = cluster_table(labels, found)
    report |= {
        "label_issues": facts,
        "look_alike_threshold": duplicate_threshold,
        "look_alike_groups": int(dup.max() + 1),
        "look_alike_images": int((dup >= 0).sum()),
        "clusters": int(len(table)),
        "cluster_noise_share": round(float((found < 0).mean()), 4),
        "cluster_purity": round(
            float((table["purity"] * table["size"]).sum() / table["size"].sum()), 4
        )
        if len(table) and "skipped" not in facts  # purity of no labels, or one, says nothing
        else None,
    }
    return Analysis(
        report=report,
        neighbors=idx,
        similarity=sim,
        **{c: issues[c].to_numpy() for c in LABEL_ISSUE_COLUMNS},
        outlier_score=(1.0 - np.asarray(sim, np.float64).mean(axis=1)).astype(np.float32)
        if idx.shape[1]
        else np.zeros(len(labels), np.float32),
        look_alike_group=dup,
        cluster=found,
    )


def label_note(report: dict) -> str:
    """One line on the label issues of an :func:`analyse` report: how many were judged and
    flagged, or why the labels could not be judged (no labels, or one class)."""
    facts = report.get("label_issues", {})
    if "skipped" in facts:
        return str(facts["skipped"])
    return (
        f"label issues judged on {report.get('scored_images', 0)} labelled images in "
        f"{facts.get('classes', 0)} classes: {facts.get('label_issues', 0)} flagged"
    )


def _label_issues(layout: Layout, emb, idx, sim, fingerprint) -> tuple[pd.DataFrame, dict]:
    """:func:`label_issues` of the stored vectors, cached per vectors, labels and zero-shot
    labels (the probe is the one costly part of the analysis)."""
    labels = emb.rows["label"].to_numpy(dtype=object)
    prompts = layout.prompts(emb.model_key)
    zero_shot = None
    if prompts.exists():
        table = pd.read_parquet(prompts)
        if "zero_shot_label" in table and len(table) == len(labels):
            zero_shot = table["zero_shot_label"].to_numpy(dtype=object)
    key = fingerprint.copy()
    key.update(("\n".join(map(str, labels)) + f"|{LABEL_ISSUES_VERSION}").encode())
    if zero_shot is not None:
        key.update("\n".join(map(str, zero_shot)).encode())
    path = layout.label_issues(emb.model_key, key.hexdigest()[:20])
    stored = load_checked(path, lambda p: _read_label_issues(p, len(labels)))
    if stored is not None:
        return stored
    found = label_issues(emb.vectors, labels, idx, sim, zero_shot=zero_shot)
    columns = {c: found.table[c].to_numpy() for c in found.table}
    columns = {c: v.astype(str) if v.dtype == object else v for c, v in columns.items()}
    write_npz(path, facts=np.array(json.dumps(found.facts)), **columns)
    stale = layout.label_issues(emb.model_key).name  # a glob: every set of labels
    for old in path.parent.glob(stale):  # results for labels no longer current
        if old != path:
            old.unlink(missing_ok=True)
    return found.table, found.facts


def _read_label_issues(path, n: int) -> tuple[pd.DataFrame, dict]:
    with np.load(path, allow_pickle=False) as z:
        facts = json.loads(str(z["facts"]))
        table = pd.DataFrame({c: z[c] for c in z.files if c != "facts"})
    if len(table) != n:
        raise Damaged(f"{len(table)} rows for {n} images")
    if missing := sorted(set(LABEL_ISSUE_COLUMNS) - set(table)):
        raise Damaged(f"no column(s) {missing}")
    for c in ("suggested_label", "probe_label"):
        table[c] = table[c].astype(object)
    return table, facts


#: Every column :func:`label_issues` returns (a cached table lacking one is damaged).
LABEL_ISSUE_COLUMNS = (
    "mislabel_score",
    "label_issue",
    "suggested_label",
    "suggested_share",
    "probe_label",
    "probe_share",
    "neighbour_votes",
)


def _read_neighbors(path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Cached neighbours, similarities, clusters and fingerprint, refused unless shaped for
    ``n`` images with indices inside 0..n-1."""
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != {"neighbors", "similarity", "cluster", "fingerprint"}:
            raise Damaged(f"arrays {sorted(z.files)} are not cached neighbours")
        idx, sim, found = z["neighbors"], z["similarity"], z["cluster"]
        fingerprint = str(z["fingerprint"])
    if idx.ndim != 2 or idx.shape != sim.shape or len(idx) != n or found.shape != (n,):
        raise Damaged(f"shapes {idx.shape}, {sim.shape}, {found.shape} for {n} images")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise Damaged("a neighbour index is out of range")
    return idx, sim, found, fingerprint
