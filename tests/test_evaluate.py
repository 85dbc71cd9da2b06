"""Ranking metrics against scipy and the field's published numbers; the evaluation harness on a tiny benchmark."""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import weightedtau

from data import build_history
from ranker import evaluate, transfer
from ranker.evaluate import runs as evaluate_runs
from ranker.learn import episodes, lit, selection
from ranker.learn.config import load_run_config
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
    # the ranker: none shipped for this benchmark (checkpoints/tiny-default, its default); Fennec: its one training
    # task validates, so nothing is left to train on
    assert set(result["skipped"]) == {"leep", "nce", "ranker", "ranker_rerank", "fennec", "best_constant"}
    assert "tiny-default is not an exported ranker" in result["skipped"]["ranker"]
    assert "no task to train on" in result["skipped"]["fennec"]
    # The prior ranks by mean training-task probe accuracy: here it picks the fine-tuning winner.
    assert result["prior_kind"] == "linear_probe"
    assert result["methods"]["prior"]["regret"] == 0.0 and result["methods"]["prior"]["wtau"] == pytest.approx(1.0)
    for m in result["methods"].values():
        assert -1 <= m["wtau"] <= 1 and m["regret"] in (0.0, 20.0) and m["seconds_per_task"] >= 0
        assert m["n_tasks"] == 1
    json.dumps(result)  # the JSON contract: plain numbers and strings only
    assert "| prior |" in evaluate.markdown(result) and ".png" not in evaluate.markdown(result)  # no chart written
    assert "--benchmark tiny" in evaluate.markdown(result) and "--checkpoint" not in evaluate.markdown(result)
    assert "![weighted tau per method, fixed split](eval.png)" in evaluate.markdown(result, "eval.png")
    evaluate.plot(result, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_the_ranker_is_evaluated_beside_the_estimators_with_its_extraction_costs(tiny_bench: bm.Benchmark,
                                                                                 tmp_path: Path) -> None:
    _ground_truth(tiny_bench)
    build_history.build_stats(tiny_bench)
    dims = episodes.ranker_dims(tiny_bench)
    zoo = load_manifest(tiny_bench.manifest_path)
    config = export.ExportConfig(dims=dims, models=tiny_bench.models, general_encoder=tiny_bench.models[0], rerank_k=1)
    folder = export.export(tmp_path / "ck", Ranker(dims).eval(), config, zoo, ["t"], ["finetune"], ["g"],
                           torch.ones(1, 2), torch.zeros(1, 2))
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


def test_features_come_from_the_cache_unless_a_fresh_one_is_asked_for(tiny_bench: bm.Benchmark,
                                                                       tmp_path: Path) -> None:
    _ground_truth(tiny_bench)
    cache = tmp_path / "cache"  # $RANKER_CACHE (conftest)
    assert evaluate.evaluate(str(tiny_bench.root), ["logme"], fresh_cache=True)["fresh_cache"]
    assert not cache.exists()
    assert not evaluate.evaluate(str(tiny_bench.root), ["logme"])["fresh_cache"]
    assert len(list(cache.rglob("*.safetensors"))) == 2  # the test task's training part, by both models


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


GROUPED_TASKS = """tasks:
  - {id: a1, role: train, dataset: digits, classes: [1, 2, 3], n_train: 5, n_test: 10, group: a}
  - {id: a2, role: train, dataset: digits, classes: [4, 5], n_train: 5, n_test: 10, group: a}
  - {id: b1, role: train, dataset: digits, variant: invert, classes: [1, 2], n_train: 5, n_test: 10, group: b}
  - {id: b2, role: test, dataset: digits, variant: invert, classes: [6, 7, 8], n_train: 5, n_test: 10, group: b}
  - {id: c1, role: test, dataset: digits, variant: rot90, classes: [0, 9], n_train: 5, n_test: 10, group: c}
  - {id: c2, role: train, dataset: digits, variant: rot90, classes: [3, 4], n_train: 5, n_test: 10, group: c}
"""


def grouped_bench(tiny: bm.Benchmark, tmp_path: Path) -> tuple[bm.Benchmark, Path]:
    """Six digits tasks in three groups (each group holds a training task, two hold a test task) with planted
    fine-tuning ground truth, stats, and an untrained checkpoint whose run config trains 2 epochs validating on
    a1 and b1."""
    text = (tiny.root / "benchmark.yaml").read_text()
    (tiny.root / "benchmark.yaml").write_text(text[: text.index("tasks:")] + GROUPED_TASKS)
    bench = bm.load_benchmark(tiny.root)
    rng = np.random.default_rng(0)
    for task in bench.config.tasks:
        for model, acc in zip(bench.models, rng.choice(np.arange(50.0, 100.0), 2, replace=False), strict=True):
            bench.history.add(Record(task.id, model, "finetune", "top1_accuracy", float(acc)))
    bench.history.save(bench.root / "history.csv")
    build_history.build_stats(bench)
    dims = episodes.ranker_dims(bench)
    run = load_run_config(overrides=[f"data.benchmark={bench.root}", "data.val_tasks=[a1,b1]",
                                     "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"])
    config = export.ExportConfig(dims=dims, models=bench.models, general_encoder=bench.models[0], rerank_k=1,
                                 run=run)
    folder = export.export(tmp_path / "ck", Ranker(dims).eval(), config, load_manifest(bench.manifest_path), ["t"],
                           ["finetune"], ["g"], torch.ones(1, 2), torch.zeros(1, 2))
    return bench, folder


@pytest.mark.integration
def test_no_task_of_a_held_out_group_reaches_training_in_any_fold(tiny_bench: bm.Benchmark, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Spies on what each fold's prior averages, what its ranker trains and validates on, and what it evaluates."""
    bench, folder = grouped_bench(tiny_bench, tmp_path)
    group = {t.id: t.group_name for t in bench.config.tasks}
    seen: list[tuple[str | None, str, list[str]]] = []  # (held-out group or None: the fixed split, use, task ids)
    current: dict[str, str | None] = {"group": None}

    def spy(name: str, real, ids_of):
        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            seen.append((current["group"], name, ids_of(args, out)))
            return out
        return wrapped

    real_fold_runs, real_setup = evaluate_runs._fold_runs, episodes.EpisodeDataModule.setup

    def fold_runs(bench, benchmark, run, fold, *args):
        current["group"] = fold.group
        try:
            return real_fold_runs(bench, benchmark, run, fold, *args)
        finally:
            current["group"] = None

    monkeypatch.setattr(evaluate_runs, "_fold_runs", fold_runs)
    real_extract = evaluate_runs.features.extract
    monkeypatch.setattr(evaluate_runs.features, "extract", spy("features", real_extract, lambda a, _: [a[1].id]))
    spied = (("prior_means", "prior", 1), ("_ranker_runs", "evaluated", 3), ("_fitted_runs", "fennec", 2))
    for name, use, arg in spied:  # arg: the position of the task ids each one is given
        monkeypatch.setattr(evaluate_runs, name, spy(use, getattr(evaluate_runs, name),
                                                     lambda a, _, arg=arg: list(a[arg])))
    monkeypatch.setattr(episodes.EpisodeDataModule, "setup", spy(
        "episodes", real_setup, lambda a, _: [e.task for e in a[0].train_episodes + a[0].val_episodes]))
    monkeypatch.chdir(tmp_path)
    result = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True)

    cv = result["cv"]
    assert cv["groups"] == ["a", "b", "c"] and cv["n_tasks"] == 6
    assert {"logme", "prior", "ranker", "ranker_rerank", "fennec", "best_constant"} == set(cv["methods"]) \
        == set(result["methods"])
    # the constant list fitted to the scored tasks themselves is a ceiling for the prior, itself a constant list
    assert cv["methods"]["best_constant"]["wtau"] >= cv["methods"]["prior"]["wtau"] - 1e-9
    for name, method in cv["methods"].items():  # every difference to the prior again, with whole groups resampled
        if name != "prior":
            low, high = method["vs_prior"]["wtau_groups_ci"]
            assert low <= high and "wtau_groups_ci" not in result["methods"][name]["vs_prior"]
    assert sorted(t for f in cv["folds"] for t in f["held_out"]) == sorted(group)  # every task once
    for fold in cv["folds"]:
        held_out = fold["held_out"]
        uses = {name: ids for g, name, ids in seen if g == fold["group"]}
        assert set(uses) == {"prior", "episodes", "evaluated", "fennec"}
        assert uses["evaluated"] == held_out and {group[t] for t in held_out} == {fold["group"]}
        for name in ("prior", "episodes", "fennec"):
            assert uses[name] and fold["group"] not in {group[t] for t in uses[name]}, (name, fold["group"])
        assert fold["group"] not in {group[t] for t in fold["val_tasks"]}
        assert set(cv["per_task"]["ranker"]) >= set(held_out)
    assert fold_of(cv, "a")["val_tasks"] == ["b1"] and fold_of(cv, "c")["val_tasks"] == ["a1", "b1"]
    # the folds read no features (another process may fill the cache meanwhile): every extraction comes after them
    assert max(i for i, (g, _, _) in enumerate(seen) if g is not None) < \
        min(i for i, (_, name, _) in enumerate(seen) if name == "features")
    ranker, rerank = cv["methods"]["ranker"], cv["methods"]["ranker_rerank"]  # charged the features they need
    assert 0 < ranker["seconds_per_task_with_features"] - ranker["seconds_per_task"] <= \
        rerank["seconds_per_task_with_features"] - rerank["seconds_per_task"] + 1e-9
    fixed = [ids for g, name, ids in seen if g is None and name != "features"]
    # the fixed split: the ranker evaluated on the test tasks, the prior and Fennec learned from the training ones
    # (Fennec's episodes: training tasks first, then the validation tasks a1 and b1)
    assert fixed == [["b2", "c1"], ["a1", "a2", "b1", "c2"], ["a2", "c2", "a1", "b1"], ["a1", "a2", "b1", "c2"]]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checkpoints").exists()  # trained in a temp dir
    json.dumps(result)
    report = evaluate.markdown(result)
    assert "## Leave-one-group-out cross-validation (6 tasks" in report and ".png" not in report
    assert report.count("Δwtau vs prior [groups]") == 1  # a column of the cross-validated table only


def test_a_learned_ranker_is_charged_the_general_encoder_and_its_top_k_models_features() -> None:
    run = evaluate.Run(np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]), np.zeros(2), np.zeros(2))
    extraction = np.array([[1.0, 10.0, 100.0], [1.0, 10.0, 100.0]])  # [T, M] seconds; model 0 the general encoder
    charged = [evaluate_runs._charge_extraction(run, depth, extraction, 0).extraction.tolist() for depth in range(4)]
    assert charged == [[1.0, 1.0], [1.0, 11.0], [101.0, 111.0], [111.0, 111.0]]


