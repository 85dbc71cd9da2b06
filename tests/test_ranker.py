"""The learned ranker: model invariances, training on the embedded benchmark, export round trip, zoo checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import train
from ranker import evaluate
from ranker.learn import episodes, lit, losses, selection
from ranker.learn.config import CONFIGS_DIR, RunConfig, load_run_config
from ranker.learn.modelspider import ModelConfig, Ranker, RankerDims
from ranker.serve import export
from ranker.tasks import benchmark as bm
from ranker.zoo.archi2vec import zoo_vectors
from ranker.zoo.manifest import DEFAULT_MANIFEST, load_manifest


def _net(models: int = 4, dims: tuple[int, ...] = (8, 16, 8, 12), general: int = 10,
         calibrated: bool = False) -> Ranker:
    """Model Spider's network alone by default (its mechanics); ``calibrated`` adds Ranker v2's terms."""
    torch.manual_seed(0)
    return Ranker(RankerDims(models, general, list(dims)), ModelConfig(dim=16, dropout=0.0, calibrated=calibrated)
                  ).eval()


def test_scores_ignore_class_order_and_padding() -> None:
    net = _net()
    protos = torch.randn(1, 3, 10)
    scores = net(protos, torch.ones(1, 3, dtype=torch.bool))
    shuffled = net(protos[:, [2, 0, 1]], torch.ones(1, 3, dtype=torch.bool))
    padded = net(torch.cat([protos, torch.randn(1, 2, 10)], 1), torch.tensor([[True, True, True, False, False]]))
    assert scores.shape == (1, 4)
    torch.testing.assert_close(shuffled, scores)
    torch.testing.assert_close(padded, scores)


def test_specific_tokens_change_only_their_models_score() -> None:
    net = _net()
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    specific = torch.randn(2, 4, 3, 16)
    has = torch.tensor([[False, True, False, False], [False, False, False, False]])
    plain, enriched = net(protos, mask), net(protos, mask, specific, has)
    changed = (plain - enriched).abs() > 1e-6
    assert changed.tolist() == has.tolist()


def test_scoring_a_subset_of_models_gives_their_columns_of_the_full_scores() -> None:
    net = _net()
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    specific, has = torch.randn(2, 4, 3, 16), torch.tensor([[True, False, True, True], [False, True, True, False]])
    models = torch.tensor([3, 1])
    with torch.no_grad():
        full = net(protos, mask, specific, has)
        subset = net(protos, mask, specific[:, models], has[:, models], models=models)
    torch.testing.assert_close(subset, full[:, models])


def test_rerank_reorders_only_the_top_k() -> None:
    net = _net(models=6, dims=(8,) * 6)
    protos, mask = torch.randn(3, 4, 10), torch.ones(3, 4, dtype=torch.bool)
    specific = torch.randn(3, 6, 4, 8)
    with torch.no_grad():  # as rerank runs (eval mode without autograd takes PyTorch's fused attention path)
        plain = net(protos, mask)
        full = net(protos, mask, specific, torch.ones(3, 6, dtype=torch.bool))
    assert torch.equal(net.rerank(protos, mask, specific, 0), plain)
    final = net.rerank(protos, mask, specific, 2)
    for b in range(3):
        top = plain[b].topk(2).indices
        order = final[b].argsort(descending=True)
        assert set(order[:2].tolist()) == set(top.tolist())  # the same two models stay on top ...
        assert order[0] == top[full[b, top].argmax()]  # ... in the order their specific tokens give
        rest = [i for i in plain[b].argsort(descending=True).tolist() if i not in top.tolist()]
        assert order[2:].tolist() == rest  # the others keep their plain order


def test_the_calibration_starts_at_the_least_squares_fit_of_its_own_form() -> None:
    targets = torch.tensor([[1.0, 2.0, 3.0], [10.0, float("nan"), 30.0], [5.0, 5.0, 5.0]])
    logme = torch.tensor([[0.0, 1.0, 2.0], [4.0, 2.0, 0.0], [float("nan")] * 3])
    net = _net(models=3, dims=(8,) * 3, calibrated=True)
    net.calibration.set_start(targets, logme)
    # the prior is the mean accuracy's order (the floor every ranking is held to), on a z scale: rows centred,
    # (-1, 0, 1), (-10, -, 10), (0, 0, 0), divided by their pooled spread over the 8 measured cells
    pooled = (202 / 8) ** 0.5
    torch.testing.assert_close(net.calibration.prior, torch.tensor([-11 / 3, 0.0, 11 / 3]) / pooled)
    # LogME z: row 0 (-z, 0, z), row 1 (z, 0, -z), row 2 unmeasured: each model's mean over its two rows is 0
    z = 1.5**0.5
    torch.testing.assert_close(net.calibration.evidence_offset, torch.zeros(3))
    # the slope through the origin over the five cells measured on both sides, of the target z (row 0 (-z, 0, z),
    # row 1 (-1, -, 1), row 2 no spread (0, 0, 0)) centred on each model's mean, on the centred LogME z
    target_z = torch.tensor([[-z, 0, z], [-1, 0, 1]])
    mean_z = torch.tensor([(-z - 1) / 3, 0.0, (z + 1) / 3])
    x, y = torch.tensor([[-z, 0, z], [z, 0, -z]]), target_z - mean_z
    y[1, 1] = x[1, 1] = 0  # model 1's accuracy on task 1 is unmeasured
    torch.testing.assert_close(net.calibration.evidence_weight, (x * y).sum() / (x * x).sum())


def test_training_starts_the_calibrated_prior_at_the_prior_every_ranking_is_held_to() -> None:
    cfg = load_run_config(overrides=["trainer.accelerator=cpu"])
    data = episodes.EpisodeDataModule(cfg)
    data.setup()
    module = lit.RankerModule(cfg, Ranker(data.dims, cfg.model))
    module._trainer = SimpleNamespace(datamodule=data)  # the hook reads the trainer's datamodule alone
    module.setup("fit")
    # each model's mean accuracy on every training-role task, the validation tasks included (evaluate's prior),
    # centred and scaled: the same order and the same gaps between models
    means = evaluate.prior_means(data.bench, data.bench.task_ids("train"))[1]
    start = module.net.calibration.prior.detach().double().numpy()
    np.testing.assert_allclose((start - start.mean()) / start.std(), (means - means.mean()) / means.std(), atol=1e-5)


def test_a_fresh_calibrated_ranker_says_the_prior_whatever_the_task_until_models_embed_it() -> None:
    net = _net(calibrated=True)
    # models 1 and 3 trade places between tasks, and their LogME follows: the fitted weight is positive
    net.calibration.set_start(torch.tensor([[3.0, 1.0, 4.0, 2.0], [3.0, 2.0, 4.0, 1.0], [3.0, 1.0, 4.0, 2.0]]),
                              torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]]))
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    assert net(protos, mask).argsort(1, descending=True).tolist() == [[2, 0, 3, 1]] * 2
    assert net.calibration.evidence_weight > 0
    # embedded, model 1's LogME now above its training mean and model 3's below: model 1 passes model 3
    specific, has = torch.randn(2, 4, 3, 16), torch.ones(2, 4, dtype=torch.bool)
    moved = net(protos, mask, specific, has, evidence=torch.tensor([[0.0, 3.0, 2.0, 1.0]] * 2))
    plain = net(protos, mask, specific, has)
    assert (plain[:, 3] > plain[:, 1]).all() and (moved[:, 1] > moved[:, 3]).all()


def test_evidence_moves_only_embedded_models_and_its_scale_does_not_matter() -> None:
    net = _net(calibrated=True)
    with torch.no_grad():
        net.calibration.evidence_weight.fill_(1.0)
    protos, mask = torch.randn(1, 3, 10), torch.ones(1, 3, dtype=torch.bool)
    specific, has = torch.randn(1, 4, 3, 16), torch.tensor([[True, True, True, False]])
    logme = torch.tensor([[0.5, 0.9, 0.1, 7.0]])
    with torch.no_grad():
        plain = net(protos, mask, specific, has)
        moved = net(protos, mask, specific, has, evidence=logme)
        rescaled = net(protos, mask, specific, has, evidence=10 * logme - 3)
    z = (logme[0, :3] - logme[0, :3].mean()) / logme[0, :3].std(unbiased=False)
    torch.testing.assert_close((moved - plain)[0], torch.cat([z, torch.zeros(1)]))
    torch.testing.assert_close(rescaled, moved)


def test_the_model_spider_factor_is_chosen_over_every_served_depth_then_k_at_it() -> None:
    # M = 4: depths 0..2 count. Factor 0.25 holds the single best cell (k=2) but is worse at k=0 and k=1; the
    # factor serves every depth, so 0.5 wins (means 0.540 vs 0.573) and k is its best depth. Depths above M // 2
    # do not count, however good.
    sweeps = {0.25: [0.50, 0.52, 0.60, 0.55, 0.90], 0.5: [0.56, 0.57, 0.59, 0.58, 0.40]}
    assert selection.choose(sweeps) == (0.5, 2)
    assert selection.choose({0.0: [0.5, 0.5, 0.5], 1.0: [0.5, 0.5, 0.5]}) == (0.0, 0)  # ties: smaller factor, smaller k


def test_every_shipped_train_yaml_matches_the_config_classes() -> None:
    for path in sorted((CONFIGS_DIR / "train").glob("*.yaml")):
        cfg = load_run_config(path, ["model.dim=32", "trainer.max_epochs=2"])
        assert isinstance(cfg, RunConfig) and cfg.model.dim == 32 and cfg.trainer.max_epochs == 2
    with pytest.raises(Exception, match="nonexistent"):
        load_run_config(overrides=["model.nonexistent=1"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, float, float]:
    """A short run of train.py's fit on the embedded benchmark: config, export folder, loss before and after."""
    root = tmp_path_factory.mktemp("run")
    cfg = load_run_config(overrides=[f"out_dir={root}/runs", f"export_dir={root}/ckpt", "name=t",
                                     "trainer.max_epochs=16", "trainer.check_val_every_n_epoch=8", "optim.lr=3e-3",
                                     "trainer.accelerator=cpu"])
    data = episodes.EpisodeDataModule(cfg)
    data.setup()
    batch = episodes.collate(data.train_episodes)

    def loss(net: Ranker) -> float:
        with torch.no_grad():
            return float(losses.get(cfg.optim.loss)(net.eval()(batch["prototypes"], batch["class_mask"]),
                                                    batch["target"]))

    L.seed_everything(cfg.seed)  # lit.train seeds the same way before it builds the network
    before = loss(Ranker(data.dims, cfg.model))
    folder = train.fit(cfg, data)
    after = loss(export.load(folder).net)
    return cfg, folder, before, after


