"""B-Tuning (You et al., "Ranking and Tuning Pre-trained Models", JMLR 2022): fine-tuning with frozen teachers.

As the authors' released code (thuml/LogME, ``b_tuning.py``) runs it: every model, the target and each teacher k,
gets LogME's posterior mean weights W_k ``[C, D_k]`` on the training data (its features F_k predict the one-hot
labels as F_k W_k^T); teachers are weighted by pi = softmax(LogME score / T); the loss is cross-entropy
+ lambda x MSE(F_target W_target^T, sum_k pi_k F_k W_k^T) with W_target fixed and the teachers frozen.

Two things differ from the reference, both because they decide whether the teachers' term says anything
(docs/btuning.md has the measurements):
- each teacher's mapped features are cross-fitted: an image's F_k W_k^T uses weights fitted on the other folds
  (``FOLDS``, whole ``groups`` at a time), so a teacher whose features can memorize the labels (N near or below D)
  passes on what it predicts for unseen images, not the labels back;
- W_target is fitted on the target's features as the training step computes them (batch norm in train mode, batches
  of the recipe's size), so the term starts at the teachers' disagreement with the target, not at the gap between
  batch and running statistics.

Everything else is the benchmark's ``finetune`` recipe exactly (``ranker.tune.finetune``: seed, input size, AdamW,
cosine schedule, steps, batches): with lambda = 0 a run reproduces plain fine-tuning bit for bit on the CPU. Every
model sees the images as that recipe feeds it (its ``input_sizes`` entry may give a teacher its native size). A
frozen teacher's output per image never changes, so the teachers' mapped features are computed once, from the
cached frozen features (``ranker.tasks.features``), and ride along in the training batches.

Example:
    >>> teaching = teach(zoo.get_entry("tiny_resnet_fmnist"), [zoo.get_entry("tiny_byobnet_mixed")], train, recipe)
    >>> tuned = tune(zoo.get_entry("tiny_resnet_fmnist"), teaching, train, recipe, test=test)
    >>> teaching.pi, tuned.test_accuracy, tuned.losses["teachers"][:3]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ranker.tasks import features
from ranker.tasks.benchmark import FinetuneRecipe
from ranker.tasks.datasets import Task
from ranker.transfer.logme import posterior_weights
from ranker.tune.finetune import FinetuneModule, accuracy, fit, images, recipe_entry
from ranker.zoo import manifest as zoo

TEMPERATURE = 0.1  # of the softmax over the teachers' LogME scores (the authors' --temperature; chosen again)
TRADEOFF = 10.0  # lambda, the weight of the teachers' term (the authors' is 100)
# Both are the best setting on the training tasks of benchmarks/btuning.py (its REPORT.md), where STEPS ran.
STEPS = 200  # optimizer steps of ``python -m ranker.tune``: the regime B-Tuning was measured in
FOLDS = 5  # of the cross-fitted teachers' mapped features


@dataclass
class Teaching:
    """What the LogME fits contribute to a B-Tuning run, computed once before training."""

    teachers: list[str]  # zoo names, in the order of ``evidence`` and ``pi``
    evidence: list[float]  # each teacher's LogME score on the training data
    pi: list[float]  # softmax(evidence / temperature)
    target_evidence: float  # the target's own LogME score (on its frozen, eval-mode features)
    target_weights: torch.Tensor  # [C, D] the target's posterior mean weights on train-mode features (float32)
    targets: torch.Tensor  # [N, C] sum_k pi_k F_k W_k^T of every training image, cross-fitted, task order (float32)
    seconds: float  # to load the models, extract (or read cached) features and fit LogME


@dataclass
class Tuned:
    """A finished B-Tuning run."""

    module: BTuningModule  # the tuned target (trunk + head), in eval mode
    input_size: int  # px the target was trained at (and must be fed at)
    losses: dict[str, list[float]]  # per step: "total", "cross_entropy", "teachers" (lambda x MSE)
    test_accuracy: float | None  # percent on ``test``; None without one
    seconds: float  # training and evaluation


def teacher_pi(evidence: Sequence[float], temperature: float = TEMPERATURE) -> torch.Tensor:
    """The teachers' weights ``[K]``: softmax of their LogME scores divided by the temperature."""
    return torch.softmax(torch.as_tensor(evidence, dtype=torch.float64) / temperature, dim=0)


def frozen_features(entry: zoo.ZooEntry, train: Task, recipe: FinetuneRecipe, cache_dir: str | Path | None = None
                    ) -> torch.Tensor:
    """A zoo member's frozen (eval-mode) features ``[N, D]`` (float64) of ``train`` at the recipe's input size, from
    the on-disk cache when present."""
    extractor = zoo.load_extractor(recipe_entry(entry, recipe))
    return features.extract(extractor, train, cache_dir=cache_dir, progress=False).double()


def fold_ids(groups: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Fold ``[N]`` (0..folds-1) of every image: whole groups go to one fold, round robin in order of first sight."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # group rank by first occurrence
    return order[inverse] % folds


def crossfit_mapped(feats: torch.Tensor, labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS
                    ) -> torch.Tensor:
    """Out-of-fold label-space predictions ``[N, C]``: row i is F_i W^T with W the LogME posterior mean weights
    fitted on every fold but i's (``fold_ids``). A fold missing a class gets that class's weight row as zeros."""
    num_classes = int(labels.max()) + 1
    fold = fold_ids(groups, folds)
    out = torch.zeros(len(labels), num_classes, dtype=feats.dtype)
    for f in range(folds):
        held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        present = np.unique(labels[kept])
        weights = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype)
        weights[torch.as_tensor(present)] = posterior_weights(feats[kept], labels[kept])[1]
        out[held] = feats[held] @ weights.T
    return out


