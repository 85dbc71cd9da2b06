"""The zoo table and feature-extraction speed on this machine, and what the features cache saves.

For every zoo member: architecture, pre-training source, parameters, feature width, load time (build +
weight hash check), and throughput of a cold extraction of the same real images; then a second,
cached extraction of the same images, timed side by side, and the ratio.

Run:
    python benchmarks/features.py                  # 512 Fashion-MNIST test images, every member
    python benchmarks/features.py --images 2000 --models mobilenetv2_100 tiny_vit_fmnist
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from ranker.tasks import features, loaders
from ranker.zoo import manifest as zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="Fashion-MNIST test images to embed")
    parser.add_argument("--models", nargs="*", help="zoo members (default: all)")
    args = parser.parse_args()
    source = loaders.fashion_mnist("test")
    task = source.subset(np.arange(args.images), f"first{args.images}")
    entries = [e for e in zoo.load_manifest().models if not args.models or e.name in args.models]
    device, threads = features.best_device(), torch.get_num_threads()
    print(f"{len(task)} images of {source.id}, device {device}, torch threads {threads}")
    columns = "params | dim | load s | img/s | cold s | cached s | ratio"
    header = f"| {'model':28s} | {'arch':22s} | {'pre-training':34s} | {columns} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    cold_total = cached_total = 0.0
    with tempfile.TemporaryDirectory() as cache:
        for entry in entries:
            start = time.perf_counter()
            extractor = zoo.load_extractor(entry)
            load = time.perf_counter() - start
            start = time.perf_counter()
            features.extract(extractor, task, cache_dir=cache, progress=False)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            features.extract(extractor, task, cache_dir=cache, progress=False)
            cached = time.perf_counter() - start
            cold_total, cached_total = cold_total + cold, cached_total + cached
            params = sum(p.numel() for p in extractor.parameters()) / 1e6
            print(
                f"| {entry.name:28s} | {entry.arch:22s} | {entry.pretraining.split(',')[0][:34]:34s} | {params:5.2f}M "
                f"| {entry.feature_dim:4d} | {load:6.2f} | {len(task) / cold:5.0f} | {cold:6.2f} | {cached:8.4f} "
                f"| {cold / cached:5.0f} |"
            )
    ratio = cold_total / cached_total
    print(f"all members: cold {cold_total:.1f} s, from cache {cached_total:.3f} s, ratio {ratio:.0f}x")


if __name__ == "__main__":
    main()