def fold_of(cv: dict, group: str) -> dict:
    return next(f for f in cv["folds"] if f["group"] == group)


def test_intervals_hold_the_mean_and_a_copy_of_the_prior_differs_from_it_by_zero() -> None:
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(12, 5)) * 10 + 70
    prior = np.tile(rng.normal(size=5), (12, 1))
    noisy = gt + rng.normal(size=gt.shape) * 8
    zeros = np.zeros(12)
    runs = {"prior": evaluate.Run(prior, zeros, zeros), "copy": evaluate.Run(prior.copy(), zeros, zeros),
            "noisy": evaluate.Run(noisy, zeros, zeros)}
    runs["noisy"].scores[3, 1] = np.nan  # failed on one task: out of its mean and its intervals
    split = evaluate.score_tasks([f"t{i}" for i in range(12)], gt, runs)
    for m in split["methods"].values():
        for key in evaluate.METRICS:
            lo, hi = m[f"{key}_ci"]
            assert lo <= m[key] <= hi
    assert split["methods"]["noisy"]["n_tasks"] == 11 and "t3" not in split["per_task"]["noisy"]
    regrets = split["per_task_regret"]["noisy"]
    assert "t3" not in regrets and regrets["t0"] == pytest.approx(gt[0].max() - gt[0, np.argmax(noisy[0])])
    assert np.mean(list(regrets.values())) == pytest.approx(split["methods"]["noisy"]["regret"])
    assert split["methods"]["copy"]["vs_prior"]["wtau_ci"] == [0.0, 0.0]
    noisy = split["methods"]["noisy"]
    assert noisy["vs_prior"]["wtau_ci"][0] > 0  # ranking by noisy ground truth beats a constant ranking
    assert "prior" in split["methods"] and "vs_prior" not in split["methods"]["prior"]
    again = evaluate.score_tasks([f"t{i}" for i in range(12)], gt, runs)
    assert again == split  # a fixed seed


