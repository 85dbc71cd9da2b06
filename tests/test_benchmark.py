"""The shipped offline benchmark: complete, loadable in under 2 s, and with test tasks new to the ranker."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ranker import benchmark as bm


@pytest.fixture(scope="module")
def offline() -> bm.Benchmark:
    return bm.load_benchmark("offline")


def test_loads_in_under_two_seconds_with_its_statistics() -> None:
    start = time.perf_counter()
    bench = bm.load_benchmark("offline")
    bench.history.matrix("finetune")
    stats = bench.task_stats()
    assert time.perf_counter() - start < 2.0
    assert len(stats) == len(bench.config.tasks)


def test_size_and_ground_truth_are_complete(offline: bm.Benchmark) -> None:
    models, test, train = offline.models, offline.task_ids("test"), offline.task_ids("train")
    assert len(models) >= 16 and len(test) + len(train) >= 40
    _, _, finetune = offline.history.matrix("finetune", test, models)
    assert not np.isnan(finetune).any(), "every test task needs finetune ground truth for every model"
    _, _, probe = offline.history.matrix("linear_probe", train + test, models)
    assert not np.isnan(probe).any(), "every task needs linear-probe accuracy for every model"


def test_test_tasks_are_new_in_dataset_or_classes(offline: bm.Benchmark) -> None:
    """A test task shares no (dataset, class) with any training task, whatever the variant."""
    seen = {(t.dataset, c) for t in offline.config.tasks if t.role == "train" for c in t.classes}
    train_datasets = {d for d, _ in seen}
    for spec in (t for t in offline.config.tasks if t.role == "test"):
        assert spec.classes, f"{spec.id}: list its classes so disjointness can be checked"
        if spec.dataset in train_datasets:
            assert not {(spec.dataset, c) for c in spec.classes} & seen, spec.id


def test_tasks_draw_the_images_their_spec_asks_for(offline: bm.Benchmark) -> None:
    spec = next(t for t in offline.config.tasks if t.id == "fmnist-c789")
    train, test = bm.task_parts(spec, offline.config)
    assert train.class_names == ("Sneaker", "Bag", "Ankle boot") == test.class_names
    assert np.bincount(train.labels).tolist() == [spec.n_train] * 3
    assert np.bincount(test.labels).tolist() == [spec.n_test] * 3
    assert not set(train.indices) & set(test.indices)
