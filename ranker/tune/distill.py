"""Knowledge distillation from the same frozen teachers as B-Tuning: the comparison B-Tuning's paper draws.

Each teacher k gets a linear classifier on its frozen features (the probe of ``data/build_history.py``:
standardized features, multinomial logistic regression), cross-fitted like B-Tuning's mapped features
(``btuning.fold_ids``: an image's probabilities come from a probe fitted on the other folds); the teachers' soft
labels are the pi-weighted mean of those probabilities (pi from ``btuning.teach``), and the target trains on
(1 - alpha) x cross-entropy + alpha x T^2 x KL(teachers' soft labels at temperature T || its own), Hinton et al.
(2015). Everything else is the fine-tuning recipe (``ranker.tune.finetune``).

Example:
    >>> soft = soft_labels(teachers, train, recipe, teaching.pi)
    >>> result = distill(target, soft, train, recipe, test, alpha=0.5)
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
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ranker.tasks.benchmark import FinetuneRecipe
from ranker.tasks.datasets import Task
from ranker.tune.btuning import FOLDS, fold_ids, frozen_features
from ranker.tune.finetune import FinetuneModule, accuracy, fit, recipe_entry
from ranker.zoo import manifest as zoo

KD_TEMPERATURE = 2.0  # T of the softened distributions


@dataclass
class Distilled:
    """A finished distillation run."""

    module: DistillModule  # the trained target, eval mode
    losses: dict[str, list[float]]  # per step: "total", "cross_entropy", "distill" (alpha x T^2 x KL, as added)
    test_accuracy: float | None  # percent on ``test``; None without one
    seconds: float  # training and evaluation


def crossfit_probe(feats: torch.Tensor, labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Out-of-fold class probabilities ``[N, C]`` of a linear probe on ``feats`` (a fold's classes missing from the
    other folds get probability 0 there)."""
    num_classes = int(labels.max()) + 1
    fold = fold_ids(groups, folds)
    out = np.zeros((len(labels), num_classes))
    x = feats.numpy()
    for f in range(folds):
        held, kept = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        scaler = StandardScaler().fit(x[kept])
        probe = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x[kept]), labels[kept])
        out[np.ix_(held, probe.classes_)] = probe.predict_proba(scaler.transform(x[held]))
    return out


def soft_labels(teachers: Sequence[zoo.ZooEntry], train: Task, recipe: FinetuneRecipe, pi: Sequence[float],
                groups: np.ndarray | None = None, cache_dir: str | Path | None = None) -> torch.Tensor:
    """The teachers' soft labels ``[N, C]`` (float32, rows sum to 1): sum_k pi_k x teacher k's cross-fitted probe
    probabilities; ``groups`` as in ``btuning.teach``."""
    groups = np.arange(len(train)) if groups is None else np.asarray(groups)
    mixed = sum(p * crossfit_probe(frozen_features(e, train, recipe, cache_dir), train.labels, groups)
                for p, e in zip(pi, teachers, strict=True))
    return torch.as_tensor(mixed / mixed.sum(1, keepdims=True), dtype=torch.float32)


class DistillModule(FinetuneModule):
    """The fine-tuning module whose loss mixes cross-entropy with the KL to the batch's soft labels; batches are
    (images, labels, soft labels). Keeps every step's losses."""

    def __init__(self, extractor: zoo.FrozenExtractor, num_classes: int, recipe: FinetuneRecipe, alpha: float,
                 temperature: float = KD_TEMPERATURE) -> None:
        super().__init__(extractor, num_classes, recipe)
        self.alpha, self.temperature = alpha, temperature
        self.losses: dict[str, list[float]] = {"total": [], "cross_entropy": [], "distill": []}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y, soft = batch
        logits = self(x)
        t = self.temperature
        teacher = torch.softmax(torch.log(soft.clamp_min(1e-8)) / t, dim=1)  # the soft labels at temperature T
        kl = F.kl_div(F.log_softmax(logits / t, dim=1), teacher, reduction="batchmean")
        cross_entropy = F.cross_entropy(logits, y)
        distill = self.alpha * t * t * kl
        loss = (1 - self.alpha) * cross_entropy + distill
        for name, value in (("total", loss), ("cross_entropy", cross_entropy), ("distill", distill)):
            self.losses[name].append(value.detach().item())
        return loss


def distill(target: zoo.ZooEntry, soft: torch.Tensor, train: Task, recipe: FinetuneRecipe, test: Task | None = None,
            alpha: float = 0.5, temperature: float = KD_TEMPERATURE) -> Distilled:
    """Trains ``target`` on ``train`` with the soft labels ``soft`` ``[N, C]`` under ``recipe`` (seeded like
    ``finetune.finetune``); alpha = 0 is plain fine-tuning."""
    start = time.perf_counter()
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    transform = zoo.entry_transform(recipe_entry(target, recipe))
    module = DistillModule(zoo.load_extractor(target), train.num_classes, recipe, alpha, temperature)
    device = fit(module, train, transform, recipe, soft)
    test_accuracy = None if test is None else accuracy(module, test, transform, device)
    return Distilled(module.eval(), module.losses, test_accuracy, time.perf_counter() - start)