@pytest.mark.integration
def test_training_on_the_benchmark_lowers_the_loss_and_exports(trained) -> None:
    cfg, folder, before, after = trained
    assert after < before - 0.5, (before, after)
    assert sorted(p.name for p in folder.iterdir()) == sorted(export.FILES)
    saved = OmegaConf.load(Path(cfg.out_dir) / cfg.name / "config.yaml")
    assert saved.trainer.max_epochs == 16 and saved.optim.lr == 3e-3  # the resolved config beside the run
    exported = export.load(folder)
    assert 0 <= exported.config.rerank_k <= len(exported.config.models)
    assert exported.config.spider_factor in selection.SPIDER_FACTORS  # recorded for retrainings (cold_start.py)
    data = episodes.EpisodeDataModule(cfg)
    assert exported.task_ids == data.train_ids + data.val_ids
    assert exported.summary.shape[0] == exported.performance.shape[0] == len(exported.task_ids)


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


@pytest.mark.parametrize("args, needle", [
    (["model.nonexistent=1"], "nonexistent"),
    (["model.dim=wide"], "dim"),
    (["data.val_tasks=[digits-10way]"], "not training-role tasks"),
    (["data.benchmark=nope"], "no benchmark 'nope'"),
])
@pytest.mark.integration
def test_train_cli_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, capsys) -> None:
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: ") and needle in err and "\n" not in err


