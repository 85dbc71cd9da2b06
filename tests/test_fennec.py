"""Fennec: shapes, scores as dot products, the cold-start vector, seeded training, and learning a task-dependent
ranking that no constant ranking has; a Fennec export served by rank.py, with a cold member."""

from __future__ import annotations

import json
import logging

import lightning as L
import numpy as np
import pytest
import torch
import yaml

import rank
import train
from ranker.learn import fennec
from ranker.learn.config import load_run_config
from ranker.learn.metrics import weighted_tau
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.tasks import features, loaders, stats
from ranker.zoo import manifest as zoo
from ranker.zoo.archi2vec import archi2vec

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def _net(model_side: str = "both", num_models: int = 5, archi_dim: int = 7, task_dim: int = 12) -> fennec.Fennec:
    torch.manual_seed(0)
    return fennec.Fennec(torch.rand(num_models, archi_dim), task_dim, latent=4, model_side=model_side)


@pytest.mark.parametrize("side", fennec.MODEL_SIDES)
def test_scores_are_dot_products_of_task_and_model_vectors(side: str) -> None:
    net = _net(side)
    summary = torch.randn(3, 12)
    unit = summary / summary.norm(dim=1, keepdim=True)
    task = unit @ net.task_map.weight.T + net.task_map.bias
    free = net.free if side != "archi" else torch.zeros(5, 4)
    mapped = net.archi @ net.archi_map.weight.T if side != "free" else torch.zeros(5, 4)
    scores = net.score(summary)
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, task @ (free + mapped).T)
    assert (net.free is None) == (side == "archi") and (net.archi_map is None) == (side == "free")


def test_cold_start_vector_is_the_archi_map_alone() -> None:
    net = _net()
    new = torch.rand(2, 7)
    torch.testing.assert_close(net.model_vector(new), new @ net.archi_map.weight.T)
    with torch.no_grad():
        net.free.zero_()
    torch.testing.assert_close(net.model_vectors(), net.model_vector(net.archi))  # a zoo model with no free part
    with pytest.raises(ValueError, match="no archi2vec map"):
        _net("free").model_vector(new)


def _synthetic(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Tasks whose summary's first slot x in [-1, 1] decides the order of 6 models (accuracy 70 + 10 x w_m, w_m from
    -1 to 1), so the ranking flips with x's sign; noise slots and one NaN target per task."""
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    summary = torch.cat([x, torch.ones(n, 1), 0.1 * torch.randn(n, 6, generator=generator)], 1)
    target = 70 + 10 * x * torch.linspace(-1, 1, 6) + 0.5 * torch.randn(n, 6, generator=generator)
    target[torch.arange(n), torch.randint(0, 6, (n,), generator=generator)] = float("nan")
    return summary, target


def test_learns_a_task_dependent_ranking_a_constant_one_misses() -> None:
    generator = torch.Generator().manual_seed(0)
    train, val, test = (_synthetic(n, generator) for n in (40, 10, 30))
    L.seed_everything(0, verbose=False)
    net = fennec.fit_net(fennec.Fennec(torch.rand(6, 3, generator=generator), 8, latent=4), train, val, lr=3e-2,
                         max_epochs=150)
    constant = torch.nanmean(train[1], 0)  # the prior: each model's mean training accuracy
    with torch.no_grad():
        learned = np.mean([weighted_tau(g, s) for g, s in zip(test[1].numpy(), net.score(test[0]).numpy())])
    prior = np.mean([weighted_tau(g, constant.numpy()) for g in test[1].numpy()])
    assert learned > 0.6 and learned > prior + 0.5, (learned, prior)


@pytest.mark.integration
def test_training_on_the_offline_benchmark_is_seeded() -> None:
    bench = bm.load_benchmark("offline")
    val = load_run_config().data.val_tasks or bench.validation_tasks()
    train = [t for t in bench.task_ids("train") if t not in val][:8]
    nets = [fennec.fit_fennec(bench, train, val[:3], seed=seed, max_epochs=3) for seed in (1, 1, 2)]
    test = fennec.summaries(bench, bench.task_ids("test"))
    with torch.no_grad():
        scores = [net.score(test) for net in nets]
    assert scores[0].shape == (13, len(bench.models))
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    assert not torch.allclose(scores[0], scores[2])


