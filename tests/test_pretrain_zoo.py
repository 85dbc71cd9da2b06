"""The zoo pre-training script: weights saved, hash recorded in the manifest, finished members skipped."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from data import pretrain_zoo
from ranker.tasks import loaders
from ranker.zoo import manifest as zoo


@pytest.mark.integration
def test_pretrain_records_a_hash_that_loads(tmp_path):
    manifest = tmp_path / "zoo.yaml"
    shutil.copy(zoo.DEFAULT_MANIFEST, manifest)
    entry = dataclasses.replace(
        zoo.get_entry("tiny_resnet_amnist", manifest), weights_file=str(tmp_path / "w.safetensors")
    )
    assert not pretrain_zoo.is_done(entry)
    row = pretrain_zoo.pretrain(entry, manifest, max_steps=3)
    recorded = zoo.get_entry("tiny_resnet_amnist", manifest)
    assert recorded.weights_sha256 == row["weights_sha256"] != entry.weights_sha256
    assert 0.0 <= row["val_acc"] <= 1.0
    done = dataclasses.replace(recorded, weights_file=entry.weights_file)
    assert pretrain_zoo.is_done(done)
    assert zoo.load_extractor(done).weights_sha256 == row["weights_sha256"]
    others = [line for line in manifest.read_text().splitlines() if "tiny_resnet_amnist" not in line]
    originals = [line for line in zoo.DEFAULT_MANIFEST.read_text().splitlines() if "tiny_resnet_amnist" not in line]
    assert sum(a != b for a, b in zip(others, originals, strict=True)) == 1  # only that entry's hash line changed


def test_animal_mnist_is_cut_70_30_per_class_for_pretraining_and_tasks():
    pretraining, left = loaders.animal_mnist_split()
    assert np.bincount(pretraining.labels).tolist() == [700] * 10
    assert np.bincount(left.labels).tolist() == [300] * 10
    assert pretraining.id != left.id
    tasks, classes = pretrain_zoo.source_task("fashion_mnist+animal_mnist")
    assert [t.id for t in tasks] == ["fashion_mnist:train", pretraining.id] and classes == 20
