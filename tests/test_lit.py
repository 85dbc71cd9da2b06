"""Training (ranker/learn/lit.py): the calibrated prior starts at the prior, a short run lowers the loss and exports,
DDP by config alone, and resuming from a Lightning checkpoint."""

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
from ranker.learn.config import RunConfig, load_run_config
from ranker.learn.modelspider import Ranker
from ranker.serve import export


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, float, float]:
    """A short run of train.py's fit on the embedded benchmark: config, export folder, loss before and after."""
    root = tmp_path_factory.mktemp("run")
    cfg = load_run_config(overrides=[f"out_dir={root}/runs", f"export_dir={root}/ckpt", "name=t",
                                     "trainer.max_epochs=8", "trainer.check_val_every_n_epoch=4", "optim.lr=3e-3",
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


def test_training_starts_the_calibrated_prior_at_the_prior_every_ranking_is_held_to() -> None:
    """On a history with every (task, model) pair measured; where pairs are missing, centring each task on the
    models it has moves the start slightly off the plain means (by 8e-4 on v3's z scale with two pairs missing)."""
    cfg = load_run_config(overrides=["trainer.accelerator=cpu", "data.benchmark=offline"])
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


@pytest.mark.integration
def test_training_on_the_benchmark_lowers_the_loss_and_exports(trained) -> None:
    cfg, folder, before, after = trained
    assert after < before - 0.5, (before, after)
    assert sorted(p.name for p in folder.iterdir()) == sorted(export.FILES)
    saved = OmegaConf.load(Path(cfg.out_dir) / cfg.name / "config.yaml")
    assert saved.trainer.max_epochs == 8 and saved.optim.lr == 3e-3  # the resolved config beside the run
    exported = export.load(folder)
    assert 0 <= exported.config.rerank_k <= len(exported.config.models)
    assert exported.config.spider_factor in selection.SPIDER_FACTORS  # recorded for retrainings (cold_start.py)
    data = episodes.EpisodeDataModule(cfg)
    assert exported.task_ids == data.train_ids + data.val_ids
    assert exported.summary.shape[0] == exported.performance.shape[0] == len(exported.task_ids)


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
    base = [f"out_dir={tmp_path}/runs", f"export_dir={tmp_path}/ckpt", "name=r", "trainer.check_val_every_n_epoch=1",
            "data.benchmark=offline"]  # 4 groups: the fewest inner fits, which resuming never reads
    cfg = load_run_config(overrides=base + ["trainer.max_epochs=2"])
    data = episodes.EpisodeDataModule(cfg)
    train.fit(cfg, data)
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.ckpt"
    resumed = load_run_config(overrides=base + ["trainer.max_epochs=4", f"ckpt_path={last}"])
    train.fit(resumed, data)
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 4 * len(data.train_dataloader())
