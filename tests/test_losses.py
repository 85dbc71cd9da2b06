"""Listwise ranking losses against plain-Python formulas, and their tie, mask and gradient behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ranker.learn import losses

NAN = float("nan")
ALL = sorted(losses.LOSSES)


def _f64(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _ref_listmle(s: list[float], t: list[float], top_weighted: bool = False) -> float:
    """ListMLE by a loop over ground-truth positions, Breslow ties, optional hyperbolic position weights."""
    pairs = sorted(((ti, si) for si, ti in zip(s, t, strict=True) if not math.isnan(ti)), reverse=True)
    n = len(pairs)
    norm = n / sum(1 / (p + 1) for p in range(n))
    loss = 0.0
    for i, (ti, si) in enumerate(pairs):
        denominator = math.log(sum(math.exp(sk) for tk, sk in pairs if tk <= ti))
        weight = 1.0
        if top_weighted:
            group = [p for p, (tp, _) in enumerate(pairs) if tp == ti]
            weight = norm * sum(1 / (p + 1) for p in group) / len(group)
        loss += weight * (denominator - si)
    return loss


def _ref_listnet(s: list[float], t: list[float], temperature: float = 10.0) -> float:
    valid = [(si, ti) for si, ti in zip(s, t, strict=True) if not math.isnan(ti)]
    z_t = sum(math.exp(ti / temperature) for _, ti in valid)
    log_z_s = math.log(sum(math.exp(si) for si, _ in valid))
    return -sum(math.exp(ti / temperature) / z_t * (si - log_z_s) for si, ti in valid)


REFERENCES = {
    "listmle": _ref_listmle,
    "top_weighted_listmle": lambda s, t: _ref_listmle(s, t, top_weighted=True),
    "listnet": _ref_listnet,
}


def _random_rows(rng: np.random.Generator, n_rows: int, m: int, ties: bool, nans: bool) -> tuple[list, list]:
    """Rows of random scores and accuracies (coarse grid when ``ties``), some NaN when ``nans``, >= 2 valid."""
    scores, targets = [], []
    for _ in range(n_rows):
        t = (rng.integers(0, 3, m) * 10.0 + 60.0) if ties else rng.uniform(20.0, 100.0, m)
        if nans:
            t[rng.choice(m, rng.integers(0, m - 1), replace=False)] = NAN
        scores.append(rng.normal(0.0, 2.0, m).tolist())
        targets.append(t.tolist())
    return scores, targets


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("nans", [False, True])
def test_matches_plain_python_formula(name: str, ties: bool, nans: bool) -> None:
    rng = np.random.default_rng([ALL.index(name), ties, nans])
    for m in range(2, 7):
        scores, targets = _random_rows(rng, 4, m, ties, nans)
        expected = [REFERENCES[name](s, t) for s, t in zip(scores, targets, strict=True)]
        for s, t, e in zip(scores, targets, expected, strict=True):
            got = losses.get(name)(_f64([s]), _f64([t]))
            assert got.item() == pytest.approx(e, abs=1e-6)
        batched = losses.get(name)(_f64(scores), _f64(targets))
        assert batched.item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)
        float32 = losses.get(name)(torch.tensor(scores), torch.tensor(targets))
        assert float32.dtype == torch.float32
        assert float32.item() == pytest.approx(batched.item(), rel=1e-5, abs=1e-5)


def test_two_item_listmle_is_logistic() -> None:
    best, worst = 0.3, 1.1
    got = losses.listmle(torch.tensor([[worst, best]]), torch.tensor([[55.0, 80.0]]))
    assert got.item() == pytest.approx(-math.log(1 / (1 + math.exp(-(best - worst)))), abs=1e-6)


def test_tied_pair_uses_breslow_denominators() -> None:
    a, b = 0.5, -1.0
    got = losses.listmle(_f64([[a, b]]), _f64([[70.0, 70.0]]))
    assert got.item() == pytest.approx(2 * math.log(math.exp(a) + math.exp(b)) - a - b, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_order_of_tied_models_does_not_matter(name: str) -> None:
    scores = _f64([[0.2, 1.5, -0.7, 0.9, 0.1, -1.2]])
    targets = _f64([[80.0, 70.0, 80.0, 70.0, 90.0, 70.0]])
    base = losses.get(name)(scores, targets)
    # Swapping two tied models' columns changes their order under any sort of the targets (stable or not).
    for perm in ([2, 1, 0, 3, 4, 5], [0, 5, 2, 1, 4, 3], [0, 3, 2, 5, 4, 1]):
        assert losses.get(name)(scores[:, perm], targets[:, perm]).item() == pytest.approx(base.item(), abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_nan_target_is_the_same_as_a_deleted_model(name: str) -> None:
    scores = torch.tensor([[0.4, -0.3, 2.0, 0.8, -1.0]])
    targets = torch.tensor([[75.0, NAN, 60.0, 90.0, NAN]])
    keep = [0, 2, 3]
    expected = losses.get(name)(scores[:, keep], targets[:, keep])
    assert losses.get(name)(scores, targets).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_rows_with_fewer_than_two_models_are_left_out(name: str) -> None:
    scores = torch.tensor([[0.4, -0.3, 2.0], [5.0, -5.0, 1.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([[75.0, 50.0, 60.0], [NAN, 40.0, NAN], [NAN, NAN, NAN]])
    expected = losses.get(name)(scores[:1], targets[:1])
    assert losses.get(name)(scores, targets).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="at least two models"):
        losses.get(name)(scores[1:], targets[1:])


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="tasks, models"):
        losses.listmle(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite_and_zero_for_masked_models(name: str) -> None:
    scores = torch.tensor([[0.4, -0.3, 2.0, 0.8], [1.0, 0.0, -1.0, 3.0]], dtype=torch.float64, requires_grad=True)
    targets = _f64([[75.0, NAN, 60.0, 60.0], [NAN, 40.0, NAN, 50.0]])
    losses.get(name)(scores, targets).backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[torch.isnan(targets)] == 0).all()
    assert (scores.grad[~torch.isnan(targets)] != 0).all()


@pytest.mark.parametrize("name", ALL)
def test_gradient_descent_learns_the_order(name: str) -> None:
    targets = torch.tensor([[62.0, 91.0, 48.0, 77.0, 85.0, 30.0], [NAN, 55.0, 70.0, NAN, 40.0, 66.0]])
    scores = torch.zeros_like(targets, requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=0.1)
    history = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = losses.get(name)(scores, targets)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < history[0] - 0.1
    for s, t in zip(scores.detach(), targets, strict=True):
        valid = ~torch.isnan(t)
        assert torch.argsort(s[valid]).tolist() == torch.argsort(t[valid]).tolist()


@pytest.mark.parametrize("name", ALL)
def test_correct_order_beats_reversed_order(name: str) -> None:
    targets = torch.tensor([[62.0, 91.0, 48.0, 77.0, NAN, 30.0]])
    scores = torch.nan_to_num(targets) / 10
    assert losses.get(name)(scores, targets) < losses.get(name)(-scores, targets)


def test_listnet_temperature_is_used() -> None:
    s, t = [0.1, 0.7, -0.4], [80.0, 65.0, 72.0]
    got = losses.listnet(_f64([s]), _f64([t]), temperature=3)
    assert got.item() == pytest.approx(_ref_listnet(s, t, temperature=3.0), abs=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        losses.listnet(torch.tensor([s]), torch.tensor([t]), temperature=0.0)


def test_registry() -> None:
    assert set(losses.LOSSES) == {"listmle", "listnet", "top_weighted_listmle"}
    assert losses.get("listmle") is losses.listmle
    with pytest.raises(ValueError, match="listnet"):
        losses.get("nope")
