"""The figures that say whether a benchmark can show learning (data/benchmark_report.py)."""

from __future__ import annotations

import numpy as np

from data import benchmark_report as report


def test_seed_agreement_is_one_for_identical_runs_and_lower_for_swapped_ones() -> None:
    run = np.array([80.0, 70.0, 60.0, 50.0])
    assert np.isclose(report.seed_agreement([run, run.copy()]), 1.0)
    swapped = np.array([70.0, 80.0, 60.0, 50.0])
    assert report.seed_agreement([run, swapped]) < 1.0


def test_seed_regret_is_zero_for_agreeing_runs_and_the_lost_points_where_their_best_differ() -> None:
    run = np.array([80.0, 70.0, 60.0, 50.0])
    assert report.seed_regret([run, run + 1.0]) == 0.0
    other = np.array([72.0, 75.0, 60.0, 50.0])  # ranks model 1 first, 10 points behind run's best; run costs it 3
    assert np.isclose(report.seed_regret([run, other]), (10.0 + 3.0) / 2)


def test_seed_noise_measures_each_models_move_against_the_gaps_between_neighbours() -> None:
    diffs, gaps = report.seed_noise([np.array([80.0, 70.0, 60.0, 50.0]), np.array([78.0, 74.0, 60.0, 50.0])])
    assert diffs.tolist() == [2.0, 4.0, 0.0, 0.0]
    assert gaps.tolist() == [10.0, 12.0, 7.0]  # between 50, 60, 72 and 79, the mean runs in ascending order


def test_winners_by_group_name_the_planted_best_of_each_group() -> None:
    from ranker.tasks import benchmark as bm

    bench = bm.load_benchmark("offline")
    tasks = bench.task_ids("test")
    groups = [next(t.group_name for t in bench.config.tasks if t.id == task) for task in tasks]
    first = groups[0]
    gt = np.tile(np.linspace(50.0, 60.0, len(bench.models)), (len(tasks), 1))  # the last model best everywhere
    gt[[g == first for g in groups], 2] = 99.0  # except in the first group, where model 2 wins
    rows = {line.split(" | ")[0].strip("| "): line for line in report.winners_by_group(bench, tasks, gt)[3:-1]}
    assert set(rows) == set(groups)
    assert f"| {bench.models[2]} ({groups.count(first)}) | {bench.models[2]} (1.0) |" in rows[first]
    other = next(g for g in groups if g != first)
    assert f"| {bench.models[-1]} ({groups.count(other)}) |" in rows[other]


def test_collapses_count_the_pairs_at_the_most_frequent_class_floor_and_those_on_learnable_runs() -> None:
    from ranker.tasks.history import Record

    def rec(task: str, model: str, value: float, kind: str = "finetune") -> Record:
        return Record(task=task, model=model, kind=kind, metric="top1_accuracy", value=value)

    majority = {"two": 50.0, "three": 40.0, "hard": 70.0}
    records = [rec("two", "a", 50.0), rec("three", "a", 39.0), rec("two", "b", 50.5), rec("three", "b", 90.0),
               rec("two", "c", 10.0, kind="linear_probe"), rec("other", "c", 10.0),
               rec("hard", "a", 60.0), rec("hard", "b", 65.0), rec("hard", "d", 80.0)]  # median 65: at the floor
    assert report.collapses(records, majority) == {"a": (3, 2, 3), "b": (1, 0, 3), "d": (0, 0, 1)}
