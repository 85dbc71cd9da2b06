"""Task statistics from frozen features: class prototypes and a fixed-size summary vector.

Prototypes are what Model Spider tokenizes a task from (the mean feature of each class). The summary has the
same size for every task whatever its class count, so historical tasks can live in one FAISS index: it is
the mean and the standard deviation over classes of the prototypes, ``[2 * D]``.
"""

from __future__ import annotations

import torch


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean feature of each class, ``[num_classes, D]`` float32; every class must occur in ``labels``."""
    labels = torch.as_tensor(labels, device=features.device, dtype=torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or bool((counts == 0).any()):
        raise ValueError(f"labels must hold every class 0..{num_classes - 1} at least once; counts are "
                         f"{counts.tolist()}")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels, features.double())
    return (sums / counts[:, None]).float()


def summary_vector(prototypes: torch.Tensor) -> torch.Tensor:
    """``[..., 2 * D]`` from ``[..., C, D]``: the mean over classes of the prototypes, then their standard deviation
    (population, ddof 0)."""
    return torch.cat([prototypes.mean(-2), prototypes.std(-2, correction=0)], -1)
