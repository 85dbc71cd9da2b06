"""Lightning glue: episodes of historical tasks (a DataModule) and the listwise training of the ranker.

An episode is one historical task: its general-encoder class prototypes, every zoo model's own prototypes
(for PTM-specific tokens) and its ground-truth vector over the zoo, taken from the first kind in
``data.target_kinds`` that measured at least two models of that task (kinds are never mixed within a task:
probe accuracies, fine-tuning accuracies and proxy scores live on different scales). Unmeasured models are NaN
and masked out of the loss and the metrics.

In training every episode, with probability ``optim.specific_prob``, gives PTM-specific tokens to k ~ U[0, M]
random models, so that one network learns both to rank (no specific tokens) and to re-rank (Model Spider).
Validation scores the held-out tasks without specific tokens (``val/wtau``, the checkpoint monitor) and with
them for every model (``val/wtau_specific``, the most re-ranking could give).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ranker.files import write_atomic
from ranker.learn import losses
from ranker.learn.config import RunConfig, to_yaml
from ranker.learn.metrics import NDCG, KendallTau, Top1Regret, WeightedTau, weighted_tau
from ranker.learn.modelspider import Ranker, RankerDims
from ranker.tasks import benchmark as bm


@dataclass
class Episode:
    """One historical task as the ranker sees it."""

    task: str  # task id in the benchmark
    kind: str  # history kind of ``target``
    prototypes: torch.Tensor  # general-encoder class prototypes [C, D] float32
    specific: torch.Tensor  # each model's own prototypes [M, C, D_max] float16, zero-padded; zero if absent
    has_specific: torch.Tensor  # [M] bool: the model's prototypes are in the benchmark's model_stats
    target: torch.Tensor  # ground truth [M] float32 over the zoo, NaN where unmeasured
    evidence: torch.Tensor  # LogME [M] float32 of each model's features on the training part (history kind
    # ``logme``), NaN where not measured; a calibrated ranker weighs it for the models it embeds


def ranker_dims(bench: bm.Benchmark) -> RankerDims:
    """The ranker's shape for a benchmark's zoo and general encoder."""
    prototypes = next(iter(bench.task_stats().values()))[0]
    return RankerDims(len(bench.models), prototypes.shape[1], [e.feature_dim for e in bench.entries.values()])


def load_episodes(bench: bm.Benchmark, task_ids: list[str], target_kinds: list[str]) -> list[Episode]:
    """Episodes of ``task_ids`` in that order.

    Raises:
        ValueError: a task has no kind of ``target_kinds`` with ground truth for two models or more.
    """
    stats, own, models = bench.task_stats(), bench.model_stats(), bench.models
    width = max(e.feature_dim for e in bench.entries.values())
    episodes, missing = [], []
    for task in task_ids:
        for kind in target_kinds:
            _, _, row = bench.history.matrix(kind, [task], models)
            if np.isfinite(row).sum() >= 2:
                break
        else:
            missing.append(task)
            continue
        prototypes = stats[task][0].float()
        specific = torch.zeros(len(models), prototypes.shape[0], width, dtype=torch.float16)
        for m, model in enumerate(models):
            if model in own[task]:
                specific[m, :, : own[task][model].shape[1]] = own[task][model]
        has = torch.tensor([model in own[task] for model in models])
        evidence = torch.as_tensor(bench.history.matrix("logme", [task], models)[2][0], dtype=torch.float32)
        episodes.append(Episode(task, kind, prototypes, specific, has, torch.as_tensor(row[0], dtype=torch.float32),
                                evidence))
    if missing:
        raise ValueError(f"tasks {missing} have no ground truth of kinds {target_kinds} for two models or more; "
                         f"build it with `python -m data.build_history --benchmark {bench.config.name} --kind ...`")
    return episodes


def collate(episodes: list[Episode]) -> dict[str, torch.Tensor]:
    """Pads a list of episodes to the batch's largest class count: ``prototypes [B, C, D]``, ``class_mask [B, C]``,
    ``specific [B, M, C, D_max]`` float32, ``has_specific [B, M]``, ``target [B, M]``, ``evidence [B, M]``."""
    c = max(e.prototypes.shape[0] for e in episodes)
    b, (m, _, width), d = len(episodes), episodes[0].specific.shape, episodes[0].prototypes.shape[1]
    batch = {
        "prototypes": torch.zeros(b, c, d),
        "class_mask": torch.zeros(b, c, dtype=torch.bool),
        "specific": torch.zeros(b, m, c, width),
        "has_specific": torch.stack([e.has_specific for e in episodes]),
        "target": torch.stack([e.target for e in episodes]),
        "evidence": torch.stack([e.evidence for e in episodes]),
    }
    for i, e in enumerate(episodes):
        n = e.prototypes.shape[0]
        batch["prototypes"][i, :n] = e.prototypes
        batch["class_mask"][i, :n] = True
        batch["specific"][i, :, :n] = e.specific.float()
    return batch


class _Padded(torch.utils.data.Dataset):
    """Episodes padded once (``collate``) to their largest class count; item i is row i of every tensor."""

    def __init__(self, episodes: list[Episode]) -> None:
        self.tensors = collate(episodes)

    def __len__(self) -> int:
        return len(self.tensors["target"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class EpochShuffle(torch.utils.data.Sampler[int]):
    """A permutation per epoch drawn from (seed, epoch) alone, so a run resumed from a checkpoint visits the
    episodes in the order the uninterrupted run would have (Lightning calls ``set_epoch``; under DDP it wraps this
    sampler and splits each permutation among the processes)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def _mix(*keys: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, step, process rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


class EpisodeDataModule(L.LightningDataModule):
    """Episodes of ``tasks`` (default: the benchmark's training-role tasks): validation takes the ``data.val_tasks``
    among them, training the rest.

    Grouped cross-validation passes a fold's tasks, which may hold test-role tasks of the other groups; the
    ``data.val_tasks`` of the held-out group are then left out of validation.
    """

    def __init__(self, cfg: RunConfig, tasks: list[str] | None = None) -> None:
        super().__init__()
        self.cfg, self.seed = cfg.data, cfg.seed
        self.bench = bm.load_benchmark(self.cfg.benchmark)
        train_ids = self.bench.task_ids("train")
        if not self.cfg.val_tasks:
            raise ValueError("data.val_tasks is empty; name training-role tasks to hold out (they pick the "
                             "checkpoint and the re-ranking depth k)")
        wrong = [t for t in self.cfg.val_tasks if t not in train_ids]
        if wrong:
            raise ValueError(f"data.val_tasks {wrong} are not training-role tasks of benchmark "
                             f"{self.bench.config.name!r}; test tasks never take part in training or model choice")
        tasks = train_ids if tasks is None else tasks
        self.val_ids = [t for t in self.cfg.val_tasks if t in tasks]
        if not self.val_ids:
            raise ValueError(f"none of data.val_tasks {self.cfg.val_tasks} is among this run's tasks; name "
                             "validation tasks of two groups or more, so that every fold keeps some")
        self.train_ids = [t for t in tasks if t not in self.val_ids]
        self.dims = ranker_dims(self.bench)

    def setup(self, stage: str | None = None) -> None:
        self.train_episodes = load_episodes(self.bench, self.train_ids, self.cfg.target_kinds)
        self.val_episodes = load_episodes(self.bench, self.val_ids, self.cfg.target_kinds)

    def train_dataloader(self) -> DataLoader:
        episodes = _Padded(self.train_episodes)
        return DataLoader(episodes, batch_size=self.cfg.batch_size, sampler=EpochShuffle(len(episodes), self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Padded(self.val_episodes), batch_size=self.cfg.batch_size)


def _metrics(prefix: str) -> torch.nn.ModuleDict:
    metrics = {"wtau": WeightedTau("rank_none"), "wtau_sym": WeightedTau("symmetric"), "kendall": KendallTau(),
               "ndcg3": NDCG(k=3), "regret": Top1Regret()}
    return torch.nn.ModuleDict({prefix + name: metric for name, metric in metrics.items()})


class RankerModule(L.LightningModule):
    """Trains :class:`~ranker.learn.modelspider.Ranker` with a listwise loss on episodes; validates with ranking
    metrics."""

    def __init__(self, cfg: RunConfig, dims: RankerDims) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = Ranker(dims, cfg.model)
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
        """A calibrated ranker starts (``set_start``) on every task of this run, validation tasks included: its
        prior is then exactly the prior every ranking is held to, each model's mean accuracy on the training-role
        tasks. The mean over the training episodes alone is another list (``benchmarks/prior_variants.py``): 0.010
        lower under offline grouped CV, on v2's test tasks 0.016 higher in tau but with a top-1 regret of 5.24
        points instead of 2.85. A resumed run's checkpoint, which Lightning restores after this hook, replaces
        it."""
        if stage == "fit" and self.net.calibration is not None:
            episodes = self.trainer.datamodule.train_episodes + self.trainer.datamodule.val_episodes
            self.net.calibration.set_start(torch.stack([e.target for e in episodes]),
                                           torch.stack([e.evidence for e in episodes]))

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Seeds this step's randomness (dropout, the specific-token draw) from (seed, step, process) alone, so a
        resumed run takes the same steps as the uninterrupted one."""
        torch.manual_seed(_mix(self.cfg.seed, self.global_step, self.global_rank))

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


@torch.no_grad()
def rerank_sweep(net: Ranker, episodes: list[Episode]) -> list[float]:
    """Mean weighted tau (rank=None) over ``episodes`` of the re-ranked scores for each depth k = 0..M (computed
    in this process alone: after a DDP fit only rank 0 calls it)."""
    batch = collate(episodes)
    taus = []
    for k in range(batch["target"].shape[1] + 1):
        scores = net.rerank(batch["prototypes"], batch["class_mask"], batch["specific"], k, batch["evidence"])
        taus.append(float(np.mean([weighted_tau(g, s) for g, s in zip(batch["target"].numpy(), scores.numpy(),
                                                                       strict=True)])))
    return taus


SPIDER_SHRINK = (0.0, 0.25, 0.5, 1.0)
"""Factors on a calibrated ranker's learned Model Spider scale that ``fit`` chooses among: its task-conditioned
term can learn which dataset a task came from, which helps on tasks like the training ones and hurts on new ones
(issue 15's study)."""


@dataclass
class Fitted:
    """A finished run: the best validation checkpoint's network, and what was chosen for it.

    A calibrated ranker's Model Spider factor and re-ranking depth are chosen by grouped cross-validation inside
    the run's tasks (``select``): each task group held out in turn, a ranker trained on the others, the factor and
    k scored on the held-out group. Model Spider's ranker (or a run whose tasks form one group, or a DDP run)
    chooses k on the validation tasks.
    """

    net: Ranker  # CPU, eval mode (a ranker=fennec run: a ranker.learn.fennec.FennecScorer, same calls)
    rerank_k: int  # the chosen depth, at most M // 2 (ties: the smaller k; Fennec: 0)
    sweep: list[float]  # the tau (rank=None) that chose it, by depth k = 0..M, at the chosen factor (Fennec: k=0)
    best_score: float  # the best val/wtau
    best_path: str  # its Lightning checkpoint ("" for Fennec, fitted in memory)
    spider_shrink: float = 1.0  # the factor on a calibrated ranker's Model Spider scale
    chosen_by: str = "validation"  # "validation", or "grouped cross-validation over <groups>"


def _choose(sweeps: dict[float, list[float]]) -> tuple[float, int]:
    """(factor, k): the factor of the best mean tau over the depths k = 0..M // 2, then the depth of the best tau at
    that factor; ties: the smaller factor, the smaller k.

    The factor is chosen over every depth, not jointly with k, because one factor serves every depth ``rank.py``
    runs (``--rerank K``, k=0 included), and because the joint best is a single noisy cell: on Benchmark v2 the
    factors 0.25 and 0.5 tied at k=11 within 0.01, the joint choice flipped between them with the training seed,
    and at k=0 they differ by 0.015-0.03.
    """
    depths = len(next(iter(sweeps.values()))) // 2 + 1
    factor = max(sweeps, key=lambda f: (round(float(np.mean(sweeps[f][:depths])), 6), -f))
    return factor, max(range(depths), key=lambda k: (round(sweeps[factor][k], 6), -k))


def _sweeps(net: Ranker, episodes: list[Episode]) -> dict[float, list[float]]:
    """``rerank_sweep`` at each factor of SPIDER_SHRINK (the net's scale is restored afterwards)."""
    learned, out = net.calibration.spider_scale.detach().clone(), {}
    for factor in SPIDER_SHRINK:
        net.calibration.spider_scale.data = learned * factor
        out[factor] = rerank_sweep(net, episodes)
    net.calibration.spider_scale.data = learned
    return out


def select(cfg: RunConfig, data: EpisodeDataModule) -> tuple[dict[float, list[float]], list[str]]:
    """Grouped cross-validation inside the run's tasks (training and validation, by their benchmark ``group``):
    per group, a ranker trained on the other groups (validating on their ``data.val_tasks``) in
    ``<out_dir>/<name>/inner/``, scored on the held-out group at every factor and depth. Returns the task-weighted
    mean tau by factor and depth, and the groups held out (a group is skipped when no validation task is left
    outside it)."""
    group = {t.id: t.group_name for t in data.bench.config.tasks}
    tasks = data.train_ids + data.val_ids
    totals, count, used = {}, 0, []
    for i, name in enumerate(dict.fromkeys(group[t] for t in tasks)):
        held = [t for t in tasks if group[t] == name]
        inner = copy.deepcopy(cfg)
        inner.name, inner.out_dir, inner.ckpt_path, inner.overwrite = f"inner{i}", str(Path(cfg.out_dir) / cfg.name
                                                                                        / "inner"), None, True
        try:
            inner_data = EpisodeDataModule(inner, [t for t in tasks if group[t] != name])
        except ValueError:  # no validation task outside this group
            continue
        inner_data.setup()
        net = train(inner, inner_data)[0]
        for factor, sweep in _sweeps(net, load_episodes(data.bench, held, cfg.data.target_kinds)).items():
            totals[factor] = totals.get(factor, 0) + len(held) * np.asarray(sweep)
        count, used = count + len(held), used + [name]
    return {f: (t / max(count, 1)).tolist() for f, t in totals.items()}, used


def train(cfg: RunConfig, data: EpisodeDataModule) -> tuple[Ranker, ModelCheckpoint] | None:
    """Trains in ``<out_dir>/<name>/`` and returns the best validation checkpoint's network (CPU, eval mode) and
    that checkpoint's callback; None in DDP's other processes."""
    L.seed_everything(cfg.seed, workers=True)
    module = RankerModule(cfg, data.dims)
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
        logger=CSVLogger(run_dir, name="logs"), callbacks=[best, last],
        log_every_n_steps=cfg.trainer.log_every_n_steps, default_root_dir=run_dir, enable_model_summary=False,
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


def fit(cfg: RunConfig, data: EpisodeDataModule) -> Fitted | None:
    """Trains in ``<out_dir>/<name>/`` (config.yaml, ``last.ckpt`` every epoch, ``best.ckpt`` by val/wtau, CSV
    logs), reloads the best checkpoint and chooses what :class:`Fitted` says. ``overwrite`` empties the run folder
    first, unless ``ckpt_path`` resumes it. None in DDP's other processes. ``ranker=fennec`` fits a Fennec instead
    (``ranker.learn.fennec.fit_run``: in memory, on the CPU, no run folder)."""
    if cfg.ranker == "fennec":
        from ranker.learn import fennec  # it imports this module

        return fennec.fit_run(cfg, data)
    trained = train(cfg, data)
    if trained is None:
        return None
    (net, best), chosen_by = trained, "validation"
    if net.calibration is None:
        sweeps = {1.0: rerank_sweep(net, data.val_episodes)}
    else:
        sweeps, groups = select(cfg, data) if _single_process(cfg) else ({}, [])
        if len(groups) >= 2:
            chosen_by = "grouped cross-validation over " + ", ".join(groups)
        else:
            sweeps = _sweeps(net, data.val_episodes)
    shrink, k = _choose(sweeps)
    if net.calibration is not None:
        net.calibration.spider_scale.data *= shrink
    return Fitted(net, k, sweeps[shrink], float(best.best_model_score), best.best_model_path, shrink, chosen_by)


def fit_again(run: RunConfig, benchmark: str, out_dir: str, name: str, tasks: list[str] | None = None,
              seed: int | None = None) -> tuple[Fitted, EpisodeDataModule]:
    """``run`` (an export's training config) fitted again, on ``benchmark``'s ``tasks`` (None: its training-role
    tasks; ``data.val_tasks`` among them validate) with ``seed`` (None: the run's), into ``<out_dir>/<name>/``;
    Lightning's output goes to stderr, so a caller's stdout stays a report. Returns the result and its data
    (``val_ids``: the validation tasks used). How evaluation scripts retrain a ranker on a fold or another seed."""
    cfg = copy.deepcopy(run)
    cfg.data.benchmark, cfg.name, cfg.out_dir, cfg.ckpt_path = benchmark, name, out_dir, None
    cfg.seed = cfg.seed if seed is None else seed
    data = EpisodeDataModule(cfg, tasks)
    data.setup()
    with contextlib.redirect_stdout(sys.stderr):
        return fit(cfg, data), data


def _single_process(cfg: RunConfig) -> bool:
    """The run trained in one process (the inner runs of ``select`` train there too; under DDP they would not)."""
    return cfg.trainer.num_nodes == 1 and cfg.trainer.strategy in ("auto", "single_device") and \
        str(cfg.trainer.devices) in ("auto", "1")
