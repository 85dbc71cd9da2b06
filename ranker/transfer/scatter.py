"""Estimators built on second moments of the features: H-score, regularized H-score, TransRate, SFDA.

Features whose classes lie apart score above features that ignore the labels:

    >>> import torch
    >>> labels = torch.arange(60) % 3
    >>> noise = torch.randn(60, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> separable = noise + 4 * torch.nn.functional.one_hot(labels, 6)  # class c shifted along axis c
    >>> [f(separable, labels) > f(noise, labels) for f in (hscore, reg_hscore, transrate, sfda)]
    [True, True, True, True]
"""

from __future__ import annotations

import math

import torch

from ranker.transfer.common import EPS, Array, Classes, check_features, check_labels, class_means

TRANSRATE_EPS = 1e-4  # distortion eps of the coding rate, as the authors' published code
SFDA_STRENGTH = 5.0  # a in lambda = exp(-a * largest eigenvalue of S_w) (Shao et al.)
SFDA_MIN_SHRINKAGE = 1e-10  # lower bound on lambda, as the authors' code


def _inputs(features: Array, labels: Array) -> tuple[torch.Tensor, Classes]:
    f = check_features(features)
    return f, check_labels(labels, f.shape[0], f.device)


def _trace_pinv(evals: torch.Tensor, evecs: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """tr(S^+ B^T B) for S = V diag(evals) V^T, pseudo-inverting with numpy/torch's default cutoff
    (eigenvalues at most D * eps times the largest count as zero)."""
    keep = evals > evals.max() * evals.shape[0] * EPS
    return (((factor @ evecs[:, keep]) ** 2).sum(0) / evals[keep]).sum()


def hscore(features: Array, labels: Array) -> float:
    """H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer
    Learning", ICIP 2019): H(f) = tr(cov(f)^-1 cov(E[f | Y])).

    cov(E[f | Y]) is the covariance of each sample's class-mean feature, sum_c n_c (mu_c - mu)(mu_c - mu)^T
    over the same N - 1 as cov(f). A singular cov(f) (N <= D, constant or duplicate features) is
    pseudo-inverted, with numpy's default cutoff; that makes duplicate features change nothing.

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        H(f), at least 0 and at most C - 1.
    """
    f, classes = _inputs(features, labels)
    mean = f.mean(0)
    xc = f - mean
    evals, evecs = torch.linalg.eigh(xc.T @ xc)  # both covariances carry 1 / (N - 1), which cancels
    between = classes.counts.sqrt()[:, None] * (class_means(f, classes) - mean)
    return float(_trace_pinv(evals, evecs, between))


def reg_hscore(features: Array, labels: Array) -> float:
    """Regularized H-score (Ibrahim et al., "Newer is not always better: Rethinking transferability metrics,
    their peculiarities, stability and performance", arXiv:2110.06893, the shrinkage-based H-score):
    H_alpha(f) = tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f | Y])).

    cov_alpha(f) = (1 - alpha) S + alpha tr(S) / D I is the Ledoit-Wolf estimate ("A well-conditioned
    estimator for large-dimensional covariance matrices", JMVA 2004) with S the
    maximum-likelihood covariance (1 / N) and alpha = min(b^2, d^2) / d^2,
    d^2 = ||S - tr(S)/D I||^2 / D, b^2 = (sum_i ||x_i||^4 / N - ||S||^2) / (N D) on the centred samples.
    cov(E[f | Y]) uses the same 1 / N. A singular cov_alpha (only when alpha = 0) is pseudo-inverted.

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        H_alpha(f), at least 0.
    """
    f, classes = _inputs(features, labels)
    n, d = f.shape
    mean = f.mean(0)
    xc = f - mean
    s = xc.T @ xc / n
    mu = torch.trace(s) / d
    delta = ((s - mu * torch.eye(d, dtype=s.dtype, device=s.device)) ** 2).sum() / d
    beta = (((xc * xc).sum(1) ** 2).sum() / n - (s * s).sum()) / (n * d)
    alpha = torch.where(delta > 0, torch.minimum(beta, delta) / delta, 0.0)
    evals, evecs = torch.linalg.eigh(s)
    between = (classes.counts / n).sqrt()[:, None] * (class_means(f, classes) - mean)
    return float((1 - alpha) * _trace_pinv((1 - alpha) * evals + alpha * mu, evecs, between))


def transrate(features: Array, labels: Array) -> float:
    """TransRate (Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022): the coding-rate
    estimate of the mutual information between features and labels, TrR = R(Z, eps) - R(Z, eps | Y).

    As the paper's published implementation: Z is the features centred over all samples,
    R(Z, eps) = 1/2 log det(I_D + Z^T Z / (N eps)) and R(Z, eps | Y) = 1/C sum_c R(Z_c, eps) over the rows
    Z_c of each class (n_c in place of N), with eps = 1e-4. Each log det comes from the eigenvalues of the
    smaller of Z^T Z and Z Z^T (Sylvester's identity), so N < D costs N x N work.

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        TrR in nats.
    """
    f, classes = _inputs(features, labels)
    z = f - f.mean(0)
    order = torch.argsort(classes.index, stable=True)
    per_class = torch.split(z[order], classes.counts.long().tolist())
    class_rate = torch.stack([_coding_rate(zc) for zc in per_class]).mean()
    return float(_coding_rate(z) - class_rate)


def _coding_rate(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    evals = torch.linalg.eigvalsh(gram).clamp(min=0)
    return torch.log1p(evals / (n * TRANSRATE_EPS)).sum() / 2


def sfda(features: Array, labels: Array) -> float:
    """SFDA (Shao et al., "Not All Models Are Equal: Predicting Model Transferability in a Self-challenging
    Fisher Space", ECCV 2022): regularized Fisher discriminant analysis, a self-challenging confidence mix,
    and the mean class probability of a second discriminant.

    1. Regularized FDA: within-class scatter S_w = sum_c (n_c / N) cov_c (maximum-likelihood covariances),
       shrunk as S~_w = (1 - lambda) S_w + lambda tr(S_w) / D I with lambda = exp(-5 sigma_max(S_w)) (the
       paper's adaptive strength; floored at 1e-10 as the authors' code; sigma_max is the exact largest
       eigenvalue, which the authors' code approximates by three power iterations).
    2. Projection and class probabilities: the samples are projected onto the Fisher directions of
       (S_b, S~_w), all of them as the authors' scoring does, where the class-conditional Gaussians with
       shared covariance S~_w give p(c | x) = softmax_c(x S~_w^-1 mu_c - 1/2 mu_c S~_w^-1 mu_c + log n_c / N).
       With every direction kept that projection is the whitening by S~_w, computed from its eigenbasis.
    3. ConfMix: x_i <- p_i x_i + (1 - p_i) mu_bar_{y_i}, with mu_bar_c the mean of the other classes' means and
       p_i the true-class probability after the authors' extra softmax over the probabilities of step 2.
    4. Steps 1-2 again on the mixed samples with the same lambda; the score is 1/N sum_i p(y_i | x_i).

    Args:
        features: `[N, D]`.
        labels: `[N]` integer classes.

    Returns:
        The mean true-class probability, in (0, 1].

    Raises:
        ValueError: zero within-class scatter (the samples of every class are identical).
    """
    f, classes = _inputs(features, labels)
    first, shrinkage = _fda_probs(f, classes, None)
    confidence = torch.softmax(first, 1).gather(1, classes.index[:, None])
    means = class_means(f, classes)
    outer = (means.sum(0) - means) / (classes.n - 1)
    mixed = confidence * f + (1 - confidence) * outer[classes.index]
    second, _ = _fda_probs(mixed, classes, shrinkage)
    return float(second.gather(1, classes.index[:, None]).mean())


def _fda_probs(f: torch.Tensor, classes: Classes, shrinkage: float | None) -> tuple[torch.Tensor, float]:
    """Class probabilities `[N, C]` of the shrunk-covariance discriminant, and the shrinkage lambda used."""
    n, d = f.shape
    means = class_means(f, classes)
    within = f - means[classes.index]
    evals, evecs = torch.linalg.eigh(within.T @ within / n)
    evals = evals.clamp(min=0)
    if shrinkage is None:
        shrinkage = max(math.exp(-SFDA_STRENGTH * float(evals[-1])), SFDA_MIN_SHRINKAGE)
    mu = evals.sum() / d
    if mu <= 0:
        raise ValueError("SFDA needs within-class variation: the samples of every class are identical")
    scale = ((1 - shrinkage) * evals + shrinkage * mu).rsqrt()
    x, m = f @ evecs * scale, means @ evecs * scale
    logits = x @ m.T - (m * m).sum(1) / 2 + torch.log(classes.counts / n)
    return torch.softmax(logits, 1), shrinkage
