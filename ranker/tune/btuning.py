"""B-Tuning (You et al., "Ranking and Tuning Pre-trained Models", JMLR 2022): fine-tuning with frozen teachers.

As the authors' released code (thuml/LogME, ``b_tuning.py``) runs it: every model, the target and each teacher k,
gets LogME's posterior mean weights W_k ``[C, D_k]`` on the training data (its features F_k predict the one-hot
labels as F_k W_k^T); teachers are weighted by pi = softmax(LogME score / T) with T = 0.1; the loss is cross-entropy
+ lambda x MSE(F_target W_target^T, sum_k pi_k F_k W_k^T) with lambda = 100, W_target fixed (from the target's
pre-trained features) and the teachers frozen.

Everything else is the benchmark's ``finetune`` recipe exactly (``ranker.tune.finetune.finetune``: seed, input size,
AdamW, cosine schedule, steps, batches): with lambda = 0 a run reproduces it bit for bit on the CPU. Every model
sees the images as that recipe feeds them (min(native, ``max_input_size``) px, its own normalization), so the
teachers see what the target trains on, and a target that is its own teacher starts with a zero teachers' term.
The recipe has no augmentation, so a frozen teacher's output per image never changes: the teachers' mapped
features are computed once, from the cached frozen features (``ranker.tasks.features``), and ride along in the
training batches.

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
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ranker.tasks import features
from ranker.tasks.benchmark import FinetuneRecipe
from ranker.tasks.datasets import Task
from ranker.transfer.logme import posterior_weights
from ranker.tune.finetune import FinetuneModule, accuracy, images, recipe_entry
from ranker.zoo import manifest as zoo

TEMPERATURE = 0.1  # of the softmax over the teachers' LogME scores (the authors' --temperature)
TRADEOFF = 100.0  # lambda, the weight of the teachers' term (the authors' --tradeoff)


@dataclass
class Teaching:
    """What the LogME fits contribute to a B-Tuning run, computed once before training."""

    teachers: list[str]  # zoo names, in the order of ``evidence`` and ``pi``
    evidence: list[float]  # each teacher's LogME score on the training data
    pi: list[float]  # softmax(evidence / TEMPERATURE)
    target_evidence: float  # the target's own LogME score
    target_weights: torch.Tensor  # [C, D] the target's posterior mean weights (float32), fixed during training
    targets: torch.Tensor  # [N, C] sum_k pi_k F_k W_k^T of every training image, in task order (float32)
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


def fit_logme(entry: zoo.ZooEntry, train: Task, recipe: FinetuneRecipe, cache_dir: str | Path | None = None
              ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """A zoo member's LogME score, posterior mean weights ``[C, D]`` and frozen features ``[N, D]`` (float64) on
    ``train`` at the recipe's input size; the features come from the on-disk cache when present."""
    extractor = zoo.load_extractor(recipe_entry(entry, recipe))
    feats = features.extract(extractor, train, cache_dir=cache_dir, progress=False).double()
    score, weights = posterior_weights(feats, torch.as_tensor(train.labels))
    return score, weights, feats


def teach(target: zoo.ZooEntry, teachers: Sequence[zoo.ZooEntry], train: Task, recipe: FinetuneRecipe,
          cache_dir: str | Path | None = None) -> Teaching:
    """LogME fits of the target and the teachers on ``train``: the target's fixed weights, pi and the pi-weighted
    teachers' mapped features of every training image."""
    if not teachers:
        raise ValueError("B-Tuning needs at least one teacher; name one, or fine-tune without teachers")
    start = time.perf_counter()
    target_evidence, target_weights, _ = fit_logme(target, train, recipe, cache_dir)
    evidence, mapped = [], []
    for entry in teachers:
        score, weights, feats = fit_logme(entry, train, recipe, cache_dir)
        evidence.append(score)
        mapped.append(feats @ weights.T)
    pi = teacher_pi(evidence)
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
    sized = recipe_entry(target, recipe)
    extractor = zoo.load_extractor(target)
    transform = zoo.entry_transform(sized)
    module = BTuningModule(extractor, train.num_classes, recipe, teaching.target_weights, tradeoff)
    data = TensorDataset(images(train, transform), torch.as_tensor(train.labels), teaching.targets)
    trainer = L.Trainer(
        max_steps=recipe.steps, max_epochs=-1, accelerator="auto", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, deterministic="warn",
        callbacks=[_StepBar(recipe.steps, f"B-Tuning {target.name}")] if progress else [],
    )
    trainer.fit(module, DataLoader(data, batch_size=min(recipe.batch_size, len(data)), shuffle=True))
    device = trainer.strategy.root_device
    test_accuracy = None if test is None else accuracy(module, test, transform, device)
    return Tuned(module.eval(), sized.input_size, module.losses, test_accuracy, time.perf_counter() - start)
