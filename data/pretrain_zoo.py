"""Pre-trains the zoo's own members (manifest entries with a ``pretrain`` recipe) with Lightning.

Each member is a small timm architecture trained from scratch, supervised, at 32 px on a real offline
source; the weights (head removed) go to the entry's ``weights_file`` as safetensors and their
``state_sha256`` is written into the manifest. Members whose file already matches the manifest hash are
skipped, so an interrupted run resumes where it stopped. One row per trained member is appended to
``checkpoints/zoo/pretrain_log.csv`` (held-out accuracy, seconds, device).

Recipe (every member): AdamW (weight decay 0.05), the entry's lr with cosine decay to 0 and 1 epoch of
linear warm-up, batch 256, label smoothing 0.1, random 2-px shifts and horizontal flips, seed 0;
5% of the source held out to report accuracy. Sources:
    fashion_mnist               Fashion-MNIST train split (the test split is left for benchmark tasks)
    animal_mnist                Animal-MNIST, the 70% part of ``loaders.animal_mnist_split`` (30% left for tasks)
    fashion_mnist+animal_mnist  both, 20 classes

Run (all members, ~15 min on 2 CPU cores; seconds on a GPU):
    python -m data.pretrain_zoo
    python -m data.pretrain_zoo --only tiny_vit_fmnist --force
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import time
from pathlib import Path

import lightning as L
import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ranker.tasks import datasets, loaders
from ranker.zoo import manifest as zoo

LOG = zoo.REPO_ROOT / "checkpoints" / "zoo" / "pretrain_log.csv"


def source_task(source: str) -> tuple[list[datasets.Task], int]:
    """The tasks a recipe's ``source`` names and the total class count (labels of later tasks are offset)."""
    parts = {
        "fashion_mnist": lambda: loaders.fashion_mnist("train"),
        "animal_mnist": lambda: loaders.animal_mnist_split()[0],
    }
    tasks = [parts[name]() for name in source.split("+")]
    return tasks, sum(t.num_classes for t in tasks)


def preprocess(tasks: list[datasets.Task], entry: zoo.ZooEntry) -> TensorDataset:
    """All images through the entry's own extraction transform, labels offset per source."""
    transform = zoo.entry_transform(entry)
    images, labels, offset = [], [], 0
    for task in tasks:
        for i in tqdm(range(len(task)), desc=f"preprocess {task.id}", unit="img", leave=False):
            images.append(transform(task.image(i)))
        labels.append(torch.as_tensor(task.labels) + offset)
        offset += task.num_classes
    return TensorDataset(torch.stack(images), torch.cat(labels))


class PretrainModule(L.LightningModule):
    """Supervised classification of a timm architecture from scratch."""

    def __init__(self, entry: zoo.ZooEntry, num_classes: int, steps: int, warmup: int) -> None:
        super().__init__()
        self.entry, self.steps, self.warmup = entry, steps, warmup
        self.net = timm.create_model(entry.arch, num_classes=num_classes, **dict(entry.arch_kwargs))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        dy, dx = (int(d) for d in np.random.randint(0, 5, size=2))  # one random shift of up to 2 px per batch
        size = x.shape[-1]
        x = F.pad(x, (2, 2, 2, 2), mode="replicate")[..., dy : dy + size, dx : dx + size]
        flip = torch.rand(len(x), device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.cross_entropy(self.net(x), y, label_smoothing=0.1)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.entry.pretrain["lr"], weight_decay=0.05)

        def factor(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(1, self.steps - self.warmup)))

        return [opt], [{"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}]


def record_hash(manifest: Path, name: str, digest: str) -> None:
    """Sets ``weights_sha256`` of entry ``name`` in the manifest text, keeping the file's layout and comments."""
    text = manifest.read_text()
    pattern = rf"(- name: {re.escape(name)}\n(?:    .*\n)*?    weights_sha256: )\S+"
    new, count = re.subn(pattern, rf"\g<1>{digest}", text)
    if count != 1:
        raise ValueError(f"entry {name} with a weights_sha256 line not found in {manifest}")
    manifest.write_text(new)


def pretrain(entry: zoo.ZooEntry, manifest: Path, max_steps: int = -1) -> dict:
    """Trains one member, saves its weights and hash; returns the log row. ``max_steps`` > 0 cuts training short."""
    recipe = entry.pretrain
    L.seed_everything(recipe["seed"], workers=True)
    tasks, num_classes = source_task(recipe["source"])
    data = preprocess(tasks, entry)
    held_out = torch.randperm(len(data), generator=torch.Generator().manual_seed(recipe["seed"]))[: len(data) // 20]
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[held_out] = False
    train = TensorDataset(*(t[mask] for t in data.tensors))
    val = TensorDataset(*(t[~mask] for t in data.tensors))
    per_epoch = math.ceil(len(train) / recipe["batch_size"])
    steps = per_epoch * recipe["epochs"] if max_steps <= 0 else max_steps
    module = PretrainModule(entry, num_classes, steps=steps, warmup=min(per_epoch, steps))
    trainer = L.Trainer(
        max_epochs=recipe["epochs"], max_steps=max_steps, accelerator="auto", devices=1, logger=False,
        enable_checkpointing=False, deterministic=True, enable_model_summary=False,
    )
    start = time.time()
    trainer.fit(module, DataLoader(train, batch_size=recipe["batch_size"], shuffle=True))
    seconds = time.time() - start
    val_acc = trainer.validate(module, DataLoader(val, batch_size=1024), verbose=False)[0]["val_acc"]
    net = module.net.cpu().eval()
    net.reset_classifier(0)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = zoo.REPO_ROOT / entry.weights_file
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)
    digest = zoo.state_sha256(state)
    record_hash(manifest, entry.name, digest)
    return {
        "name": entry.name, "arch": entry.arch, "source": recipe["source"], "epochs": recipe["epochs"],
        "val_acc": round(val_acc, 4), "seconds": round(seconds, 1),
        "device": str(trainer.strategy.root_device), "weights_sha256": digest,
    }


def is_done(entry: zoo.ZooEntry) -> bool:
    """True when the weights file exists and hashes to the manifest's value."""
    try:
        zoo.load_extractor(entry)
    except zoo.ZooError:
        return False
    return entry.weights_sha256 is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=zoo.DEFAULT_MANIFEST)
    parser.add_argument("--only", nargs="*", help="member names to (re)build; default: all with a recipe")
    parser.add_argument("--force", action="store_true", help="retrain even when the weights match the manifest")
    args = parser.parse_args()
    entries = [e for e in zoo.load_manifest(args.manifest).models if e.pretrain is not None]
    if args.only:
        unknown = set(args.only) - {e.name for e in entries}
        if unknown:
            parser.error(f"no pre-training recipe for {sorted(unknown)}; members with one: {[e.name for e in entries]}")
        entries = [e for e in entries if e.name in args.only]
    for entry in entries:
        if not args.force and is_done(entry):
            print(f"{entry.name}: weights match the manifest, skipped")
            continue
        row = pretrain(entry, args.manifest)
        new = not LOG.exists()
        with LOG.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(row)


if __name__ == "__main__":
    main()
