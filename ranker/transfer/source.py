"""Estimators built on a source label space: NCE and LEEP (the source model's own classifier) and N-LEEP
(a Gaussian mixture on the features standing in for it).

A source head whose classes map onto the target's scores above one that guesses:

    >>> import torch
    >>> labels = torch.arange(60) % 3
    >>> noise = torch.randn(60, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> separable = noise + 4 * torch.nn.functional.one_hot(labels, 6)  # class c shifted along axis c
    >>> sharp, flat = torch.eye(3, dtype=torch.float64)[labels] * 0.85 + 0.05, torch.full((60, 3), 1 / 3.0)
    >>> leep(None, labels, source_probs=sharp) > leep(None, labels, source_probs=flat)
    True
    >>> nce(None, labels, source_probs=sharp) > nce(None, labels, source_probs=flat)
    True
    >>> nleep(separable, labels) > nleep(noise, labels)
    True
"""

from __future__ import annotations

import torch
from sklearn.mixture import GaussianMixture

from ranker.transfer.common import Array, Classes, as_tensor, check_features, check_labels, check_probs, pca

NLEEP_VARIANCE = 0.8  # PCA keeps the fewest components explaining more than 80% of the variance (Li et al.)
NLEEP_COMPONENTS_PER_CLASS = 5  # Gaussian components = 5 x target classes (Li et al.), at most N
NLEEP_SEED = 0  # random_state of the mixture's k-means initialisation


def _target_classes(labels: Array, probs: Array) -> tuple[Classes, torch.Tensor]:
    y, p = as_tensor(labels, "labels"), as_tensor(probs, "source_probs")
    classes = check_labels(y, y.shape[0] if y.ndim else 0, p.device)
    return classes, check_probs(p, y.shape[0], p.device)


def nce(features: Array | None, labels: Array, *, source_probs: Array) -> float:
    """Negative Conditional Entropy NCE(Y | Z) = -H(Y | Z) (Tran et al., "Transferability and Hardness of
    Supervised Classification Tasks", ICCV 2019: NCE(Y|Z) = -H(Y|Z)).

    Z is the source model's hard prediction (argmax of `source_probs`, first index on ties) and Y the
    target label; with the empirical joint P(y, z) = #{i: y_i = y, z_i = z} / N,
    -H(Y | Z) = sum_{y,z} P(y, z) log(P(y, z) / P(z)), where 0 log 0 = 0. The conditioning is on the source
    label Z, as the paper defines it (not H(Z | Y)).

    Args:
        features: unused (may be None); NCE only needs the source predictions.
        labels: `[N]` integer target classes.
        source_probs: `[N, Z]` source-model class probabilities on the target samples.

    Returns:
        -H(Y | Z) in nats, at most 0 (0 when the source label determines the target label).
    """
    classes, p = _target_classes(labels, source_probs)
    z = p.argmax(1)
    joint = torch.zeros(classes.n, p.shape[1], dtype=torch.float64, device=p.device)
    joint.index_put_((classes.index, z), torch.ones_like(z, dtype=torch.float64), accumulate=True)
    joint /= z.shape[0]
    p_z = joint.sum(0, keepdim=True).expand_as(joint)
    seen = joint > 0
    return float((joint[seen] * torch.log(joint[seen] / p_z[seen])).sum())


def leep(features: Array | None, labels: Array, *, source_probs: Array) -> float:
    """Log Expected Empirical Prediction (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020, Eq. 2).

    With theta_i = source_probs[i] (the dummy label distribution over source classes z):
    P(y, z) = 1/N sum_{i: y_i = y} theta_iz, P(y | z) = P(y, z) / sum_y P(y, z), and
    LEEP = 1/N sum_i log sum_z P(y_i | z) theta_iz (Eq. 2). A source class that gets zero probability on
    every sample has no P(y | z); it contributes nothing to any sample and is left out.

    Args:
        features: unused (may be None); LEEP only needs the source predictions.
        labels: `[N]` integer target classes.
        source_probs: `[N, Z]` source-model class probabilities (softmax outputs) on the target samples.

    Returns:
        The mean log-likelihood of the empirical predictor, at most 0.
    """
    classes, p = _target_classes(labels, source_probs)
    return _leep(p, classes)


def _leep(theta: torch.Tensor, classes: Classes) -> float:
    joint = torch.zeros(classes.n, theta.shape[1], dtype=torch.float64, device=theta.device)
    joint.index_add_(0, classes.index, theta).div_(theta.shape[0])
    p_z = joint.sum(0)
    conditional = torch.where(p_z > 0, joint / p_z.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    expected = (theta @ conditional.T).gather(1, classes.index[:, None])
    return float(torch.log(expected).mean())


def nleep(features: Array, labels: Array) -> float:
    """N-LEEP (Li et al., "Ranking Neural Checkpoints", CVPR 2021): LEEP (Eq. 2 of Nguyen et al.)
    with the source classifier replaced by a Gaussian mixture fitted on the target features.

    The features are reduced by exact PCA to the fewest components explaining more than 80% of their variance
    (the paper's setting), then a full-covariance Gaussian mixture with 5 x (number of target classes)
    components (the paper's ratio; capped at N) is fitted by scikit-learn's EM on the CPU with
    `random_state=0`; its posteriors p(component | x_i) play the role of theta_i in LEEP. The result is
    deterministic for a given input; the PCA and the LEEP step run on the input's device.

    Args:
        features: `[N, D]`.
        labels: `[N]` integer target classes.

    Returns:
        LEEP of the mixture posteriors, at most 0.
    """
    f = check_features(features)
    classes = check_labels(labels, f.shape[0], f.device)
    scores = pca(f, variance=NLEEP_VARIANCE)
    components = min(NLEEP_COMPONENTS_PER_CLASS * classes.n, f.shape[0])
    gmm = GaussianMixture(components, covariance_type="full", random_state=NLEEP_SEED)
    posterior = gmm.fit(scores.cpu().numpy()).predict_proba(scores.cpu().numpy())
    return _leep(torch.from_numpy(posterior).to(device=f.device, dtype=torch.float64), classes)
