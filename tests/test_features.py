"""Frozen features: shapes, cache hits, cache keys, atomic writes and rebuilding damaged files."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from ranker.tasks import datasets, features, loaders
from ranker.zoo import manifest as zoo


@pytest.fixture(scope="module")
def extractor() -> zoo.FrozenExtractor:
    return zoo.load_extractor("tiny_resnet_fmnist")


@pytest.fixture(scope="module")
def task() -> datasets.Task:
    return datasets.sample_episode(loaders.digits(), ways=4, shots=10, seed=0)


def test_features_match_a_direct_forward_pass(extractor, task, tmp_path):
    feats = features.extract(extractor, task, cache_dir=tmp_path, batch_size=7, device=torch.device("cpu"),
                             progress=False)
    assert feats.shape == (40, extractor.entry.feature_dim) and feats.dtype == torch.float32
    direct = extractor(torch.stack([extractor.transform(task.image(i)) for i in range(len(task))]))
    torch.testing.assert_close(feats, direct, rtol=1e-5, atol=1e-5)


def test_second_call_reads_the_cache(extractor, task, tmp_path, monkeypatch):
    first = features.extract(extractor, task, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(features, "DataLoader", None)  # any extraction now fails
    second = features.extract(extractor, task, cache_dir=tmp_path, progress=False)
    assert torch.equal(first, second)


def test_cache_key_depends_on_weights_task_and_transform(extractor, task, tmp_path):
    other_task = datasets.sample_episode(loaders.digits(), ways=4, shots=10, seed=1)
    other_weights = zoo.FrozenExtractor(extractor.entry, extractor.trunk, "0" * 64)
    other_size = zoo.FrozenExtractor(
        dataclasses.replace(extractor.entry, input_size=40), extractor.trunk, extractor.weights_sha256
    )
    paths = {features.cache_path(e, t, tmp_path) for e, t in
             [(extractor, task), (extractor, other_task), (other_weights, task), (other_size, task)]}
    assert len(paths) == 4


def test_truncated_cache_file_is_rebuilt(extractor, task, tmp_path):
    feats = features.extract(extractor, task, cache_dir=tmp_path, progress=False)
    path = features.cache_path(extractor, task, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = features.extract(extractor, task, cache_dir=tmp_path, progress=False)
    assert torch.equal(feats, rebuilt)
    assert torch.equal(load_file(path)["features"], feats)  # the damaged file was replaced by a whole one


class _BrokenTask(datasets.Task):
    def image(self, i: int):
        if i == 25:
            raise OSError("disk gone")
        return super().image(i)


def test_failed_extraction_leaves_no_file(extractor, task, tmp_path):
    broken = _BrokenTask(id="broken", labels=task.labels, class_names=task.class_names, images=task.images)
    with pytest.raises(OSError, match="disk gone"):
        features.extract(extractor, broken, cache_dir=tmp_path, batch_size=8, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_features_separate_real_classes(task, tmp_path):
    """ImageNet features of real digits are class-structured: same-class pairs are more alike than other pairs."""
    feats = features.extract(zoo.load_extractor("mobilenetv2_100"), task, cache_dir=tmp_path, progress=False)
    x = torch.nn.functional.normalize(feats - feats.mean(0), dim=1)
    sims = x @ x.T
    same_class = torch.as_tensor(task.labels[:, None] == task.labels[None, :])
    same = same_class & ~torch.eye(len(x), dtype=torch.bool)
    assert float(sims[same].mean()) > float(sims[~same_class].mean()) + 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_features_match_cpu(task, tmp_path):
    extractor = zoo.load_extractor("mobilenetv2_100")
    on_cpu = features.extract(extractor, task, cache_dir=tmp_path / "cpu", device=torch.device("cpu"), progress=False)
    on_gpu = features.extract(extractor, task, cache_dir=tmp_path / "gpu", device=torch.device("cuda"), progress=False)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
