"""Ranking metrics of one task: scores over the zoo against ground-truth accuracies.

Two weighted-tau variants are in use in the field, and they give different numbers for the same inputs:
``rank=None`` is what Model Spider's published table computes (``scipy.stats.weightedtau(gt, score,
rank=None)``: weights from the decreasing lexicographic rank by (gt, score)); ``symmetric`` is scipy's
default (the average of the weightings by either ranking).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import weightedtau

WTAU_VARIANTS = ("rank_none", "symmetric")


def _pair(gt: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, score = np.asarray(gt, dtype=np.float64), np.asarray(score, dtype=np.float64)
    if gt.shape != score.shape or gt.ndim != 1:
        raise ValueError(f"gt and score must be 1-D of one length, got {gt.shape} and {score.shape}")
    keep = np.isfinite(gt)
    if not np.isfinite(score[keep]).all():
        raise ValueError("scores hold NaN or inf where ground truth exists; a ranking needs a score for every model")
    if keep.sum() < 2 or np.ptp(gt[keep]) == 0:
        raise ValueError("a ranking metric needs ground truth for at least two models, not all equal")
    return gt[keep], score[keep]


def weighted_tau(gt: np.ndarray, score: np.ndarray, variant: str = "rank_none") -> float:
    """Weighted Kendall tau between ground truth and scores over the models with ground truth (NaN gt skipped).

    A score that is the same for every model ranks nothing: its tau is defined as 0 (scipy would return NaN).

    Args:
        gt: ground-truth accuracy per model, NaN where unmeasured.
        score: predicted score per model (higher = better).
        variant: "rank_none" (Model Spider's table) or "symmetric" (scipy's default).
    """
    if variant not in WTAU_VARIANTS:
        raise ValueError(f"unknown weighted tau variant {variant!r}; use one of {WTAU_VARIANTS}")
    gt, score = _pair(gt, score)
    if np.ptp(score) == 0:
        return 0.0
    return float(weightedtau(gt, score, rank=None if variant == "rank_none" else True)[0])


def top1_regret(gt: np.ndarray, score: np.ndarray) -> float:
    """Best ground-truth accuracy minus that of the top-scored model (accuracy points; 0 is a perfect pick)."""
    gt, score = _pair(gt, score)
    return float(gt.max() - gt[int(np.argmax(score))])
