"""Ranking metrics against scipy and the field's published numbers; the evaluation harness on a tiny benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import weightedtau

from data import build_history
from ranker import evaluate, transfer
from ranker.learn import lit
from ranker.learn.metrics import top1_regret, weighted_tau
from ranker.learn.modelspider import Ranker
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks.history import Record
from ranker.zoo.manifest import load_manifest


def test_weighted_tau_variants_match_scipy_and_differ() -> None:
    rng = np.random.default_rng(0)
    gt, score = rng.normal(size=10), rng.normal(size=10)
    assert weighted_tau(gt, score, "rank_none") == pytest.approx(weightedtau(gt, score, rank=None)[0])
    assert weighted_tau(gt, score, "symmetric") == pytest.approx(weightedtau(gt, score)[0])
    assert weighted_tau(gt, score, "rank_none") != pytest.approx(weighted_tau(gt, score, "symmetric"))
    assert weighted_tau(gt, gt * 3 + 1) == pytest.approx(1.0)


def test_nan_ground_truth_is_skipped_and_nan_scores_are_refused() -> None:
    gt = np.array([70.0, np.nan, 80.0, 90.0])
    assert weighted_tau(gt, np.array([1.0, np.nan, 2.0, 3.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="NaN"):
        weighted_tau(gt, np.array([1.0, 5.0, np.nan, 3.0]))
    assert weighted_tau(gt, np.ones(4)) == 0.0  # a constant score ranks nothing
    with pytest.raises(ValueError, match="not all equal"):
        weighted_tau(np.full(3, 80.0), np.arange(3.0))


def test_top1_regret_is_the_accuracy_lost_by_trusting_the_top_score() -> None:
    gt = np.array([70.0, 85.0, 90.0])
    assert top1_regret(gt, np.array([0.1, 0.9, 0.2])) == pytest.approx(5.0)
    assert top1_regret(gt, np.array([0.1, 0.2, 0.3])) == 0.0


def _ground_truth(bench: bm.Benchmark, probe: bool = True) -> None:
    """Planted history: the first model fine-tunes better (90 vs 70) and probes better on the training task."""
    for model, ft, lp in zip(bench.models, (90.0, 70.0), (80.0, 60.0), strict=True):
        bench.history.add(Record("d2-inv", model, "finetune", "top1_accuracy", ft))
        if probe:
            bench.history.add(Record("d3", model, "linear_probe", "top1_accuracy", lp))
    bench.history.save(bench.root / "history.csv")


def test_evaluate_writes_every_method_and_says_what_it_skipped(tiny_bench: bm.Benchmark, tmp_path: Path) -> None:
    _ground_truth(tiny_bench)
    result = evaluate.evaluate(str(tiny_bench.root))
    assert result["n_test_tasks"] == 1
    assert set(result["methods"]) == set(transfer.names()) - {"leep", "nce"} | {"prior"}
    assert set(result["skipped"]) == {"leep", "nce", "ranker", "ranker_rerank"}  # the shipped ranker: another zoo
    assert "offline-default" in result["skipped"]["ranker"]
    # The prior ranks by mean training-task probe accuracy: here it picks the fine-tuning winner.
    assert result["prior_kind"] == "linear_probe"
    assert result["methods"]["prior"]["regret"] == 0.0 and result["methods"]["prior"]["wtau"] == pytest.approx(1.0)
    for m in result["methods"].values():
        assert -1 <= m["wtau"] <= 1 and m["regret"] in (0.0, 20.0) and m["seconds_per_task"] >= 0
        assert m["n_tasks"] == 1
    json.dumps(result)  # the JSON contract: plain numbers and strings only
    assert "| prior |" in evaluate.markdown(result)
    evaluate.plot(result, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_the_ranker_is_evaluated_beside_the_estimators_with_its_extraction_costs(tiny_bench: bm.Benchmark,
                                                                                 tmp_path: Path) -> None:
    _ground_truth(tiny_bench)
    build_history.build_stats(tiny_bench)
    dims = lit.ranker_dims(tiny_bench)
    zoo = load_manifest(tiny_bench.manifest_path)
    config = export.ExportConfig(dims=dims, models=tiny_bench.models, general_encoder=tiny_bench.models[0], rerank_k=1)
    folder = export.export(tmp_path / "ck", Ranker(dims).eval(), config, zoo, ["t"], ["finetune"], torch.ones(1, 2),
                           torch.zeros(1, 2))
    result = evaluate.evaluate(str(tiny_bench.root), ["logme"], folder)
    assert {"ranker", "ranker_rerank", "logme", "prior"} == set(result["methods"])
    ranker, rerank, logme = (result["methods"][n] for n in ("ranker", "ranker_rerank", "logme"))
    # the ranker needs the general encoder's features; re-ranking adds its top model's (here the same model or
    # the other one); LogME needs every model's
    assert 0 < ranker["seconds_per_task_with_features"] - ranker["seconds_per_task"]
    assert ranker["seconds_per_task_with_features"] - ranker["seconds_per_task"] <= \
        rerank["seconds_per_task_with_features"] - rerank["seconds_per_task"] + 1e-9
    assert rerank["seconds_per_task_with_features"] - rerank["seconds_per_task"] <= \
        logme["seconds_per_task_with_features"] - logme["seconds_per_task"] + 1e-9
    assert set(result["per_task"]["ranker"]) == {"d2-inv"}


def test_the_prior_prefers_training_task_finetune_history_to_probes(tiny_bench: bm.Benchmark) -> None:
    _ground_truth(tiny_bench)
    for model, ft in zip(tiny_bench.models, (50.0, 60.0), strict=True):  # fine-tuning history says the opposite
        tiny_bench.history.add(Record("d3", model, "finetune", "top1_accuracy", ft))
    tiny_bench.history.save(tiny_bench.root / "history.csv")
    result = evaluate.evaluate(str(tiny_bench.root), ["logme"])
    assert result["prior_kind"] == "finetune"
    assert result["methods"]["prior"]["wtau"] == pytest.approx(-1.0) and result["methods"]["prior"]["regret"] == 20.0


def test_leep_and_nce_run_on_a_zoo_whose_members_ship_heads(headed_bench: bm.Benchmark) -> None:
    _ground_truth(headed_bench, probe=False)
    result = evaluate.evaluate(str(headed_bench.root), ["leep", "nce", "logme"])
    assert set(result["methods"]) == {"leep", "nce", "logme"}
    assert result["skipped"]["prior"] == "needs finetune or linear-probe history of every model on training tasks"
    for name in ("leep", "nce"):
        assert result["methods"][name]["seconds_per_task"] > 0 and result["methods"][name]["n_tasks"] == 1


def test_evaluate_refuses_test_tasks_without_ground_truth_and_unknown_estimators(tiny_bench: bm.Benchmark) -> None:
    with pytest.raises(ValueError, match="no finetune ground truth"):
        evaluate.evaluate(str(tiny_bench.root))
    with pytest.raises(ValueError, match="unknown transferability estimator"):
        evaluate.evaluate(str(tiny_bench.root), ["logme", "oracle"])