@pytest.mark.integration
def test_a_cv_cache_resumes_finished_folds_and_misses_when_the_history_changes(tiny_bench: bm.Benchmark,
                                                                               tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped --cv run continues where it was: finished folds are read back, not retrained, and give the same
    result; a fold whose inputs changed (the code it runs, the history) is computed again."""
    bench, folder = grouped_bench(tiny_bench, tmp_path)
    code = tmp_path / "code"  # stands for the package's folders the folds run
    code.mkdir()
    (code / "lit.py").write_text("EPOCHS = 2\n")
    monkeypatch.setattr(evaluate_runs, "FOLD_SOURCES", (code,))
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "folds"
    first = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)
    assert len(list(cache.glob("*.json"))) == 3
    computed = []
    real = evaluate_runs._fold_runs
    monkeypatch.setattr(evaluate_runs, "_fold_runs", lambda *a: computed.append(a[3].group) or real(*a))
    again = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)
    assert computed == []
    for name, m in first["cv"]["methods"].items():
        assert again["cv"]["methods"][name]["wtau"] == m["wtau"] and again["cv"]["per_task"][name] == \
            first["cv"]["per_task"][name]
    assert again["cv"]["folds"] == first["cv"]["folds"]
    (code / "lit.py").write_text("EPOCHS = 3\n")
    evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)
    assert computed == ["a", "b", "c"]
    bench.history.add(Record("a1", bench.models[0], "linear_probe", "top1_accuracy", 50.0))
    bench.history.save(bench.root / "history.csv")
    evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)
    assert computed == ["a", "b", "c"] * 2


def test_a_group_bootstrap_is_as_wide_as_the_groups_differ_not_as_the_tasks_number() -> None:
    """Two groups of alike tasks: resampling whole groups spans both groups' means; equal groups give a point."""
    groups = {"a": [f"a{i}" for i in range(20)], "b": [f"b{i}" for i in range(20)]}
    values = {t: (0.2 if t.startswith("a") else 0.8) for ts in groups.values() for t in ts}
    mean, ci = evaluate.group_interval(values, groups)
    assert mean == pytest.approx(0.5) and ci == pytest.approx([0.2, 0.8])
    same = {t: 0.5 for ts in groups.values() for t in ts}
    assert evaluate.group_interval(same, groups) == (pytest.approx(0.5), [pytest.approx(0.5), pytest.approx(0.5)])


def group_bootstrap_script(tmp_path: Path, groups: dict[str, list[str]], per_task: dict) -> list[str]:
    """The command line of ``benchmarks/group_bootstrap.py`` on an evaluation JSON with these folds and ``per_task``
    parts (``per_task``, ``per_task_regret``) of its ``cv``."""
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"cv": {"folds": [{"group": g, "held_out": t} for g, t in groups.items()],
                                         **per_task}}))
    return [sys.executable, str(Path(__file__).resolve().parent.parent / "benchmarks" / "group_bootstrap.py"),
            str(report)]


