"""Outlier findings: how far each image sits from its nearest neighbours in embedding space.

Only the score for now (``1 - mean cosine similarity to the neighbours``, from
:func:`embedscope.analyse.analyse`): no threshold has been measured yet, so the family declares
no issue type and flags nothing; an ``outlier`` type with its flag and reason joins here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from embedscope.findings.registry import Column, Context, Family
from embedscope.vocabulary import OUTLIER_SCORE


def _compute(context: Context) -> pd.DataFrame:
    return pd.DataFrame({OUTLIER_SCORE: np.asarray(context.per_image["outlier_score"], np.float32)})


FAMILY = Family(
    name="outliers",
    order=20,
    columns=(Column(OUTLIER_SCORE, "1 - mean cosine similarity to the neighbours (no flag yet)"),),
    compute=_compute,
)
