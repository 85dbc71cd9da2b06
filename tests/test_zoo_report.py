"""The zoo report: its nearest-neighbour accuracy, its class subsets, and a README that is its JSON, not a copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data import zoo_report
from ranker.tasks.datasets import Task
from ranker.zoo import manifest as zoo


def test_leave_one_out_nearest_neighbour_by_hand():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1, 1])
    # each point's nearest other point by cosine: 1, 0, 3, 2, 1 -> labels 0, 0, 1, 1, 0: the last one is wrong
    assert zoo_report.loo_1nn(feats, labels) == pytest.approx(80.0)


def test_subset_takes_the_named_classes_and_caps_them():
    task = Task(id="t", labels=np.repeat([0, 1, 2], [5, 3, 4]), class_names=("a", "b", "c"),
                images=np.zeros((12, 4, 4), np.uint8))
    part = zoo_report.subset(task, ("a", "c"), per_class=3)
    assert part.class_names == ("a", "c") and np.bincount(part.labels).tolist() == [3, 3]
    assert part.id != zoo_report.subset(task, ("a", "c"), per_class=2).id


def test_the_committed_zoo_readme_is_the_committed_report():
    folder = zoo.REPO_ROOT / "ranker" / "configs" / "zoo"
    report = json.loads((folder / "v3_report.json").read_text())
    assert (folder / "README.md").read_text() == zoo_report.markdown(report)
    assert [m["name"] for m in report["members"]] == zoo.list_models(folder / "v3.yaml")
    assert set(report["datasets"]) == {p.name for p in zoo_report.PROBES}


def test_ties_for_first_place_are_named_as_ties():
    report = {"datasets": {"a": {}, "b": {}}, "members": [
        {"name": "x", "accuracy": {"a": 90.0, "b": 50.0}},
        {"name": "y", "accuracy": {"a": 90.0, "b": 70.0}},
    ]}
    assert zoo_report.winners(report) == {"a": ["x", "y"], "b": ["y"]}
