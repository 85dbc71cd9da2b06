"""Training throughput of the ImageNet zoo members at native input size vs the fine-tuning recipe's 64 px.

Why the offline benchmark's `finetune-v1` recipe caps inputs at 64 px on CPU: one AdamW step on a batch of 16
random images, forward + backward, every parameter trainable, timed after one warm-up step.

Run:
    python benchmarks/finetune_cost.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ranker.tasks.benchmark import FinetuneRecipe
from ranker.zoo import manifest as zoo

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100", "craft_vgg16_bn")


def images_per_second(name: str, size: int, steps: int = 3, batch: int = 16) -> float:
    extractor = zoo.load_extractor(name)
    trunk = extractor.trunk.train().requires_grad_(True)
    head = torch.nn.Linear(extractor.entry.feature_dim, 10)
    opt = torch.optim.AdamW([*trunk.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        out = trunk(x)
        loss = F.cross_entropy(head(out.mean(dim=(2, 3)) if extractor.pool else out), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    cap = FinetuneRecipe().max_input_size
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"| model | native px | img/s native | img/s at {cap} px | ratio |")
    print("|---|---|---|---|---|")
    for name in MODELS:
        native = zoo.get_entry(name).input_size
        slow, fast = images_per_second(name, native), images_per_second(name, cap)
        print(f"| {name} | {native} | {slow:.1f} | {fast:.1f} | {fast / slow:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