@pytest.mark.integration
def test_ddp_by_config_alone_trains_and_exports_once(tmp_path: Path) -> None:
    """Two CPU processes (gloo) stand in for GPUs: the same config fields select devices and strategy on a cluster."""
    run = subprocess.run(
        [sys.executable, "train.py", f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt", "name=ddp",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=4",
         "trainer.check_val_every_n_epoch=2"],
        cwd=Path(train.__file__).parent, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MEMBER: 2/2" in run.stderr + run.stdout  # a second process really joined
    assert export.load(tmp_path / "ckpt" / "ddp").config.run.trainer.devices == "2"


@pytest.mark.integration
def test_training_resumes_from_a_lightning_checkpoint(tmp_path: Path) -> None:
    base = [f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt", "name=r", "trainer.check_val_every_n_epoch=1"]
    cfg = load_run_config(overrides=base + ["trainer.max_epochs=2"])
    data = episodes.EpisodeDataModule(cfg)
    train.fit(cfg, data)
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.ckpt"
    resumed = load_run_config(overrides=base + ["trainer.max_epochs=4", f"ckpt_path={last}"])
    train.fit(resumed, data)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 4 * len(data.train_dataloader())


def test_the_shipped_checkpoint_loads_for_the_default_zoo_and_ranks_a_test_task() -> None:
    shipped = export.load()
    bench = bm.load_benchmark()
    assert shipped.config.models == bench.models and shipped.config.general_encoder == bench.config.general_encoder
    assert set(shipped.task_ids) == set(bench.task_ids("train"))  # trained on training tasks only
    batch = episodes.collate(episodes.load_episodes(bench, ["digits-10way"], ["finetune"]))
    scores = shipped.net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], shipped.config.rerank_k)
    assert scores.shape == (1, len(bench.models)) and torch.isfinite(scores).all()


def test_a_cold_model_borrows_its_nearest_architectures_token_and_prior_and_changes_no_other_score() -> None:
    net = _net(calibrated=True)
    with torch.no_grad():
        net.calibration.prior.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        net.calibration.spider_scale.fill_(0.7)
    trained = torch.eye(4)  # four unrelated architectures; the new one is the third's
    cold = net.with_cold_models(trained, torch.eye(4)[2:3], [24])
    assert cold.dims.num_models == 5 and cold.dims.model_dims[-1] == 24
    torch.testing.assert_close(cold.tokens.weight[4], net.tokens.weight[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(cold.calibration.prior[4], torch.tensor(2.0), atol=1e-5, rtol=0)
    protos, mask = torch.randn(2, 3, 10), torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        before, after = net(protos, mask), cold(protos, mask)
    torch.testing.assert_close(after[:, :4], before)
    torch.testing.assert_close(after[:, 4], before[:, 2], atol=1e-4, rtol=0)