def test_group_bootstrap_prints_the_paired_difference_to_each_method_it_is_set_against(tmp_path: Path) -> None:
    """``benchmarks/group_bootstrap.py --versus``: one column per reference, blank on the reference's own row."""
    groups = {"a": ["a0", "a1"], "b": ["b0", "b1"]}
    per_task = {"prior": {"a0": 0.1, "a1": 0.1, "b0": 0.3, "b1": 0.3},
                "ranker": {"a0": 0.4, "a1": 0.4, "b0": 0.6, "b1": 0.6},
                "logme": {"a0": 0.0, "a1": 0.0, "b0": 0.0, "b1": 0.0}}
    script = group_bootstrap_script(tmp_path, groups, {"per_task": per_task})
    rows = {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split("|")][1:]
            for line in subprocess.run([*script, "--versus", "prior", "logme"], capture_output=True, text=True,
                                       check=True).stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["ranker"][1:] == ["+0.300 [+0.300, +0.300]", "+0.500 [+0.400, +0.600]"]
    assert rows["prior"][1] == "" and rows["logme"][2] == ""
    refused = subprocess.run([*script, "--versus", "fennec"], capture_output=True, text=True)
    assert refused.returncode == 2 and "fennec not in" in refused.stderr
    refused = subprocess.run([*script, "--metric", "regret"], capture_output=True, text=True)
    assert refused.returncode == 2 and "no per_task_regret" in refused.stderr


