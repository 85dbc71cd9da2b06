"""Per-task ranking metrics against scipy and sklearn; the torchmetrics metrics that average them over tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, weightedtau
from sklearn.metrics import ndcg_score

from ranker.learn.metrics import (
    NDCG,
    KendallTau,
    Top1Regret,
    WeightedTau,
    kendall_tau,
    ndcg_at_k,
    top1_regret,
    weighted_tau,
)

M = 8


def _random_tasks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tie-free ground truth (accuracies) and scores, one task per row."""
    rng = np.random.default_rng(seed)
    return rng.uniform(50, 95, size=(n, M)), rng.normal(size=(n, M))


@pytest.mark.parametrize("seed", range(5))
def test_taus_match_scipy(seed: int) -> None:
    (gt,), (score,) = _random_tasks(1, seed)
    assert weighted_tau(gt, score, "rank_none") == pytest.approx(weightedtau(gt, score, rank=None).statistic)
    assert weighted_tau(gt, score, "symmetric") == pytest.approx(weightedtau(gt, score, rank=True).statistic)
    assert kendall_tau(gt, score) == pytest.approx(kendalltau(gt, score).statistic)


def test_kendall_tau_is_tau_b_under_ties_and_zero_for_a_constant_score() -> None:
    gt, score = np.array([70.0, 70.0, 80.0, 90.0, 60.0]), np.array([1.0, 2.0, 2.0, 3.0, 0.0])
    assert kendall_tau(gt, score) == pytest.approx(kendalltau(gt, score, variant="b").statistic)
    assert kendall_tau(gt, np.ones(5)) == 0.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, M, M + 2])
def test_ndcg_matches_sklearn_on_shifted_accuracies(seed: int, k: int) -> None:
    (gt,), (score,) = _random_tasks(1, seed)
    expected = ndcg_score([gt - gt.min()], [score], k=k, ignore_ties=True)
    assert ndcg_at_k(gt, score, k) == pytest.approx(expected)
    assert ndcg_at_k(gt, score, k) == pytest.approx(ndcg_score([gt - gt.min()], [score], k=k))


def test_ndcg_by_hand_and_ties_keep_the_given_order() -> None:
    gt = np.array([70.0, 90.0, 80.0])  # gains 0, 20, 10
    ideal = 20 + 10 / np.log2(3)
    assert ndcg_at_k(gt, np.array([3.0, 2.0, 1.0]), 2) == pytest.approx(20 / np.log2(3) / ideal)
    assert ndcg_at_k(gt, np.array([0.0, 2.0, 1.0]), 1) == pytest.approx(1.0)
    assert ndcg_at_k(gt, np.array([0.0, 2.0, 1.0]), 2) == pytest.approx(1.0)
    # The first listed of tied models ranks first: model 2 before model 1 here, model 1 before model 2 below.
    assert ndcg_at_k(gt[[0, 2, 1]], np.array([0.0, 1.0, 1.0]), 1) == pytest.approx(0.5)
    assert ndcg_at_k(gt, np.array([0.0, 1.0, 1.0]), 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 1"):
        ndcg_at_k(gt, np.arange(3.0), 0)


def test_top1_regret_by_hand() -> None:
    gt = np.array([70.0, 85.0, 90.0, 60.0])
    assert top1_regret(gt, np.array([0.1, 0.9, 0.2, 0.0])) == pytest.approx(5.0)
    assert top1_regret(gt, np.array([0.1, 0.2, 0.3, 0.9])) == pytest.approx(30.0)
    assert top1_regret(gt, np.array([0.1, 0.2, 0.3, 0.0])) == 0.0


FUNCTIONS = {
    "wtau_rank_none": lambda gt, s: weighted_tau(gt, s, "rank_none"),
    "wtau_symmetric": lambda gt, s: weighted_tau(gt, s, "symmetric"),
    "kendall": kendall_tau,
    "ndcg3": lambda gt, s: ndcg_at_k(gt, s, 3),
    "regret": top1_regret,
}


@pytest.mark.parametrize("fn", FUNCTIONS.values(), ids=FUNCTIONS.keys())
def test_nan_ground_truth_is_skipped_and_nan_scores_where_measured_are_refused(fn) -> None:
    (gt,), (score,) = _random_tasks(1, seed=7)
    gt[[1, 4]] = np.nan
    score[1] = np.nan  # unmeasured model: its score does not matter
    kept = np.isfinite(gt)
    assert fn(gt, score) == pytest.approx(fn(gt[kept], score[kept]))
    score[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(gt, score)


METRICS = {
    "wtau_rank_none": (lambda: WeightedTau(), FUNCTIONS["wtau_rank_none"]),
    "wtau_symmetric": (lambda: WeightedTau("symmetric"), FUNCTIONS["wtau_symmetric"]),
    "kendall": (KendallTau, kendall_tau),
    "ndcg3": (NDCG, FUNCTIONS["ndcg3"]),
    "regret": (Top1Regret, top1_regret),
}


@pytest.mark.parametrize(("make", "fn"), METRICS.values(), ids=METRICS.keys())
def test_metric_is_the_mean_of_the_per_task_values(make, fn) -> None:
    gt, score = _random_tasks(6, seed=3)
    gt[0, 2] = np.nan
    target, preds = torch.from_numpy(gt), torch.from_numpy(score)
    expected = np.mean([fn(g, s) for g, s in zip(gt, score, strict=True)])
    metric = make()
    metric.update(preds[:4], target[:4])
    metric.update(preds[4], target[4])  # one task as a 1-D row
    metric.update(preds[5:], target[5:])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    metric.reset()
    metric.update(preds[4], target[4])
    assert metric.compute().item() == pytest.approx(fn(gt[4], score[4]), abs=1e-6)


def test_metric_directions_and_perfect_and_reversed_rankings() -> None:
    assert WeightedTau.higher_is_better and KendallTau.higher_is_better and NDCG.higher_is_better
    assert not Top1Regret.higher_is_better
    target = torch.tensor([[70.0, 80.0, 90.0, 60.0, 85.0], [55.0, 50.0, 65.0, 75.0, 70.0]])
    perfect, reversed_ = target / 100, -target
    for variant in ("rank_none", "symmetric"):
        assert WeightedTau(variant)(perfect, target).item() == pytest.approx(1.0)
        assert WeightedTau(variant)(reversed_, target).item() == pytest.approx(-1.0)
    assert KendallTau()(perfect, target).item() == pytest.approx(1.0)
    assert KendallTau()(reversed_, target).item() == pytest.approx(-1.0)
    assert NDCG(k=3)(perfect, target).item() == pytest.approx(1.0)
    assert NDCG(k=3)(reversed_, target).item() < 0.5
    assert Top1Regret()(perfect, target).item() == 0.0
    assert Top1Regret()(reversed_, target).item() == pytest.approx((30.0 + 25.0) / 2)


def test_metric_refuses_bad_input_and_computing_before_any_task() -> None:
    with pytest.raises(ValueError, match="variant"):
        WeightedTau("rank_true")
    with pytest.raises(ValueError, match="at least 1"):
        NDCG(k=0)
    with pytest.raises(ValueError, match="shape"):
        KendallTau().update(torch.zeros(2, 3), torch.zeros(3))
    with pytest.warns(UserWarning, match="before the ``update``"), pytest.raises(ValueError, match="No samples"):
        KendallTau().compute()
