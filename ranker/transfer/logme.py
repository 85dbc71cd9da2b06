"""LogME: the maximum log evidence of a Bayesian linear model on frozen features, all targets at once.

You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021, and
"Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR 2022 (whose
fixed-point iteration is used here).

Features whose classes lie apart score above features that ignore the labels:

    >>> import torch
    >>> labels = torch.arange(60) % 3
    >>> noise = torch.randn(60, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> separable = noise + 4 * torch.nn.functional.one_hot(labels, 6)  # class c shifted along axis c
    >>> logme(separable, labels) > logme(noise, labels)
    True
"""

from __future__ import annotations

import math

import torch

from ranker.transfer.common import Array, as_tensor, check_features, check_labels

MAX_ITERATIONS = 11  # the authors' reference code: "should converge after at most 10 steps"
TOLERANCE = 1e-3  # stop a target once |lambda' - lambda| / lambda <= 1e-3, lambda = alpha / beta
DENOMINATOR_EPS = 1e-5  # added to m^T m and ||F m - y||^2 in the alpha / beta updates, as the reference code


def logme(features: Array, labels: Array) -> float:
    """LogME score: the maximum evidence per sample, averaged over targets (You et al. 2021/2022).

    For each target y (the one-hot column of a class, or a regression column) with features F [N, D] the
    model is y = F w + noise, w ~ N(0, 1/alpha I), noise ~ N(0, 1/beta). The log evidence (ICML 2021,
    log|A| with A = alpha I + beta F^T F over all D dimensions)

        L = N/2 log beta + D/2 log alpha - N/2 log 2 pi - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log|A|,
        m = beta A^-1 F^T y,

    is maximised by the fixed-point iteration of the JMLR 2022 paper: with t = alpha / beta and
    F^T F = V diag(sigma) V^T, gamma = sum sigma / (sigma + t), alpha = gamma / m^T m, beta = (N - gamma) /
    ||F m - y||^2, from alpha = beta = 1, for at most 11 steps, each target stopping on its own when t changes
    by at most 1e-3 relatively, exactly as the authors' reference code (including its 1e-5 in the
    denominators and evaluating L with the updated alpha, beta and the last step's m).

    All targets run in one batched iteration (tensors of shape [K]). Only Gram-sized products touch F:
    G = F^T F (N > D) or F F^T (N <= D), its eigendecomposition, and z = V^T F^T y; in the eigenbasis
    m^T m = sum z^2 / (sigma + t)^2 and ||F m - y||^2 = ||y||^2 - sum z^2 (sigma + 2t) / (sigma + t)^2, so
    no N x k singular-vector matrix is formed and zero singular values need no special case.

    Unlike the reference fixed-point code, log|A| keeps the (D - rank F) eigenvalues equal to alpha, so the
    score is the exact evidence also when N < D or F is rank deficient (they agree when rank F = D).

    Args:
        features: `[N, D]`; cast to float64 on their device.
        labels: `[N]` integer classes (one one-hot target per distinct class), or `[N, K]` float
            regression targets.

    Returns:
        The mean over targets of L / N.
    """
    return float(_fit(features, labels)[0].mean())


def posterior_weights(features: Array, labels: Array) -> tuple[float, torch.Tensor]:
    """LogME score and the posterior mean weights of every target, at the evidence-maximising alpha and beta.

    The weights of target k are m_k = beta A^-1 F^T y_k = (F^T F + t I)^-1 F^T y_k with t = alpha / beta of the
    iteration step whose m the score uses (the reference code's ``LogME.ms``): F m_k is the model's prediction of
    target k, which is how B-Tuning maps a model's features into the label space (``ranker.tune``).

    Args:
        features: `[N, D]`, as for :func:`logme`.
        labels: `[N]` integer classes (the rows of the weights follow the sorted distinct classes), or `[N, K]`
            float regression targets.

    Returns:
        (the :func:`logme` score, the weights `[K, D]` in float64 on the features' device).
    """
    evidence, weights = _fit(features, labels)
    return float(evidence.mean()), weights