def train_mode_features(entry: zoo.ZooEntry, train: Task, recipe: FinetuneRecipe) -> torch.Tensor:
    """The target's features ``[N, D]`` (float64, task order) as a training step computes them before any update:
    the trunk in train mode (batch statistics) on the recipe's batches of a seeded shuffle, no gradients."""
    sized = recipe_entry(entry, recipe)
    module = FinetuneModule(zoo.load_extractor(entry), train.num_classes, recipe)  # a copy of its own: BN stats move
    x = images(train, zoo.entry_transform(sized))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(recipe.seed))
    out = torch.empty(len(x), entry.feature_dim, dtype=torch.float64)
    with torch.no_grad():
        for batch in order.split(min(recipe.batch_size, len(x))):
            out[batch] = module.features(x[batch]).double()
    return out


def teach(target: zoo.ZooEntry, teachers: Sequence[zoo.ZooEntry], train: Task, recipe: FinetuneRecipe,
          cache_dir: str | Path | None = None, temperature: float = TEMPERATURE,
          groups: np.ndarray | None = None) -> Teaching:
    """LogME fits of the target and the teachers on ``train``: the target's fixed weights, pi and the pi-weighted
    teachers' cross-fitted mapped features of every training image.

    Args:
        groups: ``[N]`` ids of images that must share a fold (augmented copies of one image); None: every image
            its own.
    """
    if not teachers:
        raise ValueError("B-Tuning needs at least one teacher; name one, or fine-tune without teachers")
    start = time.perf_counter()
    groups = np.arange(len(train)) if groups is None else np.asarray(groups)
    target_evidence = posterior_weights(frozen_features(target, train, recipe, cache_dir), train.labels)[0]
    target_weights = posterior_weights(train_mode_features(target, train, recipe), train.labels)[1]
    evidence, mapped = [], []
    for entry in teachers:
        feats = frozen_features(entry, train, recipe, cache_dir)
        evidence.append(posterior_weights(feats, train.labels)[0])
        mapped.append(crossfit_mapped(feats, train.labels, groups))
    pi = teacher_pi(evidence, temperature)
    targets = sum(p * m for p, m in zip(pi, mapped, strict=True))
    return Teaching([e.name for e in teachers], evidence, pi.tolist(), target_evidence, target_weights.float(),
                    targets.float(), time.perf_counter() - start)


class BTuningModule(FinetuneModule):
    """The benchmark's FinetuneModule whose loss adds lambda x MSE(trunk features W_target^T, the batch's teachers'
    mapped features); batches are (images, labels, teachers' mapped features). Keeps every step's losses."""

    def __init__(self, extractor: zoo.FrozenExtractor, num_classes: int, recipe: FinetuneRecipe,
                 target_weights: torch.Tensor, tradeoff: float = TRADEOFF) -> None:
        super().__init__(extractor, num_classes, recipe)
        self.tradeoff = tradeoff
        self.register_buffer("target_weights", target_weights, persistent=False)  # not part of the tuned model
        self.losses: dict[str, list[float]] = {"total": [], "cross_entropy": [], "teachers": []}

    def teachers_term(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """MSE between the target's mapped features and the teachers' (lambda not applied)."""
        return F.mse_loss(feats @ self.target_weights.T, targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y, targets = batch
        feats = self.features(x)
        cross_entropy = F.cross_entropy(self.head(feats), y)
        teachers = self.tradeoff * self.teachers_term(feats, targets)
        loss = cross_entropy + teachers
        for name, value in (("total", loss), ("cross_entropy", cross_entropy), ("teachers", teachers)):
            self.losses[name].append(value.detach().item())
        return loss


class _StepBar(L.Callback):
    """A progress bar over optimizer steps (Lightning's counts batches per epoch, a few per epoch here)."""

    def __init__(self, steps: int, desc: str) -> None:
        self.bar = tqdm(total=steps, desc=desc, unit="step")

    def on_train_batch_end(self, trainer: L.Trainer, module: BTuningModule, *_) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{module.losses['total'][-1]:.3f}", teachers=f"{module.losses['teachers'][-1]:.3f}")

    def on_train_end(self, *_) -> None:
        self.bar.close()


def tune(target: zoo.ZooEntry, teaching: Teaching, train: Task, recipe: FinetuneRecipe, test: Task | None = None,
         tradeoff: float = TRADEOFF, progress: bool = False) -> Tuned:
    """B-Tunes ``target`` on ``train`` under ``recipe`` (in the steps and order of ``finetune.finetune``).

    Args:
        target: the zoo member to tune (loaded afresh, weights verified).
        teaching: ``teach(target, ..., train, recipe)``.
        train: the labelled images; ``test``: held-out images of the same classes, or None.
        tradeoff: lambda; 0 is plain fine-tuning.
        progress: show a progress bar over the steps.
    """
    start = time.perf_counter()
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    transform = zoo.entry_transform(sized := recipe_entry(target, recipe))
    module = BTuningModule(zoo.load_extractor(target), train.num_classes, recipe, teaching.target_weights, tradeoff)
    bar = [_StepBar(recipe.steps, f"B-Tuning {target.name}")] if progress else []
    device = fit(module, train, transform, recipe, teaching.targets, bar)
    test_accuracy = None if test is None else accuracy(module, test, transform, device)
    return Tuned(module.eval(), sized.input_size, module.losses, test_accuracy, time.perf_counter() - start)
