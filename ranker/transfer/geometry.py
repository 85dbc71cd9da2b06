"""Estimators on the geometry of PCA-reduced features: GBC (class overlap) and PARC (pairwise similarities).

Features whose classes lie apart score above features that ignore the labels:

    >>> import torch
    >>> labels = torch.arange(60) % 3
    >>> noise = torch.randn(60, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> separable = noise + 4 * torch.nn.functional.one_hot(labels, 6)  # class c shifted along axis c
    >>> gbc(separable, labels) > gbc(noise, labels), parc(separable, labels) > parc(noise, labels)
    (True, True)
"""

from __future__ import annotations

import torch

from ranker.transfer.common import Array, average_ranks, check_features, check_labels, class_means, pca, pearson

GBC_DIMS = 64  # PCA components before GBC (Pandy et al.'s setting)
GBC_MIN_VARIANCE = 1e-4  # per-dimension class variances are floored here, as the authors' code
PARC_DIMS = 32  # PCA components before PARC (Bolya et al.'s released experiments)
_CHUNK_ELEMENTS = 1 << 22  # bound on the [rows, C, k] temporary of GBC's pairwise distances


def gbc(features: Array, labels: Array) -> float:
    """Gaussian Bhattacharyya Coefficient (Pandy et al., "Transferability Estimation using Bhattacharyya Class
    Separability", CVPR 2022): GBC = -sum_{i != j} BC(c_i, c_j), BC = exp(-D_B).

    The features are reduced by exact PCA to 64 components (the paper's setting; fewer when the features
    span fewer dimensions). Each class c is a Gaussian with the class mean mu_c and the diagonal covariance
    of its per-dimension (maximum-likelihood) variances sigma_c, floored at 1e-4 as in the authors' code,
    which also defines a class with a single sample. With sigma = (sigma_i + sigma_j) / 2 the Bhattacharyya
    distance is D_B = 1/8 (mu_i - mu_j)^T sigma^-1 (mu_i - mu_j) + 1/2 ln(det sigma / sqrt(det sigma_i
    det sigma_j)).

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        GBC, at most 0 (0 when no two classes overlap), at least -C (C - 1).
    """
    f = check_features(features)
    classes = check_labels(labels, f.shape[0], f.device)
    x = pca(f, dims=GBC_DIMS)
    means = class_means(x, classes)
    var = class_means((x - means[classes.index]) ** 2, classes).clamp(min=GBC_MIN_VARIANCE)
    half_log_det = var.log().sum(1) / 2
    c, k = means.shape
    rows = max(1, _CHUNK_ELEMENTS // (c * k))
    total = torch.zeros((), dtype=torch.float64, device=f.device)
    for start in range(0, c, rows):
        i = torch.arange(start, min(start + rows, c), device=f.device)
        avg = (var[i, None] + var[None]) / 2
        distance = (((means[i, None] - means[None]) ** 2 / avg).sum(-1) / 8
                    + (avg.log().sum(-1) - half_log_det[i, None] - half_log_det[None]) / 2)
        off_diagonal = i[:, None] != torch.arange(c, device=f.device)[None]
        total += torch.exp(-distance)[off_diagonal].sum()
    return float(-total)


def parc(features: Array, labels: Array) -> float:
    """PARC, Pairwise Annotation Representation Comparison (Bolya et al., "Scalable Diverse Model Selection for
    Accessible Transfer Learning", NeurIPS 2021): 100 x Spearman correlation between the upper triangles of
    the representation dissimilarity matrices 1 - corr(f_i, f_j) of the features and 1 - corr(l_i, l_j) of
    the one-hot labels.

    As the authors' released code: exact PCA to 32 components (their randomized PCA approximates it;
    components of numerically zero variance are dropped), each component standardized, Pearson correlation
    between samples across components, and the score scaled by 100. The label dissimilarity takes two values,
    equal for same-class pairs and larger for different-class pairs, so its ranks are an affine function of
    the indicator "different class", with which the feature ranks are correlated. Memory is O(N^2).

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        PARC in [-100, 100].

    Raises:
        ValueError: features spanning fewer than two dimensions, a sample whose standardized components are
            all equal, every sample alone in its class, or all pairwise dissimilarities equal (Spearman
            correlation undefined).
    """
    f = check_features(features)
    classes = check_labels(labels, f.shape[0], f.device)
    if bool((classes.counts < 2).all()):
        raise ValueError("PARC needs a class with two or more samples (no same-class pair otherwise)")
    x = pca(f, dims=PARC_DIMS)
    if x.shape[1] < 2:
        raise ValueError("PARC needs features that span at least two dimensions")
    x = x / x.std(0, correction=0)
    rows = x - x.mean(1, keepdim=True)
    norms = rows.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("PARC is undefined: a sample has equal values in every standardized component")
    rows = rows / norms
    n = f.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool, device=f.device).triu(1)
    dissimilarity = (1 - rows @ rows.T)[upper]
    if bool((dissimilarity == dissimilarity[0]).all()):
        raise ValueError("PARC is undefined: all pairwise feature dissimilarities are equal")
    different = (classes.index[:, None] != classes.index[None])[upper].to(torch.float64)
    return float(100 * pearson(average_ranks(dissimilarity), different))
