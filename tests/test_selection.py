"""What a fit serves with (ranker/learn/selection.py): the spider factor, then k."""

from __future__ import annotations

from ranker.learn import selection


def test_the_model_spider_factor_is_chosen_over_every_served_depth_then_k_at_it() -> None:
    # M = 4: depths 0..2 count. Factor 0.25 holds the single best cell (k=2) but is worse at k=0 and k=1; the
    # factor serves every depth, so 0.5 wins (means 0.540 vs 0.573) and k is its best depth. Depths above M // 2
    # do not count, however good.
    sweeps = {0.25: [0.50, 0.52, 0.60, 0.55, 0.90], 0.5: [0.56, 0.57, 0.59, 0.58, 0.40]}
    assert selection.choose(sweeps) == (0.5, 2)
    assert selection.choose({0.0: [0.5, 0.5, 0.5], 1.0: [0.5, 0.5, 0.5]}) == (0.0, 0)  # ties: smaller factor, smaller k
