"""Rank aggregation: one score per model from several estimators' scores over the same zoo.

    >>> aggregate({"logme": [0.1, 0.5, 0.3], "hscore": [10.0, 30.0, 20.0]}).tolist()
    [0.0, 1.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata


def aggregate(scores: Mapping[str, Sequence[float] | np.ndarray]) -> np.ndarray:
    """Normalized mean rank of each model over several estimators (higher is better).

    Each estimator's scores over the M models become ranks (1 = lowest score, ties sharing their average
    rank), scaled to [0, 1] as (rank - 1) / (M' - 1) with M' the models that estimator scored; each model's
    result is the mean of its scaled ranks. Ranks make the combination scale-free: estimators live on wildly
    different ranges (GBC from -C(C-1) to 0, LogME around -1..2, PARC in [-100, 100]) and a raw or z-scored
    mean would let one estimator's outlier dominate, while a rank moves by at most one place per model.
    A NaN score (an estimator that failed on a model) is skipped in that model's mean; an estimator with a
    single finite score places that model at 0.5.

    Args:
        scores: estimator name -> scores of the same M models, in the same order.

    Returns:
        `[M]` aggregated scores in [0, 1].

    Raises:
        ValueError: no estimators, score lists of different lengths or not 1-D, or a model with no finite score.
    """
    if not scores:
        raise ValueError("no estimator scores to aggregate")
    rows = [np.asarray(v, dtype=np.float64) for v in scores.values()]
    if any(r.ndim != 1 for r in rows) or len({r.shape[0] for r in rows}) != 1:
        shapes = {name: np.shape(v) for name, v in scores.items()}
        raise ValueError(f"every estimator must score the same models as a 1-D list, got shapes {shapes}")
    table = np.stack(rows)
    scaled = np.full_like(table, np.nan)
    for row, out in zip(table, scaled):
        seen = ~np.isnan(row)
        count = int(seen.sum())
        if count:
            out[seen] = (rankdata(row[seen]) - 1) / (count - 1) if count > 1 else 0.5
    missing = np.flatnonzero(np.isnan(scaled).all(0))
    if missing.size:
        raise ValueError(f"models at positions {missing.tolist()} have no finite score from any estimator")
    return np.nanmean(scaled, 0)
