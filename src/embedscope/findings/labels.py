"""Label findings: images whose label the neighbours, the probe and the zero-shot labels doubt
(:mod:`embedscope.label_issues`, through :func:`embedscope.analyse.analyse`).

The type is ``mislabel`` (flag ``mislabel``, score ``mislabel_score``), as every type is
``<type>``/``<type>_score``; it was called ``label`` (``label`` is the image's label column), and
``keep:label`` tags still keep an image unflagged. ``label_issue`` is still written, the same as
``mislabel``, for scripts that read findings files of earlier versions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.registry import Column, Context, Family, IssueType
from embedscope.vocabulary import MISLABEL_SCORE, SUGGESTED_LABEL, SUGGESTED_SHARE


def _compute(context: Context) -> pd.DataFrame:
    per_image = context.per_image
    return pd.DataFrame(
        {
            MISLABEL_SCORE: np.asarray(per_image["mislabel_score"], np.float32),
            "mislabel": np.asarray(per_image["label_issue"], bool),
            SUGGESTED_LABEL: np.asarray(per_image["suggested_label"], object),
            SUGGESTED_SHARE: np.asarray(per_image["suggested_share"]),
        }
    )


def _reasons(table: pd.DataFrame, at: np.ndarray, context: Context) -> list[str]:
    """ "9 of 10 neighbours and the probe (0.93) say coat"."""
    per_image = context.per_image
    k = int(per_image["k"])
    out = []
    for i in at:
        say = table[SUGGESTED_LABEL].iat[i]
        votes = int(per_image["neighbour_votes"][i])
        probe = per_image["probe_label"][i]
        share = float(per_image["probe_share"][i])
        if probe == say:
            out.append(f"{votes} of {k} neighbours and the probe ({share:.2f}) say {say}")
        elif probe:
            out.append(f"{votes} of {k} neighbours say {say}; the probe says {probe}")
        else:
            out.append(f"{votes} of {k} neighbours say {say}")
    return out


FAMILY = Family(
    name="labels",
    order=10,
    columns=(
        Column(MISLABEL_SCORE, "0..1, higher = more likely wrong (1 - cleanlab's label quality)"),
        Column("mislabel", "cleanlab's confident-learning verdict: the label is likely wrong"),
        Column("label_issue", "the same as `mislabel` (its name before; kept for old readers)"),
        Column(SUGGESTED_LABEL, "the label the evidence points to", text=True),
        Column(SUGGESTED_SHARE, "its combined probability"),
    ),
    compute=_compute,
    types=(
        IssueType(
            "mislabel",
            weight=1.0,
            reason=_reasons,
            ranks_unflagged=True,
            doc="a label the neighbours and the probe doubt (`keep:label` still keeps it)",
        ),
    ),
    legacy={"label_issue": "mislabel"},
)
