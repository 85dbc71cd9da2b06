"""Plain fine-tuning of a zoo member: the benchmark's ground-truth recipe (``FinetuneRecipe``), which B-Tuning extends.

Every parameter trains with a new linear head; the run is seeded and, on the CPU, bit-reproducible, so a pair
measured twice with one seed gives one accuracy. ``data/build_history.py`` records what :func:`finetune` returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ranker.learn.lit import quiet_lightning
from ranker.tasks import benchmark as bm
from ranker.tasks.datasets import Task
from ranker.zoo import manifest as zoo


class FinetuneModule(L.LightningModule):
    """A zoo member's trunk, unfrozen, with a new linear head (reading standardized features where the recipe's
    ``head_norm`` names the member); trained with a FinetuneRecipe at the member's learning rate."""

    def __init__(self, extractor: zoo.FrozenExtractor, num_classes: int, recipe: bm.FinetuneRecipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.trunk_lr = recipe.member_lr(extractor.entry.name)
        self.trunk = extractor.trunk.train().requires_grad_(True)
        self.pool = extractor.pool
        dim = extractor.entry.feature_dim
        linear = nn.Linear(dim, num_classes)
        self.head = (nn.Sequential(nn.BatchNorm1d(dim, affine=False, momentum=None), linear)
                     if extractor.entry.name in recipe.head_norm else linear)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features ``[B, D]``: what the head reads."""
        out = self.trunk(x.contiguous(memory_format=torch.channels_last))
        return out.mean(dim=(2, 3)) if self.pool else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def estimate_norm(self, images: torch.Tensor, batch_size: int = 64) -> None:
        """Sets a standardized head's statistics to the mean and variance of the trained trunk's features of
        ``images`` ``[N, 3, S, S]`` (eval mode; PreciseBN, Wu & Johnson 2021): averaged over the training steps,
        they would mix in the features of trunks the steps have since moved away from, which for tiny-spread
        features shifts the head's input by a large part of its spread. A plain head is left as it is."""
        if isinstance(self.head, nn.Linear):
            return
        self.eval()
        device = next(self.head.parameters()).device
        feats = torch.cat([self.features(x.to(device)) for x in images.split(batch_size)])
        norm = self.head[0]
        norm.running_mean.copy_(feats.mean(0))
        norm.running_var.copy_(feats.var(0))  # unbiased, as BatchNorm keeps it

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        lr, steps = self.trunk_lr, self.recipe.steps
        opt = torch.optim.AdamW(
            [{"params": self.trunk.parameters(), "lr": lr},
             {"params": self.head.parameters(), "lr": lr * self.recipe.head_lr_mult}],
            weight_decay=self.recipe.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
        return [opt], [{"scheduler": sched, "interval": "step"}]


def recipe_entry(entry: zoo.ZooEntry, recipe: bm.FinetuneRecipe) -> zoo.ZooEntry:
    """``entry`` at the recipe's input size: min(native, the member's ``input_sizes`` entry, else ``max_input_size``)
    px (0: native), rounded down to a multiple of a ViT's patch size; a ``fixed_size`` member stays native."""
    if entry.fixed_size:
        return entry
    cap = recipe.input_sizes.get(entry.name, recipe.max_input_size) or entry.input_size
    size = min(entry.input_size, cap)
    if size < entry.input_size:
        size -= size % zoo.input_multiple(entry)
    return dataclasses.replace(entry, input_size=size)


def images(task: Task, transform: Callable) -> torch.Tensor:
    """Every image of ``task`` through ``transform``, stacked ``[N, 3, S, S]``."""
    return torch.stack([transform(task.image(i)) for i in range(len(task))])


def accuracy(module: FinetuneModule, test: Task, transform: Callable, device: torch.device) -> float:
    """Percent of ``test`` images the module classifies right (eval mode, on ``device``)."""
    module.to(device).eval()
    correct = 0
    with torch.inference_mode():
        for x, y in DataLoader(TensorDataset(images(test, transform), torch.as_tensor(test.labels)), batch_size=64):
            correct += int((module(x.to(device)).argmax(1).cpu() == y).sum())
    return 100.0 * correct / len(test)


def fit(module: FinetuneModule, train: Task, transform: Callable, recipe: bm.FinetuneRecipe,
        extra: torch.Tensor | None = None, callbacks: Sequence[L.Callback] = ()) -> torch.device:
    """Trains ``module`` on ``train`` for the recipe's steps (seed first: the head and the batches draw from it),
    then estimates a standardized head's statistics on the training images (``FinetuneModule.estimate_norm``);
    batches are (images, labels) or, with ``extra`` ``[N, ...]``, (images, labels, the images' rows of it).

    Returns:
        The device it trained on.
    """
    tensors = [images(train, transform), torch.as_tensor(train.labels)] + ([] if extra is None else [extra])
    data = TensorDataset(*tensors)
    with quiet_lightning():  # one Trainer per run: a history build would print its lines for every pair
        trainer = L.Trainer(
            max_steps=recipe.steps, max_epochs=-1, accelerator="auto", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            deterministic="warn",  # bit-reproducible on the CPU; on CUDA, ops without deterministic kernels only warn
            callbacks=list(callbacks),
        )
        trainer.fit(module, DataLoader(data, batch_size=min(recipe.batch_size, len(data)), shuffle=True))
    module.estimate_norm(tensors[0])
    return trainer.strategy.root_device


def finetune(entry: zoo.ZooEntry, train: Task, test: Task, recipe: bm.FinetuneRecipe) -> tuple[float, int, str]:
    """Fine-tunes one zoo member on ``train``; returns (accuracy on ``test`` in percent, input size, device)."""
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    sized = recipe_entry(entry, recipe)
    transform = zoo.entry_transform(sized)
    module = FinetuneModule(zoo.load_extractor(entry), train.num_classes, recipe)
    device = fit(module, train, transform, recipe)
    return accuracy(module, test, transform, device), sized.input_size, str(device)
