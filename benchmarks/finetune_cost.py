"""What one fine-tuning step costs per zoo member and input size: the number a ground-truth recipe is planned from.

One AdamW step on a batch of 16 random images, forward + backward, every parameter trainable (as
``ranker.tune.finetune`` trains), timed as the median of ``--steps`` steps after one warm-up step, on this machine's
CPU with torch's default threads. A pair of the recipe costs about steps x this (plus loading and the held-out pass).

Run:
    python benchmarks/finetune_cost.py                                    # offline zoo: native vs the recipe's cap
    python benchmarks/finetune_cost.py --manifest ranker/configs/zoo/v3.yaml --sizes native 160 128 96 \\
        --csv benchmarks/finetune_cost_v3.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ranker.tasks.benchmark import FinetuneRecipe
from ranker.tune.finetune import recipe_entry
from ranker.zoo import manifest as zoo


def seconds_per_step(extractor: zoo.FrozenExtractor, size: int, steps: int = 3, batch: int = 16) -> float:
    """Median seconds of one AdamW step of the member at ``size`` px on ``batch`` random images (its weights move:
    time does not depend on their values, so one loaded member serves every size)."""
    trunk = extractor.trunk.train().requires_grad_(True)
    head = torch.nn.Linear(extractor.entry.feature_dim, 10)
    opt = torch.optim.AdamW([*trunk.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        out = trunk(x)
        loss = F.cross_entropy(head(out.mean(dim=(2, 3)) if extractor.pool else out), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=zoo.DEFAULT_MANIFEST)
    parser.add_argument("--models", nargs="*", help="members to time (default: every member but the 32-px ones)")
    parser.add_argument("--sizes", nargs="+", default=["native", str(FinetuneRecipe().max_input_size)],
                        help="input sizes in px; 'native' is each member's own")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    entries = [e for e in zoo.load_manifest(args.manifest).models
               if (e.name in args.models if args.models else e.input_size > 32)]
    print(f"torch threads: {torch.get_num_threads()}; batch 16, forward + backward + AdamW, median of {args.steps}")
    print("| model | native px | " + " | ".join(f"s/step at {s}" for s in args.sizes) + " |")
    print("|---|---|" + "---|" * len(args.sizes))
    with args.csv.open("w", newline="") if args.csv else contextlib.nullcontext() as out:
        writer = csv.DictWriter(out, fieldnames=["model", "native", "size", "seconds_per_step", "threads"]) \
            if out else None
        if writer:
            writer.writeheader()
        for entry in entries:
            extractor = zoo.load_extractor(entry)
            cells = []
            for size in args.sizes:
                cap = entry.input_size if size == "native" else int(size)
                px = recipe_entry(entry, FinetuneRecipe(max_input_size=cap)).input_size  # ViT: a multiple of its patch
                seconds = seconds_per_step(extractor, px, args.steps)
                if writer:  # written as measured, so that a stopped run keeps what it timed
                    writer.writerow({"model": entry.name, "native": entry.input_size, "size": px,
                                     "seconds_per_step": round(seconds, 3), "threads": torch.get_num_threads()})
                    out.flush()
                cells.append(f"{seconds:.2f} ({px} px)")
            print(f"| {entry.name} | {entry.input_size} | " + " | ".join(cells) + " |", flush=True)

if __name__ == "__main__":
    main()
