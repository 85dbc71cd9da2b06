"""Lightning glue of Model Spider's ranker: the LightningModule that trains it listwise, and the training run.

In training every episode (:mod:`ranker.learn.episodes`), with probability ``optim.specific_prob``, gives
PTM-specific tokens to k ~ U[0, M] random models, so that one network learns both to rank (no specific tokens) and
to re-rank (Model Spider). Validation scores the held-out tasks without specific tokens (``val/wtau``, the
checkpoint monitor) and with them for every model (``val/wtau_specific``, the most re-ranking could give).
:mod:`ranker.learn.selection` chooses what the trained network serves with.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from ranker.files import write_atomic
from ranker.learn import losses
from ranker.learn.config import RunConfig, to_yaml
from ranker.learn.episodes import EpisodeDataModule, mix_seeds
from ranker.learn.metrics import NDCG, KendallTau, Top1Regret, WeightedTau
from ranker.learn.modelspider import Ranker


def _metrics(prefix: str) -> torch.nn.ModuleDict:
    metrics = {"wtau": WeightedTau("rank_none"), "wtau_sym": WeightedTau("symmetric"), "kendall": KendallTau(),
               "ndcg3": NDCG(k=3), "regret": Top1Regret()}
    return torch.nn.ModuleDict({prefix + name: metric for name, metric in metrics.items()})


class RankerModule(L.LightningModule):
    """Trains a :class:`~ranker.learn.modelspider.Ranker` ``net`` with a listwise loss on episodes; validates with
    ranking metrics."""

    def __init__(self, cfg: RunConfig, net: Ranker) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = net
        self.loss = losses.get(cfg.optim.loss)
        self.plain_metrics, self.specific_metrics = _metrics(""), _metrics("specific_")

    def _specific_draw(self, has_specific: torch.Tensor) -> torch.Tensor:
        """Per episode (with probability ``specific_prob``): k ~ U[0, M] random models among those with prototypes."""
        b, m = has_specific.shape
        k = torch.randint(0, m + 1, (b, 1), device=has_specific.device)
        k = k * (torch.rand(b, 1, device=has_specific.device) < self.cfg.optim.specific_prob)
        order = torch.rand(b, m, device=has_specific.device).argsort(1).argsort(1)  # a random rank per model
        return (order < k) & has_specific

    def setup(self, stage: str) -> None:
        """Starts a calibrated ranker (``set_start``) on every task of this run, validation tasks included, so that
        its prior is exactly the prior every ranking is held to: each model's mean accuracy on the training-role
        tasks (``benchmarks/prior_variants.py`` compares the alternatives). A resumed run's checkpoint, which
        Lightning restores after this hook, replaces it."""
        if stage == "fit" and self.net.calibration is not None:
            episodes = self.trainer.datamodule.train_episodes + self.trainer.datamodule.val_episodes
            self.net.calibration.set_start(torch.stack([e.target for e in episodes]),
                                           torch.stack([e.evidence for e in episodes]))

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Seeds this step's randomness (dropout, the specific-token draw) from (seed, step, process) alone, so a
        resumed run takes the same steps as the uninterrupted one."""
        torch.manual_seed(mix_seeds(self.cfg.seed, self.global_step, self.global_rank))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        mask = self._specific_draw(batch["has_specific"])
        scores = self.net(batch["prototypes"], batch["class_mask"], batch["specific"], mask,
                          evidence=batch["evidence"])
        loss = self.loss(scores, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(scores))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        plain = self.net(batch["prototypes"], batch["class_mask"])
        specific = self.net(batch["prototypes"], batch["class_mask"], batch["specific"], batch["has_specific"],
                            evidence=batch["evidence"])
        self.log("val/loss", self.loss(plain, batch["target"]), batch_size=len(plain), sync_dist=True)
        for metrics, scores in ((self.plain_metrics, plain), (self.specific_metrics, specific)):
            for name, metric in metrics.items():
                metric.update(scores, batch["target"])
                self.log(f"val/{name}", metric, prog_bar=name == "wtau", batch_size=len(scores))

    def configure_optimizers(self):
        named = dict(self.named_parameters())
        calibration = {n: p for n, p in named.items() if n.startswith("net.calibration.")}
        groups = [{"params": [p for n, p in named.items() if n not in calibration]}]
        if calibration:  # a handful of scalars: their own step size, and no decay of the prior (decay shrinks to it)
            groups.append({"params": [p for n, p in calibration.items() if n != "net.calibration.prior"],
                           "lr": self.cfg.optim.calibration_lr})
            groups.append({"params": [calibration["net.calibration.prior"]], "lr": self.cfg.optim.calibration_lr,
                           "weight_decay": 0.0})
        optimizer = torch.optim.Adam(groups, lr=self.cfg.optim.lr, weight_decay=self.cfg.optim.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


LIGHTNING_INFO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")
"""Loggers of the lines Lightning prints for every Trainer it builds (devices, why fit stopped, the seed)."""


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer info lines off inside the block (warnings still show): a history build or an inner
    cross-validation builds one Trainer per pair or fold, and their lines would bury the progress bar."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def train(cfg: RunConfig, data: EpisodeDataModule, net_class: type[Ranker], inner: bool = False
          ) -> tuple[Ranker, ModelCheckpoint] | None:
    """Trains a ``net_class`` for ``data.dims`` in ``<out_dir>/<name>/`` (config.yaml, ``last.ckpt`` every epoch,
    ``best.ckpt`` by val/wtau, CSV logs; ``overwrite`` empties the folder first unless ``ckpt_path`` resumes it) and
    returns the best validation checkpoint's network (CPU, eval mode) and that checkpoint's callback; None in DDP's
    other processes. The network is built after seeding, so its initial weights follow ``cfg.seed``. ``inner``: an
    inner fit of model selection, which shows its own progress and is never resumed: no progress bar, no Lightning
    info lines and no ``last.ckpt`` (written every epoch, it cost an inner fit a quarter of its time)."""
    with quiet_lightning() if inner else contextlib.nullcontext():
        return _train(cfg, data, net_class, inner)


def _train(cfg: RunConfig, data: EpisodeDataModule, net_class: type[Ranker], inner: bool
           ) -> tuple[Ranker, ModelCheckpoint] | None:
    L.seed_everything(cfg.seed, workers=True)
    module = RankerModule(cfg, net_class(data.dims, cfg.model))
    run_dir = Path(cfg.out_dir) / cfg.name
    if rank_zero_only.rank == 0:  # DDP's other processes rerun the script once rank 0 has made the folder
        if cfg.overwrite and cfg.ckpt_path is None and run_dir.exists():
            shutil.rmtree(run_dir)
        write_atomic(run_dir / "config.yaml", to_yaml(cfg).encode())
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/wtau", mode="max",
                           enable_version_counter=False)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", every_n_epochs=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)  # no monitor: the latest
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes, strategy=cfg.trainer.strategy, precision=cfg.trainer.precision,
        logger=CSVLogger(run_dir, name="logs"), callbacks=[best] if inner else [best, last],
        log_every_n_steps=cfg.trainer.log_every_n_steps, default_root_dir=run_dir, enable_model_summary=False,
        enable_progress_bar=not inner,
        # validate at least once, at the last epoch, when max_epochs is below the validation interval
        check_val_every_n_epoch=min(cfg.trainer.check_val_every_n_epoch, cfg.trainer.max_epochs),
    )
    trainer.fit(module, datamodule=data, ckpt_path=cfg.ckpt_path)
    if not trainer.is_global_zero:
        return None
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    net = module.net.cpu()
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    return net, best

