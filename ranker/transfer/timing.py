"""What the estimators' speed scripts share (``benchmarks/logme_speed.py``, ``benchmarks/estimators_cuda.py``):
synthetic features of a known structure, so timings do not depend on a dataset, and best-of-N timing on a device."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def structured_features(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class centres + a 64-dim latent factor model + noise, float32; integer labels; 10 regression targets."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    latent = rng.normal(size=(n, 64))
    features = (rng.normal(size=(classes, d))[labels] + latent @ rng.normal(size=(64, d)) * 0.3
                + rng.normal(size=(n, d)) * rng.uniform(0.2, 1.0, size=d))
    targets = latent[:, :10] + 0.5 * rng.normal(size=(n, 10))
    return features.astype(np.float32), labels, targets


def best_time(fn: Callable[[], float], repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """(the fastest of ``repeats`` calls of ``fn`` in seconds, ``sync`` called around each, its last value)."""
    times, value = [], float("nan")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times), value


def device_time(fn: Callable[[], float], device: str, repeats: int) -> tuple[float, float]:
    """``best_time`` of ``fn`` on ``device``: on CUDA after one warm-up call (context and kernels), synchronized."""
    if device != "cuda":
        return best_time(fn, repeats)
    fn()
    return best_time(fn, repeats, torch.cuda.synchronize)