def test_group_bootstrap_reads_regret_and_lists_the_lowest_first(tmp_path: Path) -> None:
    """``--metric regret``: the per-task regrets of the evaluation JSON, best (lowest) first, two decimals."""
    groups = {"a": ["a0", "a1"], "b": ["b0", "b1"]}
    regret = {"prior": {"a0": 4.0, "a1": 4.0, "b0": 2.0, "b1": 2.0},
              "ranker": {"a0": 1.0, "a1": 1.0, "b0": 2.0, "b1": 2.0}}
    taus = {n: dict.fromkeys(v, 0.5) for n, v in regret.items()}
    script = group_bootstrap_script(tmp_path, groups, {"per_task": taus, "per_task_regret": regret})
    out = subprocess.run([*script, "--metric", "regret"], capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| ranker | 1.50 [1.00, 2.00] | -1.50 [-3.00, +0.00] |")
    assert rows[1].startswith("| prior | 3.00 [2.00, 4.00] |")


def test_best_constant_ranks_like_tasks_that_all_agree() -> None:
    gt = np.array([[90.0, 80.0, 70.0, 60.0], [95.0, 85.0, 75.0, 65.0]])
    scores, ceiling = evaluate.best_constant(gt)
    assert np.isclose(ceiling, 1.0) and list(np.argsort(-scores)) == [0, 1, 2, 3]


def test_best_constant_beats_the_mean_accuracy_order_where_that_order_is_not_the_best() -> None:
    """Two tasks put model 0 first, one (with large accuracies) puts it last: the mean accuracy follows the one."""
    gt = np.array([[60.0, 50.0, 40.0, 30.0], [60.0, 50.0, 40.0, 30.0], [0.0, 99.0, 98.0, 97.0]])
    by_mean = evaluate.mean_tau(gt, gt.mean(0))
    scores, ceiling = evaluate.best_constant(gt)
    assert ceiling > by_mean and int(np.argmax(scores)) == 0
    assert np.isclose(ceiling, evaluate.mean_tau(gt, scores))  # the value it reports is the one its scores reach


@pytest.mark.integration
def test_runs_sharing_a_cv_cache_split_the_folds_and_read_back_each_others(tiny_bench: bm.Benchmark, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two --cv runs given one --cv-cache (one per core, or per machine on a shared folder) compute each fold once:
    a run skips the fold another holds, goes on, and at the end waits for it and reads it back."""
    bench, folder = grouped_bench(tiny_bench, tmp_path)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "folds"
    first = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)
    kept = {path.name.split("-")[0]: path for path in cache.glob("*.json")}
    written_by_the_other_run = kept["b"].read_bytes()
    for path in kept.values():
        path.unlink()
    computed: list[str] = []
    real = evaluate_runs._fold_runs
    monkeypatch.setattr(evaluate_runs, "_fold_runs", lambda *a: computed.append(a[3].group) or real(*a))
    result: dict = {}
    with open(kept["b"].with_suffix(".lock"), "w") as other_run:  # another run is computing fold b
        fcntl.flock(other_run, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: result.update(
            evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True, cv_cache=cache)))
        worker.start()
        deadline = time.monotonic() + 300
        while len(computed) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert computed == ["a", "c"] and worker.is_alive()  # b skipped, and waited for
        kept["b"].write_bytes(written_by_the_other_run)
        fcntl.flock(other_run, fcntl.LOCK_UN)
    worker.join(300)
    assert computed == ["a", "c"]
    assert result["cv"]["per_task"] == first["cv"]["per_task"]
    assert result["cv"]["folds"][1]["train_seconds"] == first["cv"]["folds"][1]["train_seconds"]  # b read, not trained


@pytest.mark.integration
def test_folds_share_inner_fits_on_the_same_tasks_and_get_what_training_again_gets(
        tiny_bench: bm.Benchmark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fold a's inner fit holding b out trains on c's tasks, as fold b's holding a out does: each is trained once."""
    bench, folder = grouped_bench(tiny_bench, tmp_path)
    monkeypatch.chdir(tmp_path)
    inner_fits: list[list[str]] = []
    real = lit.train

    def counted(cfg, data, net_class, inner=False):
        if inner:
            inner_fits.append(data.train_ids + data.val_ids)
        return real(cfg, data, net_class, inner=inner)

    monkeypatch.setattr(lit, "train", counted)
    with monkeypatch.context() as unshared:
        unshared.setattr(selection, "shared_inner_fits", lambda folder: contextlib.nullcontext())
        alone = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True)
    trained_alone, inner_fits[:] = list(inner_fits), []
    shared = evaluate.evaluate(str(bench.root), ["logme"], folder, cv=True)
    assert len(trained_alone) > len(inner_fits) == len({tuple(t) for t in trained_alone})
    assert shared["cv"]["per_task"] == alone["cv"]["per_task"]