def _fit(features: Array, labels: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum evidence per sample `[K]` and posterior mean weights `[K, D]` of every target (see :func:`logme`)."""
    f = check_features(features)
    n, d = f.shape
    y = as_tensor(labels, "labels")
    if y.ndim == 2:  # regression targets
        if y.shape[0] != n or y.shape[1] == 0:
            raise ValueError(f"regression targets must be [N, K] with N = {n}, got {tuple(y.shape)}")
        y = y.to(device=f.device, dtype=torch.float64)
        if not torch.isfinite(y).all():
            raise ValueError("regression targets contain NaN or inf")
        y_sq = (y * y).sum(0)
        if n > d:
            f_t_y = f.T @ y
        else:
            sigma, u = torch.linalg.eigh(f @ f.T)
            x = u.T @ y
    else:
        classes = check_labels(y, n, f.device)
        y_sq = classes.counts
        if n > d:
            f_t_y = torch.zeros(classes.n, d, dtype=f.dtype, device=f.device).index_add_(0, classes.index, f).T
        else:
            sigma, u = torch.linalg.eigh(f @ f.T)
            x = torch.zeros(classes.n, n, dtype=f.dtype, device=f.device).index_add_(0, classes.index, u).T
    if n > d:
        sigma, v = torch.linalg.eigh(f.T @ f)
        sigma = sigma.clamp(min=0)
        z = v.T @ f_t_y
        z_sq = z**2
    else:
        sigma = sigma.clamp(min=0)
        z_sq = sigma[:, None] * x**2
    evidence, t = _max_evidence(sigma, z_sq, y_sq, n, d)
    # m = (F^T F + t I)^-1 F^T y: V diag(1 / (sigma + t)) V^T F^T y in the eigenbasis of F^T F, and by the
    # push-through identity F^T U diag(1 / (sigma + t)) U^T y from that of F F^T
    if n > d:
        weights = v @ (z / (sigma[:, None] + t))
    else:
        weights = f.T @ (u @ (x / (sigma[:, None] + t)))
    return evidence, weights.T


def _max_evidence(sigma: torch.Tensor, z_sq: torch.Tensor, y_sq: torch.Tensor, n: int, d: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum evidence per sample of each target, `[K]`, by the batched fixed-point iteration, and the t = alpha /
    beta `[K]` of the step whose m it uses (the step each target stopped at).

    Args:
        sigma: non-negative eigenvalues of F^T F (or of F F^T), `[r]`.
        z_sq: squared coordinates of F^T y in the eigenbasis, `[r, K]` (sigma * (u^T y)^2 for F F^T).
        y_sq: ||y||^2 of each target, `[K]`.
        n: number of samples N.
        d: feature dimension D.
    """
    s = sigma[:, None]
    alpha = torch.ones_like(y_sq)
    beta = torch.ones_like(y_sq)
    m_sq = torch.zeros_like(y_sq)
    res_sq = torch.zeros_like(y_sq)
    m_t = torch.ones_like(y_sq)
    active = torch.ones_like(y_sq, dtype=torch.bool)
    for _ in range(MAX_ITERATIONS):
        t = alpha / beta
        gamma = (s / (s + t)).sum(0)
        step_m_sq = (z_sq / (s + t) ** 2).sum(0)
        step_res_sq = (y_sq - (z_sq * (s + 2 * t) / (s + t) ** 2).sum(0)).clamp(min=0)
        step_alpha = gamma / (step_m_sq + DENOMINATOR_EPS)
        step_beta = (n - gamma) / (step_res_sq + DENOMINATOR_EPS)
        alpha = torch.where(active, step_alpha, alpha)
        beta = torch.where(active, step_beta, beta)
        m_sq = torch.where(active, step_m_sq, m_sq)
        res_sq = torch.where(active, step_res_sq, res_sq)
        m_t = torch.where(active, t, m_t)
        active &= (step_alpha / step_beta - t).abs() / t > TOLERANCE
        if not active.any():
            break
    log_det = torch.log(alpha + beta * s).sum(0) + (d - sigma.shape[0]) * torch.log(alpha)
    evidence = (d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res_sq - alpha / 2 * m_sq - log_det / 2)
    return evidence / n, m_t
