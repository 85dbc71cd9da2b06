"""The export (ranker/serve/export.py): the round trip gives identical scores, another zoo is refused, and the
shipped checkpoint loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ranker.learn import episodes
from ranker.learn.config import RunConfig
from ranker.learn.modelspider import ModelConfig, Ranker, RankerDims
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.zoo.archi2vec import zoo_vectors
from ranker.zoo.manifest import DEFAULT_MANIFEST, load_manifest


def test_export_then_load_gives_identical_scores(tmp_path: Path) -> None:
    zoo = load_manifest(DEFAULT_MANIFEST)
    dims = RankerDims(len(zoo.models), 24, [m.feature_dim for m in zoo.models])
    torch.manual_seed(1)
    net = Ranker(dims, ModelConfig(dim=16)).eval()
    config = export.ExportConfig(dims=dims, models=[m.name for m in zoo.models], general_encoder="mobilenetv2_100",
                                 rerank_k=3, run=RunConfig(model=ModelConfig(dim=16)))
    folder = export.export(tmp_path / "ck", net, config, zoo, ["a", "b"], ["linear_probe"] * 2, ["g", "h"],
                           torch.randn(2, 48), torch.randn(2, len(zoo.models)))
    loaded = export.load(folder)
    protos, mask = torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.bool)
    specific = torch.randn(2, len(zoo.models), 5, max(dims.model_dims))
    with torch.no_grad():
        assert torch.equal(loaded.net(protos, mask), net(protos, mask))
        assert torch.equal(loaded.net.rerank(protos, mask, specific, 3), net.rerank(protos, mask, specific, 3))
    assert loaded.task_ids == ["a", "b"] and loaded.task_groups == ["g", "h"] and loaded.config.rerank_k == 3
    assert torch.equal(loaded.archi2vec, zoo_vectors(DEFAULT_MANIFEST)[1])  # what places a model without history
    assert not list(tmp_path.glob(".ck.*"))  # the temporary folder was renamed into place
    assert loaded.manifest == folder / "zoo.yaml"  # no manifest given: the zoo it was trained on, from its own file
    assert [m.name for m in loaded.zoo.models] == loaded.config.models


@pytest.mark.parametrize("change, needle", [
    (lambda m: m.models.pop(), "missing from the given zoo"),
    (lambda m: setattr(m.models[0], "weights_sha256", "0" * 64), "other weights"),
    (lambda m: m.models.reverse(), "another order"),
])
def test_a_checkpoint_from_another_zoo_is_refused(tmp_path: Path, change, needle: str) -> None:
    zoo = load_manifest(DEFAULT_MANIFEST)
    dims = RankerDims(len(zoo.models), 8, [m.feature_dim for m in zoo.models])
    config = export.ExportConfig(dims=dims, models=[m.name for m in zoo.models], general_encoder="mobilenetv2_100")
    folder = export.export(tmp_path / "ck", Ranker(dims), config, zoo, ["t"], ["finetune"], ["g"], torch.ones(1, 16),
                           torch.zeros(1, len(zoo.models)))
    other = load_manifest(DEFAULT_MANIFEST)
    change(other)
    OmegaConf.save(OmegaConf.structured(other), tmp_path / "other.yaml")
    with pytest.raises(export.ExportError, match=needle):
        export.load(folder, tmp_path / "other.yaml")
    with pytest.raises(export.ExportError, match="not an exported ranker"):
        export.load(tmp_path)


def test_the_shipped_checkpoint_loads_for_the_default_zoo_and_ranks_a_test_task() -> None:
    shipped = export.load()
    bench = bm.load_benchmark()
    assert shipped.config.models == bench.models and shipped.config.general_encoder == bench.config.general_encoder
    assert set(shipped.task_ids) == set(bench.task_ids("train"))  # trained on training tasks only
    batch = episodes.collate(episodes.load_episodes(bench, bench.task_ids("test")[:1], ["finetune"]))
    scores = shipped.net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], shipped.config.rerank_k)
    assert scores.shape == (1, len(bench.models)) and torch.isfinite(scores).all()
