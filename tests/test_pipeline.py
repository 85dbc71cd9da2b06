"""The pipeline's recall for a zoo larger than the recall size, subset scoring, and the MIPS query's maths."""

from __future__ import annotations

import numpy as np
import torch

from ranker.serve import export
from ranker.serve.pipeline import AccuracyGaps, Pipeline, best_models
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
    assert pipe.recall.token_index is not None  # 18 models > 8: recall is needed
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


def test_accuracy_gaps_follow_the_nearest_tasks_and_their_intervals_come_from_other_groups() -> None:
    """Two kinds of history: on 'grey' tasks model 0 is best (model 1 10 points behind), on 'colour' tasks model 1
    (model 0 20 behind). A new task near the colour ones gets the colour gaps; grouped, the intervals hold what
    predicting one kind from the other would miss."""
    rng = np.random.default_rng(0)
    grey, colour = np.eye(8)[0], np.eye(8)[1]
    summary = torch.tensor(np.stack([grey + 0.01 * rng.normal(size=8) for _ in range(6)]
                                    + [colour + 0.01 * rng.normal(size=8) for _ in range(6)]), dtype=torch.float32)
    performance = torch.tensor([[90.0, 80.0]] * 6 + [[70.0, 90.0]] * 6)
    ungrouped = AccuracyGaps(summary, performance, ["finetune"] * 12)
    gap, low, high = ungrouped.predict(torch.tensor(colour, dtype=torch.float32))
    torch.testing.assert_close(gap, torch.tensor([-20.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(high - low, torch.zeros(2, dtype=torch.float64))  # neighbours of a kind agree
    grouped = AccuracyGaps(summary, performance, ["finetune"] * 12, ["grey"] * 6 + ["colour"] * 6)
    gap, low, high = grouped.predict(torch.tensor(colour, dtype=torch.float32))
    assert low[0] <= -20 <= high[0] and (high - low).min() >= 10  # each task was predicted from the other kind
    assert (high <= 0).all()  # no model beats the best