def test_a_state_dict_round_trips_and_cold_models_leave_the_trained_vectors_alone() -> None:
    for side in fennec.MODEL_SIDES:
        net = _net(side)
        again = fennec.Fennec.from_state(net.state_dict())
        summary = torch.randn(2, 12)
        torch.testing.assert_close(again.score(summary), net.score(summary), rtol=0, atol=0)
    net = _net()
    new = torch.rand(2, 7)
    cold = fennec.with_cold_models(net, new)
    with torch.no_grad():
        torch.testing.assert_close(cold.model_vectors()[:5], net.model_vectors(), rtol=0, atol=0)
        torch.testing.assert_close(cold.model_vectors()[5:], net.model_vector(new))  # A a: no free part
    with pytest.raises(ValueError, match="no archi2vec map"):
        fennec.with_cold_models(_net("free"), new)


@pytest.mark.integration
def test_a_fennec_run_exports_a_checkpoint_that_rank_py_serves_with_a_cold_member(tmp_path, capsys) -> None:
    """``train.py ranker=fennec`` exports; rank.py ranks the demo with it (scores = Fennec's dot products from the
    demo's general-encoder summary), adds v2's dog-breed MobileNetV2 cold at ``A a`` without moving the trained
    models' scores, and refuses a re-ranking depth, which would re-score nothing."""
    assert train.main(["ranker=fennec", "name=f", "data.benchmark=offline", f"export_dir={tmp_path}",
                       f"out_dir={tmp_path}/runs", "trainer.max_epochs=20"]) == 0
    folder = tmp_path / "f"
    exported = export.load(folder)
    assert isinstance(exported.net, fennec.FennecScorer) and exported.config.rerank_k == 0
    task = loaders.load_dataset(str(rank.DEMO))
    general = zoo.load_extractor(exported.config.general_encoder)
    summary = stats.summary_vector(stats.class_prototypes(features.extract(general, task, progress=False),
                                                          torch.as_tensor(task.labels), task.num_classes))
    with torch.no_grad():
        expected = exported.net.net.score(summary[None])[0]
    assert rank.main(["--checkpoint", str(folder), "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["k"] == 0 and {r["stage"] for r in result["ranking"]} == {"score"}
    scores = {r["model"]: r["score"] for r in result["ranking"]}
    assert [r["model"] for r in result["ranking"]] == [exported.config.models[i] for i in expected.argsort(
        descending=True)]
    np.testing.assert_allclose([scores[m] for m in exported.config.models], expected.numpy(), rtol=1e-5, atol=1e-5)

    v2 = yaml.safe_load((zoo.REPO_ROOT / "ranker" / "configs" / "zoo" / "v2.yaml").read_text())
    dogs = next(m for m in v2["models"] if m["name"] == "mobilenetv2_100_dogs")
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"name": "offline-and-dogs", "extends": str(zoo.DEFAULT_MANIFEST),
                                        "models": [dogs]}))
    assert rank.main(["--checkpoint", str(folder), "--manifest", str(manifest), "--json",
                      str(tmp_path / "c.json")]) == 0
    rows = json.loads((tmp_path / "c.json").read_text())["ranking"]
    assert [r["model"] for r in rows if r["cold"]] == ["mobilenetv2_100_dogs"]
    net, dog = exported.net.net, archi2vec(zoo.load_manifest(manifest).models[-1])
    with torch.no_grad():
        dog_score = net.task_vector(summary[None])[0] @ net.model_vector(dog[None])[0]
    by_model = {r["model"]: r["score"] for r in rows}
    assert by_model["mobilenetv2_100_dogs"] == pytest.approx(float(dog_score), abs=1e-5)
    assert all(by_model[m] == pytest.approx(scores[m], abs=1e-6) for m in scores)
    capsys.readouterr()
    assert rank.main(["--checkpoint", str(folder), "--rerank", "3"]) == 2
    assert "fennec checkpoint" in capsys.readouterr().err
