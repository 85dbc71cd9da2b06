"""Ranker v2's network (ranker/learn/modelspider.py): invariances, specific tokens, re-ranking, the calibrated terms
and cold models."""

from __future__ import annotations

import torch

from ranker.learn.modelspider import ModelConfig, Ranker, RankerDims


def _net(models: int = 4, dims: tuple[int, ...] = (8, 16, 8, 12), general: int = 10,
         calibrated: bool = False) -> Ranker:
    """Model Spider's network alone by default (its mechanics); ``calibrated`` adds Ranker v2's terms."""
    torch.manual_seed(0)
    return Ranker(RankerDims(models, general, list(dims)), ModelConfig(dim=16, dropout=0.0, calibrated=calibrated)
                  ).eval()


def test_scores_ignore_class_order_and_padding() -> None:
    net = _net()
    protos = torch.randn(1, 3, 10)
    scores = net(protos, torch.ones(1, 3, dtype=torch.bool))
    shuffled = net(protos[:, [2, 0, 1]], torch.ones(1, 3, dtype=torch.bool))
    padded = net(torch.cat([protos, torch.randn(1, 2, 10)], 1), torch.tensor([[True, True, True, False, False]]))
    assert scores.shape == (1, 4)
    torch.testing.assert_close(shuffled, scores)
    torch.testing.assert_close(padded, scores)


def test_specific_tokens_change_only_their_models_score() -> None:
    net = _net()
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    specific = torch.randn(2, 4, 3, 16)
    has = torch.tensor([[False, True, False, False], [False, False, False, False]])
    plain, enriched = net(protos, mask), net(protos, mask, specific, has)
    changed = (plain - enriched).abs() > 1e-6
    assert changed.tolist() == has.tolist()


def test_scoring_a_subset_of_models_gives_their_columns_of_the_full_scores() -> None:
    net = _net()
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    specific, has = torch.randn(2, 4, 3, 16), torch.tensor([[True, False, True, True], [False, True, True, False]])
    models = torch.tensor([3, 1])
    with torch.no_grad():
        full = net(protos, mask, specific, has)
        subset = net(protos, mask, specific[:, models], has[:, models], models=models)
    torch.testing.assert_close(subset, full[:, models])


def test_rerank_reorders_only_the_top_k() -> None:
    net = _net(models=6, dims=(8,) * 6)
    protos, mask = torch.randn(3, 4, 10), torch.ones(3, 4, dtype=torch.bool)
    specific = torch.randn(3, 6, 4, 8)
    with torch.no_grad():  # as rerank runs (eval mode without autograd takes PyTorch's fused attention path)
        plain = net(protos, mask)
        full = net(protos, mask, specific, torch.ones(3, 6, dtype=torch.bool))
    assert torch.equal(net.rerank(protos, mask, specific, 0), plain)
    final = net.rerank(protos, mask, specific, 2)
    for b in range(3):
        top = plain[b].topk(2).indices
        order = final[b].argsort(descending=True)
        assert set(order[:2].tolist()) == set(top.tolist())  # the same two models stay on top ...
        assert order[0] == top[full[b, top].argmax()]  # ... in the order their specific tokens give
        rest = [i for i in plain[b].argsort(descending=True).tolist() if i not in top.tolist()]
        assert order[2:].tolist() == rest  # the others keep their plain order


