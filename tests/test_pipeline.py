"""The pipeline's recall for a zoo larger than the recall size, subset scoring, and the MIPS query's maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ranker.serve import export
from ranker.serve.pipeline import Pipeline, PositionGaps, best_models
from ranker.tasks import benchmark as bm
from ranker.tasks import stats


def _test_task_prototypes() -> tuple[str, torch.Tensor]:
    bench = bm.load_benchmark()
    task = bench.task_ids("test")[0]
    return task, bench.task_stats()[task][0]


def test_a_large_zoo_is_recalled_from_nearest_tasks_then_model_tokens() -> None:
    exported = export.load()
    exported.config.run.recall.tasks, exported.config.run.recall.per_task, exported.config.run.recall.size = 2, 3, 8
    pipe = Pipeline(exported, k=0)
    assert pipe.recall.token_index is not None  # 16 models > 8: recall is needed
    task, prototypes = _test_task_prototypes()
    # prototypes as features, one sample per class: the pipeline's prototypes are then exactly these
    result = pipe.rank_features(task, prototypes, np.arange(len(prototypes)))
    models = [r.model for r in result.ranking]
    assert len(models) == len(set(models)) == 8
    # the nearest historical tasks are the brute-force cosine nearest summaries
    summary = stats.summary_vector(prototypes)
    cosine = torch.nn.functional.cosine_similarity(exported.summary, summary[None])
    nearest = cosine.argsort(descending=True)[:2].tolist()
    assert [n.task for n in result.neighbours] == [exported.task_ids[t] for t in nearest]
    np.testing.assert_allclose([n.similarity for n in result.neighbours], cosine[nearest].numpy(), atol=1e-5)
    # their best measured models are all candidates; MIPS over model tokens fills the rest, best first
    from_tasks = {exported.config.models[m] for t in nearest
                  for m in exported.performance[t].nan_to_num(-1).argsort(descending=True)[:3].tolist()}
    assert from_tasks <= set(models)
    query = exported.net.recall_query(prototypes[None], torch.ones(1, len(prototypes), dtype=torch.bool))[0]
    by_token = [exported.config.models[m] for m in (exported.net.recall_keys() @ query).argsort(descending=True)]
    filled = [m for m in by_token if m not in from_tasks][: 8 - len(from_tasks)]
    assert set(models) == from_tasks | set(filled)
    # the candidates are ordered by the ranker's own scores
    scores = exported.net(prototypes[None], torch.ones(1, len(prototypes), dtype=torch.bool))[0].detach()
    assert models == sorted(models, key=lambda m: -scores[exported.config.models.index(m)])


def test_recall_query_is_the_score_gradient_at_the_mean_token() -> None:
    """score(t, m) = prior_m + scale x head(token_m) ≈ const + query · [token_m, prior_m] near the mean token."""
    torch.manual_seed(0)
    net = export.load().net.double()
    net.calibration.spider_scale.data.fill_(0.7)
    _, prototypes = _test_task_prototypes()
    prototypes, mask = prototypes[None].double(), torch.ones(1, len(prototypes), dtype=torch.bool)
    query, dim = net.recall_query(prototypes, mask)[0], net.tokens.weight.shape[1]
    tokens = net.tokenizer(prototypes, mask)
    mean = net.tokens.weight.mean(0, keepdim=True)
    for _ in range(3):
        u, eps = torch.randn_like(mean), 1e-6
        diff = (net.head(mean + eps * u, tokens, mask) - net.head(mean - eps * u, tokens, mask)) / (2 * eps)
        torch.testing.assert_close(0.7 * diff.detach()[0, 0], (query[:dim] * u[0]).sum(), rtol=1e-6, atol=1e-9)
    assert query[dim] == 1 and torch.equal(net.recall_keys()[:, dim], net.calibration.prior.detach())


def test_best_models_skip_unmeasured_ones() -> None:
    nan = float("nan")
    performance = torch.tensor([[0.2, nan, 0.9, 0.5], [nan, nan, 0.1, nan]])
    assert best_models(performance, 3).tolist() == [[2, 3, 0], [2, -1, -1]]


def test_position_gaps_fall_down_the_ranking_and_cover_what_a_new_group_does() -> None:
    """Three groups whose tasks agree on the order (model 0 best, 1 about 10 points behind, 2 about 20) give gaps by
    place near (0, -10, -20), non-increasing, each inside its interval; a fourth group that reverses the order
    widens the intervals, since a new group may be like it."""
    rng = np.random.default_rng(0)
    alike = [[90.0, 80.0, 70.0] + rng.normal(0, 1, 3) for _ in range(12)]
    groups = [g for g in ("a", "b", "c") for _ in range(4)]
    gaps = PositionGaps(torch.tensor(np.array(alike)), ["finetune"] * 12, groups)
    mid, low, high = gaps.predict(3)
    np.testing.assert_allclose(mid, [0.0, -10.0, -20.0], atol=2.5)
    assert (np.diff(mid) <= 0).all() and (low <= mid).all() and (mid <= high).all() and (high <= 0).all()
    reversed_ = [[70.0, 80.0, 90.0] + rng.normal(0, 1, 3) for _ in range(4)]
    wider = PositionGaps(torch.tensor(np.array(alike + reversed_)), ["finetune"] * 16, groups + ["d"] * 4)
    assert (np.diff(wider.predict(3)[0]) <= 0).all()
    assert (wider.high - wider.low).mean() > (gaps.high - gaps.low).mean() + 5 and wider.level <= gaps.level
    assert np.isnan(gaps.predict(5)[0][3:]).all()  # places past the history's zoo (cold members) state nothing
    with pytest.raises(ValueError, match="two groups or more"):
        PositionGaps(torch.tensor(np.array(alike)), ["finetune"] * 12, ["a"] * 12)
