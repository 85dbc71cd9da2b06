"""The published imagenet10 benchmark (data/benchmarks/imagenet10/): its files load and line up with the field's tables.

The published numbers are read directly from the shared folder beside the repository, so a copying slip in
history.csv or estimator_scores.csv fails here. Run: ``pytest -q tests/test_published_benchmark.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from ranker.learn.metrics import weighted_tau
from ranker.tasks.benchmark import load_benchmark
from ranker.zoo.manifest import REPO_ROOT, load_manifest

PUBLISHED = Path(__file__).resolve().parents[2] / "shared" / "published"
needs_shared = pytest.mark.skipif(not PUBLISHED.is_dir(), reason=f"the published source files are not at {PUBLISHED} "
                                  "(CI puts ../shared beside the repository)")
BENCH_DIR = REPO_ROOT / "data" / "benchmarks" / "imagenet10"
DATASETS = ("Aircraft", "Caltech101", "Cars", "CIFAR10", "CIFAR100", "DTD", "Pet", "SUN397")  # published names


def task_id(dataset: str) -> str:
    """benchmark.yaml's task id of a published dataset name."""
    return dataset.lower()


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("imagenet10")


@pytest.fixture(scope="module")
def finetune(bench):
    tasks, models, acc = bench.history.matrix(
        "finetune", bench.task_ids("test"), [e.name for e in load_manifest(bench.manifest_path).models]
    )
    return tasks, models, acc


def test_benchmark_loads(bench):
    cfg = bench.config
    assert cfg.name == "imagenet10" and cfg.pool_per_class == 0
    assert bench.task_ids("train") == []
    assert bench.task_ids("test") == [task_id(d) for d in DATASETS]
    names = [e.name for e in load_manifest(bench.manifest_path).models]
    assert cfg.general_encoder in names
    for spec in cfg.tasks:  # the env interpolation is resolved by load_config
        assert "${" not in spec.dataset and "${" not in spec.test_dataset
        assert spec.dataset.endswith(f"/{spec.id}/train") and spec.test_dataset.endswith(f"/{spec.id}/test")
        assert spec.n_train == 0 and spec.classes == []


def test_finetune_matrix_complete(bench, finetune):
    tasks, models, acc = finetune
    assert acc.shape == (8, 10) and not np.isnan(acc).any()
    records = bench.history.records("finetune")
    assert len(records) == 80  # a user's own linear_probe or proxy records may sit beside them
    for r in records:
        assert r.metric == "top1_accuracy" and r.device == "published" and r.recipe == "published"
        assert "Model-Spider" in r.source and "LogME" in r.source


@needs_shared
def test_finetune_matches_published_csv(finetune):
    tasks, models, acc = finetune
    with (PUBLISHED / "imagenet10_finetune.csv").open(newline="") as f:
        published = {(r["dataset"], r["model"]): float(r["value"]) for r in csv.DictReader(f)
                     if r["metric"] == "top1_accuracy"}
    assert {d for d, _ in published} == set(DATASETS)  # the 2 regression datasets are left out
    for dataset, model in [("Aircraft", "mnasnet1_0"), ("CIFAR100", "resnet152"), ("SUN397", "inception_v3")]:
        assert acc[tasks.index(task_id(dataset)), models.index(model)] == published[(dataset, model)]
    for (dataset, model), value in published.items():  # and every other cell
        assert math.isclose(acc[tasks.index(task_id(dataset)), models.index(model)], value)


def test_manifest_names_and_timm_archs(bench):
    manifest = load_manifest(bench.manifest_path)
    assert manifest.name == "imagenet10"
    assert [e.name for e in manifest.models] == bench.history.models("finetune")
    archs, pretrained = set(timm.list_models()), set(timm.list_models(pretrained=True))
    for e in manifest.models:
        assert e.arch.split(".")[0] in archs and e.arch in pretrained, e.arch
        assert e.hub and e.num_classes == 1000 and e.weights_sha256 is None
        with torch.device("meta"):  # the architecture without allocating or downloading weights
            model = timm.create_model(e.arch, pretrained=False)
        cfg = timm.models.get_pretrained_cfg(e.arch)
        assert e.feature_dim == model.num_features and e.input_size == cfg.input_size[-1], e.name
        assert tuple(e.mean) == tuple(cfg.mean) and tuple(e.std) == tuple(cfg.std), e.name


@needs_shared
def test_estimator_scores_are_the_published_file():
    shipped = (BENCH_DIR / "estimator_scores.csv").read_bytes()
    assert shipped == (PUBLISHED / "imagenet10_estimator_scores.csv").read_bytes()  # a verbatim copy


def test_estimator_scores_reproduce_model_spider_table(finetune):
    """Model Spider's table, through our metric: weightedtau(finetune, score, rank=None) averaged over 8 datasets."""
    tasks, models, acc = finetune
    with (BENCH_DIR / "estimator_scores.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    published = {"H-Score": 0.648, "NCE": 0.666}
    for estimator, expected in published.items():
        scores = {(task_id(r["Dataset"]), r["Model"]): float(r[estimator]) for r in rows}
        taus = [weighted_tau(acc[i], np.array([scores[(t, m)] for m in models])) for i, t in enumerate(tasks)]
        assert round(float(np.mean(taus)), 3) == expected, estimator