def test_the_calibration_starts_at_the_least_squares_fit_of_its_own_form() -> None:
    targets = torch.tensor([[1.0, 2.0, 3.0], [10.0, float("nan"), 30.0], [5.0, 5.0, 5.0]])
    logme = torch.tensor([[0.0, 1.0, 2.0], [4.0, 2.0, 0.0], [float("nan")] * 3])
    net = _net(models=3, dims=(8,) * 3, calibrated=True)
    net.calibration.set_start(targets, logme)
    # the prior is the mean accuracy's order (the floor every ranking is held to), on a z scale: rows centred,
    # (-1, 0, 1), (-10, -, 10), (0, 0, 0), divided by their pooled spread over the 8 measured cells
    pooled = (202 / 8) ** 0.5
    torch.testing.assert_close(net.calibration.prior, torch.tensor([-11 / 3, 0.0, 11 / 3]) / pooled)
    # LogME z: row 0 (-z, 0, z), row 1 (z, 0, -z), row 2 unmeasured: each model's mean over its two rows is 0
    z = 1.5**0.5
    torch.testing.assert_close(net.calibration.evidence_offset, torch.zeros(3))
    # the slope through the origin over the five cells measured on both sides, of the target z (row 0 (-z, 0, z),
    # row 1 (-1, -, 1), row 2 no spread (0, 0, 0)) centred on each model's mean, on the centred LogME z
    target_z = torch.tensor([[-z, 0, z], [-1, 0, 1]])
    mean_z = torch.tensor([(-z - 1) / 3, 0.0, (z + 1) / 3])
    x, y = torch.tensor([[-z, 0, z], [z, 0, -z]]), target_z - mean_z
    y[1, 1] = x[1, 1] = 0  # model 1's accuracy on task 1 is unmeasured
    torch.testing.assert_close(net.calibration.evidence_weight, (x * y).sum() / (x * x).sum())


def test_a_fresh_calibrated_ranker_says_the_prior_whatever_the_task_until_models_embed_it() -> None:
    net = _net(calibrated=True)
    # models 1 and 3 trade places between tasks, and their LogME follows: the fitted weight is positive
    net.calibration.set_start(torch.tensor([[3.0, 1.0, 4.0, 2.0], [3.0, 2.0, 4.0, 1.0], [3.0, 1.0, 4.0, 2.0]]),
                              torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]]))
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    assert net(protos, mask).argsort(1, descending=True).tolist() == [[2, 0, 3, 1]] * 2
    assert net.calibration.evidence_weight > 0
    # embedded, model 1's LogME now above its training mean and model 3's below: model 1 passes model 3
    specific, has = torch.randn(2, 4, 3, 16), torch.ones(2, 4, dtype=torch.bool)
    moved = net(protos, mask, specific, has, evidence=torch.tensor([[0.0, 3.0, 2.0, 1.0]] * 2))
    plain = net(protos, mask, specific, has)
    assert (plain[:, 3] > plain[:, 1]).all() and (moved[:, 1] > moved[:, 3]).all()


def test_evidence_moves_only_embedded_models_and_its_scale_does_not_matter() -> None:
    net = _net(calibrated=True)
    with torch.no_grad():
        net.calibration.evidence_weight.fill_(1.0)
    protos, mask = torch.randn(1, 3, 10), torch.ones(1, 3, dtype=torch.bool)
    specific, has = torch.randn(1, 4, 3, 16), torch.tensor([[True, True, True, False]])
    logme = torch.tensor([[0.5, 0.9, 0.1, 7.0]])
    with torch.no_grad():
        plain = net(protos, mask, specific, has)
        moved = net(protos, mask, specific, has, evidence=logme)
        rescaled = net(protos, mask, specific, has, evidence=10 * logme - 3)
    z = (logme[0, :3] - logme[0, :3].mean()) / logme[0, :3].std(unbiased=False)
    torch.testing.assert_close((moved - plain)[0], torch.cat([z, torch.zeros(1)]))
    torch.testing.assert_close(rescaled, moved)


def test_a_cold_model_borrows_its_nearest_architectures_token_and_prior_and_changes_no_other_score() -> None:
    net = _net(calibrated=True)
    with torch.no_grad():
        net.calibration.prior.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        net.calibration.spider_scale.fill_(0.7)
    trained = torch.eye(4)  # four unrelated architectures; the new one is the third's
    cold = net.with_cold_models(trained, torch.eye(4)[2:3], [24])
    assert cold.dims.num_models == 5 and cold.dims.model_dims[-1] == 24
    torch.testing.assert_close(cold.tokens.weight[4], net.tokens.weight[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(cold.calibration.prior[4], torch.tensor(2.0), atol=1e-5, rtol=0)
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        before, after = net(protos, mask), cold(protos, mask)
    torch.testing.assert_close(after[:, :4], before)
    torch.testing.assert_close(after[:, 4], before[:, 2], atol=1e-4, rtol=0)
