"""Input checks and the small linear-algebra pieces the transferability estimators share.

Every estimator runs in float64 on the device of its input tensor (numpy arrays become CPU tensors) and
turns bad input into a ValueError that names the problem, never into a silent NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Array = torch.Tensor | np.ndarray
EPS = torch.finfo(torch.float64).eps


def as_tensor(x: Array, what: str) -> torch.Tensor:
    """A numpy array as a CPU tensor sharing its memory; a tensor as it is; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{what} must be a torch tensor or a numpy array, got {type(x).__name__}")


def check_features(features: Array) -> torch.Tensor:
    """Features `[N, D]` as float64 on their own device.

    Raises:
        ValueError: not a non-empty 2-D array, NaN or inf entries, or every sample identical (constant
            features carry no information about any label).
    """
    f = as_tensor(features, "features")
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"features must be a non-empty [N, D] matrix, got shape {tuple(f.shape)}")
    if f.is_complex():
        raise ValueError(f"features must be real numbers, got dtype {f.dtype}")
    f = f.to(torch.float64)
    if not torch.isfinite(f.sum()):  # any NaN or inf makes the sum non-finite; only then look closer
        finite = torch.isfinite(f)
        if not finite.all():
            rows = int((~finite).any(1).sum())
            raise ValueError(f"features contain NaN or inf in {rows} of {f.shape[0]} samples; drop or repair them")
    if bool((f == f[:1]).all()):
        raise ValueError("features are identical for every sample (constant), so no estimator can score them")
    return f


@dataclass(frozen=True)
class Classes:
    """Integer labels mapped to `0..C-1` in sorted order of the distinct label values."""

    index: torch.Tensor  # [N] int64 class index of each sample, on the features' device
    counts: torch.Tensor  # [C] float64 number of samples per class

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])


def check_labels(labels: Array, n: int, device: torch.device) -> Classes:
    """Class labels `[N]` (any integer values; classes are the distinct values present).

    Raises:
        ValueError: not 1-D integer, length differs from the features', or fewer than two classes.
    """
    y = as_tensor(labels, "labels")
    if y.ndim != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be [N] integer class ids, got shape {tuple(y.shape)} and dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries but features has {n} samples")
    _, index, counts = torch.unique(y.to(device), return_inverse=True, return_counts=True)
    if counts.shape[0] < 2:
        raise ValueError("labels hold a single class; transferability needs at least two classes")
    return Classes(index, counts.to(torch.float64))


def check_probs(probs: Array, n: int, device: torch.device) -> torch.Tensor:
    """Source-model class probabilities `[N, Z]` as float64 on `device`.

    Raises:
        ValueError: wrong shape, NaN/inf, negative entries, or rows that do not sum to 1 (within 1e-3).
    """
    p = as_tensor(probs, "source_probs")
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] == 0:
        raise ValueError(f"source_probs must be [N, Z] with N = {n} (the labels' length), got {tuple(p.shape)}")
    p = p.to(device=device, dtype=torch.float64)
    if not torch.isfinite(p).all():
        raise ValueError("source_probs contain NaN or inf")
    if (p < 0).any() or ((p.sum(1) - 1).abs() > 1e-3).any():
        raise ValueError("source_probs must be probabilities (rows >= 0 summing to 1): apply softmax to logits")
    return p


def class_means(f: torch.Tensor, classes: Classes) -> torch.Tensor:
    """Mean feature of each class, `[C, D]`."""
    sums = torch.zeros(classes.n, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, classes.index, f)
    return sums / classes.counts[:, None]


def pca(f: torch.Tensor, *, dims: int | None = None, variance: float | None = None) -> torch.Tensor:
    """Exact principal-component scores of `f`, largest component first.

    Components of numerically zero variance (eigenvalue below `max(N, D) * eps` times the largest) are
    dropped, so roundoff noise never becomes a coordinate. Each axis is signed so that its largest-magnitude
    loading is positive, the convention of scikit-learn's PCA.

    Args:
        f: samples `[N, D]`, float64.
        dims: keep at most this many components.
        variance: keep the fewest components whose explained-variance ratio exceeds this fraction.

    Returns:
        Scores `[N, k]` of the centred samples.
    """
    xc = f - f.mean(0)
    n, d = xc.shape
    if d <= n:
        evals, axes = torch.linalg.eigh(xc.T @ xc)
        evals, axes = evals.flip(0), axes.flip(1)
    else:  # the N x N Gram matrix has the same non-zero eigenvalues; axes = Xc^T u / sqrt(lambda)
        evals, u = torch.linalg.eigh(xc @ xc.T)
        evals, u = evals.flip(0), u.flip(1)
    total = evals.clamp(min=0).sum()
    k = int((evals > evals[0] * max(n, d) * EPS).sum())
    if variance is not None:
        ratio = torch.cumsum(evals[:k], 0) / total
        k = min(k, int((ratio <= variance).sum()) + 1)
    if dims is not None:
        k = min(k, dims)
    if d > n:
        axes = xc.T @ u[:, :k] / evals[:k].sqrt()
    axes = axes[:, :k]
    biggest = axes.abs().argmax(0)
    axes = axes * torch.sign(axes[biggest, torch.arange(k, device=f.device)])
    return xc @ axes


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (scipy's `rankdata` 'average').

    >>> average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    order = torch.argsort(x)
    _, group, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).to(torch.float64) - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    ranks[order] = mean_rank[group]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-D float64 tensors."""
    a, b = a - a.mean(), b - b.mean()
    return (a @ b) / (a.norm() * b.norm())
