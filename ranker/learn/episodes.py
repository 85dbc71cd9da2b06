"""Episodes: each historical task as the learned rankers train on it, and the DataModule that serves them.

An episode is one historical task: its general-encoder class prototypes, every zoo model's own prototypes
(for PTM-specific tokens) and its ground-truth vector over the zoo, taken from the first kind in
``data.target_kinds`` that measured at least two models of that task (kinds are never mixed within a task:
probe accuracies, fine-tuning accuracies and proxy scores live on different scales). Unmeasured models are NaN
and masked out of the loss and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ranker.learn.config import RunConfig
from ranker.learn.modelspider import RankerDims
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
        generator = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def mix_seeds(*keys: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, step, process rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


class EpisodeDataModule(L.LightningDataModule):
    """Episodes of ``tasks`` (default: the benchmark's training-role tasks): validation takes the ``data.val_tasks``
    (empty: the benchmark's ``validation_tasks()``) among them, training the rest.

    Grouped cross-validation passes a fold's tasks, which may hold test-role tasks of the other groups; the
    ``data.val_tasks`` of the held-out group are then left out of validation. ``bench`` is ``data.benchmark``
    already loaded, which inner fits pass on: loading v3's config and history takes about a second.
    """

    def __init__(self, cfg: RunConfig, tasks: list[str] | None = None, bench: bm.Benchmark | None = None) -> None:
        super().__init__()
        self.cfg, self.seed = cfg.data, cfg.seed
        self.bench = bm.load_benchmark(self.cfg.benchmark) if bench is None else bench
        train_ids = self.bench.task_ids("train")
        val_tasks = self.cfg.val_tasks or self.bench.validation_tasks()
        wrong = [t for t in val_tasks if t not in train_ids]
        if wrong:
            raise ValueError(f"data.val_tasks {wrong} are not training-role tasks of benchmark "
                             f"{self.bench.argument}; test tasks never take part in training or model choice")
        tasks = train_ids if tasks is None else tasks
        self.val_ids = [t for t in val_tasks if t in tasks]
        if not self.val_ids:
            raise ValueError(f"none of data.val_tasks {val_tasks} is among this run's tasks; name "
                             "validation tasks of two groups or more, so that every fold keeps some")
        self.train_ids = [t for t in tasks if t not in self.val_ids]
        if not self.train_ids:
            raise ValueError(f"benchmark {self.bench.argument} leaves no task to train on once {self.val_ids} "
                             "validate; give it more training tasks (a ranker needs history beyond the prior)")
        self.dims = ranker_dims(self.bench)

    def setup(self, stage: str | None = None) -> None:
        self.train_episodes = load_episodes(self.bench, self.train_ids, self.cfg.target_kinds)
        self.val_episodes = load_episodes(self.bench, self.val_ids, self.cfg.target_kinds)

    def train_dataloader(self) -> DataLoader:
        episodes = _Padded(self.train_episodes)
        return DataLoader(episodes, batch_size=self.cfg.batch_size, sampler=EpochShuffle(len(episodes), self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Padded(self.val_episodes), batch_size=self.cfg.batch_size)
