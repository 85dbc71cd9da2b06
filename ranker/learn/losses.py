"""Listwise ranking losses for a learned ranker: predicted scores over the zoo against ground-truth accuracies.

Every loss takes ``scores`` [B, M] (predicted score per model per task, higher = better) and ``targets`` [B, M]
(ground-truth accuracy in points, NaN where the (task, model) pair was never measured). A model with a NaN target
is not part of that task's list; the loss is the mean over the tasks (rows) with at least two models left, and a
batch without such a row raises ValueError. Masked models get zero gradient.

Examples:
    >>> scores = torch.zeros(2, 3, requires_grad=True)
    >>> targets = torch.tensor([[90.0, 70.0, float("nan")], [60.0, 60.0, 80.0]])
    >>> get("listmle")(scores, targets).backward()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _valid_rows(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Checks the shapes and keeps the rows with at least two valid models.

    Returns:
        The kept rows of ``scores`` and ``targets``, and their mask of valid (non-NaN target) models.
    """
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both be [tasks, models], got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    mask = ~torch.isnan(targets)
    rows = mask.sum(dim=1) >= 2
    if not rows.any():
        raise ValueError("no task in the batch has ground truth for at least two models")
    return scores[rows], targets[rows], mask[rows]


def _plackett_luce_terms(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-model terms of the tie-aware Plackett-Luce negative log-likelihood, 0 for masked models.

    The term of model i is ``logsumexp(s_j for valid j with t_j <= t_i) - s_i``. The comparison is pairwise
    ([B, M, M]), which is cheap for zoo-sized lists and needs no sort, so the order of tied models cannot matter.
    """
    # in_set[b, i, j]: j is in the denominator of i's term. NaN targets compare False, so masked models are left
    # out of every denominator but their own (the diagonal): a masked model's term is s_i - s_i = 0, with zero
    # gradient, and no denominator is empty, so no -inf - -inf reaches the forward or backward pass.
    eye = torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    in_set = (targets.unsqueeze(1) <= targets.unsqueeze(2)) | eye
    denominators = torch.logsumexp(scores.unsqueeze(1).masked_fill(~in_set, float("-inf")), dim=2)
    return denominators - scores


def listmle(scores: Tensor, targets: Tensor) -> Tensor:
    """ListMLE (Xia et al. 2008): the Plackett-Luce negative log-likelihood of the ground-truth order.

    With the valid models sorted by target, descending, a task's loss is
    ``sum_i [logsumexp(s_k for k at positions i..n-1) - s_i]`` (the last position contributes 0).

    Ties use Breslow's approximation, as in the Cox partial likelihood: the denominator of model i holds every
    model that is not strictly better than i, so tied models sit in each other's denominators. The loss is then
    a function of the set of models and their targets, independent of how tied models happen to be ordered (the
    exact average over tie orders is intractable). Without ties it is the ListMLE above.

    Args:
        scores: predicted score per model per task, [B, M].
        targets: ground-truth accuracy per model per task, [B, M], NaN where unmeasured.

    Returns:
        Scalar: the mean of the task losses over tasks with at least two valid models.
    """
    scores, targets, _ = _valid_rows(scores, targets)
    return _plackett_luce_terms(scores, targets).sum(dim=1).mean()


def top_weighted_listmle(scores: Tensor, targets: Tensor) -> Tensor:
    """Position-aware ListMLE (Lan et al. 2014, "Position-Aware ListMLE: A Sequential Learning Process for Ranking").

    The ListMLE term at ground-truth position i (0-based) is weighted by the hyperbolic discount
    ``w_i = 1 / (i + 1)``, the default weigher of the weighted Kendall tau (Vigna 2015) this ranker is evaluated
    with, so mistakes among the best models cost most. A task's weights are scaled to sum to its number of
    valid models n (multiplied by ``n / H_n``, H the harmonic number), which keeps the loss on ListMLE's scale.
    Tied models share the mean discount of the positions their tie group spans, so, like :func:`listmle` (whose
    Breslow tie handling this uses), the loss does not depend on the order of tied models.

    Args:
        scores: predicted score per model per task, [B, M].
        targets: ground-truth accuracy per model per task, [B, M], NaN where unmeasured.

    Returns:
        Scalar: the mean of the task losses over tasks with at least two valid models.
    """
    scores, targets, mask = _valid_rows(scores, targets)
    terms = _plackett_luce_terms(scores, targets)
    # Model i's tie group spans positions better_i .. better_i + tied_i - 1 (NaN compares False: 0 for masked).
    better = (targets.unsqueeze(1) > targets.unsqueeze(2)).sum(dim=2)
    tied = (targets.unsqueeze(1) == targets.unsqueeze(2)).sum(dim=2).clamp(min=1)
    positions = torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype, device=scores.device)
    harmonic = torch.cat([positions.new_zeros(1), torch.cumsum(1.0 / positions, dim=0)])  # harmonic[k] = H_k
    weights = (harmonic[better + tied] - harmonic[better]) / tied
    n = mask.sum(dim=1, keepdim=True)
    weights = weights * n / harmonic[n]
    return (weights * terms).sum(dim=1).mean()


def listnet(scores: Tensor, targets: Tensor, *, temperature: float = 10.0) -> Tensor:
    """ListNet (Cao et al. 2007): cross-entropy between the top-one distributions of targets and scores.

    A task's loss is ``-sum_i softmax(t / temperature)_i * log_softmax(s)_i`` over its valid models.

    Args:
        scores: predicted score per model per task, [B, M].
        targets: ground-truth accuracy per model per task, [B, M], NaN where unmeasured.
        temperature: in accuracy points; the default 10 makes a 10-point lead e (about 2.7) times as likely to
            be top-one, so the target distribution separates models that differ by several points without
            collapsing onto the single best of a zoo whose accuracies span tens of points.

    Returns:
        Scalar: the mean of the task losses over tasks with at least two valid models.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scores, targets, mask = _valid_rows(scores, targets)
    target_logits = (targets / temperature).masked_fill(~mask, float("-inf"))
    target_probs = torch.exp(target_logits - torch.logsumexp(target_logits, dim=1, keepdim=True))
    log_probs = scores - torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=1, keepdim=True)
    # A masked model has target probability 0 and a finite log_probs entry: it adds 0 and gets 0 gradient.
    return -(target_probs * log_probs).sum(dim=1).mean()


LOSSES: dict[str, Callable[..., Tensor]] = {
    "listmle": listmle,
    "listnet": listnet,
    "top_weighted_listmle": top_weighted_listmle,
}


def get(name: str) -> Callable[..., Tensor]:
    """The loss registered under ``name`` in :data:`LOSSES`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {sorted(LOSSES)}")
    return LOSSES[name]
