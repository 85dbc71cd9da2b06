"""Ranking metrics: scores over the zoo against ground-truth accuracies, per task and averaged over tasks.

Two weighted-tau variants are in use in the field, and they give different numbers for the same inputs:
``rank=None`` is what Model Spider's published table computes (``scipy.stats.weightedtau(gt, score,
rank=None)``: weights from the decreasing lexicographic rank by (gt, score)); ``symmetric`` is scipy's
default (the average of the weightings by either ranking).

Kendall's tau-b, NDCG@k (gains: accuracy above the worst measured model) and top-1 regret complete the
per-task functions; ``WeightedTau``, ``KendallTau``, ``NDCG`` and ``Top1Regret`` are torchmetrics metrics
that average them over the tasks (rows) they accumulate.

Example:
    >>> gt = [70.0, 80.0, 90.0]  # fine-tuning accuracies of three models
    >>> round(weighted_tau(gt, [0.1, 0.2, 0.3]), 6), round(weighted_tau(gt, [0.3, 0.2, 0.1]), 6)
    (1.0, -1.0)
    >>> top1_regret(gt, [0.3, 0.2, 0.1])  # the top-scored model is 20 points below the best
    20.0
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, weightedtau
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

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


def kendall_tau(gt: np.ndarray, score: np.ndarray) -> float:
    """Kendall tau-b between ground truth and scores over the models with ground truth (NaN gt skipped).

    A score that is the same for every model ranks nothing: its tau is defined as 0 (scipy would return NaN).

    Args:
        gt: ground-truth accuracy per model, NaN where unmeasured.
        score: predicted score per model (higher = better).
    """
    gt, score = _pair(gt, score)
    if np.ptp(score) == 0:
        return 0.0
    return float(kendalltau(gt, score).statistic)


def ndcg_at_k(gt: np.ndarray, score: np.ndarray, k: int) -> float:
    """Normalized discounted cumulative gain of the top-k models by score (NaN gt skipped; 1 is a perfect top k).

    A model's gain is its accuracy above the worst measured model (``gt - min(gt)``), so the worst model counts
    nothing and gains stay in accuracy points. DCG sums ``gain / log2(rank + 1)`` (rank 1-based) over the top k
    by score and is divided by the DCG of the ideal order. Tied scores keep the models' given order (a stable
    sort), unlike ``sklearn.metrics.ndcg_score``'s tie averaging; without ties the two agree.

    Args:
        gt: ground-truth accuracy per model, NaN where unmeasured.
        score: predicted score per model (higher = better).
        k: number of top-ranked models that count (at least 1; more than the models measured counts all).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    gt, score = _pair(gt, score)
    gain = gt - gt.min()
    discount = 1 / np.log2(np.arange(2, min(k, gain.size) + 2))
    dcg = gain[np.argsort(-score, kind="stable")][:k] @ discount
    ideal = np.sort(gain)[::-1][:k] @ discount
    return float(dcg / ideal)


class _TaskMean(Metric):
    """Mean over tasks of a per-task ranking metric; each row of ``update`` is one task.

    The per-task values are kept in a list state reduced by concatenation, so the mean is exact across
    processes. As with torchmetrics' other list-state metrics, ``compute`` before any task raises
    ``ValueError`` ("No samples to concatenate").
    """

    is_differentiable = False
    full_state_update = False

    values: list[torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    @abstractmethod
    def _task(self, gt: np.ndarray, score: np.ndarray) -> float:
        """The metric of one task."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add tasks.

        Args:
            preds: scores, [models] for one task or [tasks, models].
            target: ground-truth accuracies of the same shape, NaN where a model is unmeasured.
        """
        if preds.shape != target.shape or preds.ndim not in (1, 2):
            raise ValueError(f"preds and target must share a shape [M] or [B, M], got {preds.shape} and {target.shape}")
        scores = torch.atleast_2d(preds).detach().cpu().double().numpy()
        gts = torch.atleast_2d(target).detach().cpu().double().numpy()
        values = [self._task(gt, score) for gt, score in zip(gts, scores, strict=True)]
        self.values.append(torch.tensor(values, dtype=self.dtype, device=self.device))

    def compute(self) -> torch.Tensor:
        """Mean of the per-task values over the tasks seen."""
        return dim_zero_cat(self.values).mean()


class WeightedTau(_TaskMean):
    """Weighted Kendall tau (``weighted_tau``) averaged over tasks.

    Args:
        variant: "rank_none" (Model Spider's table) or "symmetric" (scipy's default).
        kwargs: passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, variant: str = "rank_none", **kwargs: Any) -> None:
        if variant not in WTAU_VARIANTS:
            raise ValueError(f"unknown weighted tau variant {variant!r}; use one of {WTAU_VARIANTS}")
        super().__init__(**kwargs)
        self.variant = variant

    def _task(self, gt: np.ndarray, score: np.ndarray) -> float:
        return weighted_tau(gt, score, self.variant)


class KendallTau(_TaskMean):
    """Kendall tau-b (``kendall_tau``) averaged over tasks."""

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def _task(self, gt: np.ndarray, score: np.ndarray) -> float:
        return kendall_tau(gt, score)


class NDCG(_TaskMean):
    """NDCG@k (``ndcg_at_k``) averaged over tasks.

    Args:
        k: number of top-ranked models that count per task.
        kwargs: passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, k: int = 3, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        super().__init__(**kwargs)
        self.k = k

    def _task(self, gt: np.ndarray, score: np.ndarray) -> float:
        return ndcg_at_k(gt, score, self.k)


class Top1Regret(_TaskMean):
    """Top-1 regret (``top1_regret``, accuracy points) averaged over tasks."""

    higher_is_better = False
    plot_lower_bound = 0.0

    def _task(self, gt: np.ndarray, score: np.ndarray) -> float:
        return top1_regret(gt, score)
