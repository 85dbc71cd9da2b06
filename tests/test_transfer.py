"""Transferability estimators against plain numpy versions of the papers' formulas, planted orderings,
degenerate input, the registry and rank aggregation.

The `plain_*` functions below are written independently of `ranker.transfer`: per-class Python loops,
np.linalg / scipy / scikit-learn, no shared helpers. N-LEEP's plain version fits its own scikit-learn PCA and
a Gaussian mixture with the same settings and seed, so it checks the whole pipeline, not a shared GMM.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from ranker import transfer

# The contract in ../shared/DESIGN.md: "names are lower case (`logme`, `hscore`, ...)", in that order.
DESIGN_NAMES = ["logme", "hscore", "reg_hscore", "nce", "leep", "nleep", "gbc", "transrate", "sfda", "parc"]
FEATURE_ESTIMATORS = [name for name in DESIGN_NAMES if name not in ("leep", "nce")]


# ---------------------------------------------------------------- plain reference implementations


def plain_logme(f: np.ndarray, y: np.ndarray) -> float:
    """Evidence maximisation with explicit A = alpha I + beta F^T F and np.linalg.solve, one target at a time."""
    n, d = f.shape
    targets = y if y.ndim == 2 else np.stack([(y == c).astype(np.float64) for c in np.unique(y)], 1)
    gram = f.T @ f
    sigma = np.linalg.eigvalsh(gram)
    evidences = []
    for k in range(targets.shape[1]):
        t = targets[:, k]
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * gram, f.T @ t)
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            m2, res2 = m @ m, np.sum((f @ m - t) ** 2)
            new_alpha, new_beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) <= 1e-3
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        log_det = np.linalg.slogdet(alpha * np.eye(d) + beta * gram)[1]
        evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                    - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def class_mean_rows(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return g


def plain_hscore(f: np.ndarray, y: np.ndarray) -> float:
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(class_mean_rows(f, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rtol=f.shape[1] * np.finfo(float).eps, hermitian=True) @ cov_g))


def plain_reg_hscore(f: np.ndarray, y: np.ndarray) -> float:
    lw = LedoitWolf().fit(f)
    cov_g = np.cov(class_mean_rows(f, y), rowvar=False, bias=True)
    return float(np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g)))


def plain_nce(probs: np.ndarray, y: np.ndarray) -> float:
    z = probs.argmax(1)
    total = 0.0
    for source in np.unique(z):
        p_z = np.mean(z == source)
        for target in np.unique(y):
            p_yz = np.mean((z == source) & (y == target))
            if p_yz > 0:
                total += p_yz * np.log(p_yz / p_z)
    return total


def plain_leep(probs: np.ndarray, y: np.ndarray) -> float:
    n, n_source = probs.shape
    classes = list(np.unique(y))
    joint = np.array([probs[y == c].sum(0) / n for c in classes])
    p_y_given_z = joint / joint.sum(0, keepdims=True)
    total = 0.0
    for i in range(n):
        row = classes.index(y[i])
        total += np.log(sum(p_y_given_z[row, z] * probs[i, z] for z in range(n_source)))
    return total / n


def plain_nleep(f: np.ndarray, y: np.ndarray) -> float:
    x = PCA(n_components=0.8, svd_solver="full").fit_transform(f)
    gmm = GaussianMixture(5 * len(np.unique(y)), covariance_type="full", random_state=0).fit(x)
    return plain_leep(gmm.predict_proba(x), y)


def plain_gbc(f: np.ndarray, y: np.ndarray) -> float:
    x = PCA(n_components=min(64, *f.shape), svd_solver="full").fit_transform(f)
    stats = {c: (x[y == c].mean(0), np.maximum(x[y == c].var(0), 1e-4)) for c in np.unique(y)}
    total = 0.0
    for ci, (mi, vi) in stats.items():
        for cj, (mj, vj) in stats.items():
            if ci != cj:
                v = (vi + vj) / 2
                distance = np.sum((mi - mj) ** 2 / v) / 8 + 0.5 * (
                    np.sum(np.log(v)) - 0.5 * np.sum(np.log(vi)) - 0.5 * np.sum(np.log(vj)))
                total += np.exp(-distance)
    return -total


def plain_transrate(f: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:
    def rate(z: np.ndarray) -> float:
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = f - f.mean(0)
    return rate(z) - np.mean([rate(z[y == c]) for c in np.unique(y)])


def plain_sfda(f: np.ndarray, y: np.ndarray) -> float:
    classes = list(np.unique(y))
    n, d = f.shape
    priors = np.array([np.mean(y == c) for c in classes])

    def shrink(cov: np.ndarray, lam: float) -> np.ndarray:
        return (1 - lam) * cov + lam * np.trace(cov) / d * np.eye(d)

    def fisher_probs(x: np.ndarray, lam: float | None) -> tuple[np.ndarray, float]:
        means = np.array([x[y == c].mean(0) for c in classes])
        s_w = sum(p * np.cov(x[y == c], rowvar=False, bias=True) for p, c in zip(priors, classes))
        if lam is None:
            lam = max(np.exp(-5 * np.linalg.eigvalsh(s_w).max()), 1e-10)
        s_t = shrink(np.cov(x, rowvar=False, bias=True), lam)
        _, directions = scipy.linalg.eigh(s_t - shrink(s_w, lam), shrink(s_w, lam))  # Fisher space
        px, pm = x @ directions, means @ directions
        logits = px @ pm.T - 0.5 * np.sum(pm**2, 1) + np.log(priors)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True), lam

    probs, lam = fisher_probs(f, None)
    soft = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)
    means = np.array([f[y == c].mean(0) for c in classes])
    mixed = f.copy()
    for k, c in enumerate(classes):
        p = soft[y == c, k][:, None]
        mixed[y == c] = p * f[y == c] + (1 - p) * (means.sum(0) - means[k]) / (len(classes) - 1)
    probs, _ = fisher_probs(mixed, lam)
    return float(np.mean([probs[i, classes.index(y[i])] for i in range(n)]))


def plain_parc(f: np.ndarray, y: np.ndarray) -> float:
    # at most rank(centred f) components: a zero-variance one would be roundoff noise blown up by the scaler
    rank = np.linalg.matrix_rank(f - f.mean(0))
    x = StandardScaler().fit_transform(PCA(n_components=min(32, rank), svd_solver="full").fit_transform(f))
    classes = list(np.unique(y))
    one_hot = np.eye(len(classes))[[classes.index(v) for v in y]]
    upper = np.triu_indices(len(y), 1)
    # exactly 0 (same class) or C / (C - 1); rounding removes the 1e-16 noise that would otherwise split the ties
    label_rdm = np.round(1 - np.corrcoef(one_hot), 12)
    return scipy.stats.spearmanr((1 - np.corrcoef(x))[upper], label_rdm[upper])[0] * 100


PLAIN = {"logme": plain_logme, "hscore": plain_hscore, "reg_hscore": plain_reg_hscore, "nleep": plain_nleep,
         "gbc": plain_gbc, "transrate": plain_transrate, "sfda": plain_sfda, "parc": plain_parc}


# ---------------------------------------------------------------- data


def blobs(n: int, d: int, c: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random centres (separation 0: features independent of the labels)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    centres = rng.normal(size=(c, d)) * separation
    scales = rng.uniform(0.5, 2.0, size=d)  # unequal variances, so no PCA eigenvalue is degenerate
    return centres[y] + rng.normal(size=(n, d)) * scales, y


def source_probs(y: np.ndarray, n_source: int, agreement: float, seed: int) -> np.ndarray:
    """Softmax of logits that favour source class y (agreement > 0) or are pure noise (agreement 0)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), n_source)) + agreement * np.eye(n_source)[y]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def call(name: str, f, y, probs=None) -> float:
    extra = {"source_probs": probs} if name in ("leep", "nce") else {}
    return transfer.get(name)(f, y, **extra)


# ---------------------------------------------------------------- agreement with the plain formulas


@pytest.mark.parametrize("name", sorted(PLAIN))
@pytest.mark.parametrize("shape", [(90, 12, 3), (100, 70, 4)], ids=["small-D", "D-above-PCA-dims"])
def test_matches_plain_implementation(name, shape):
    f, y = blobs(*shape, separation=1.0, seed=1)
    assert transfer.get(name)(f, y) == pytest.approx(PLAIN[name](f, y), rel=1e-6)


def test_logme_matches_plain_when_n_below_d_and_for_regression():
    f, y = blobs(25, 40, 3, separation=1.0, seed=2)
    assert transfer.get("logme")(f, y) == pytest.approx(plain_logme(f, y), rel=1e-6)
    rng = np.random.default_rng(3)
    for n, d in [(80, 10), (15, 30)]:
        f = rng.normal(size=(n, d))
        targets = f[:, :3] @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(n, 2))
        assert transfer.get("logme")(f, targets) == pytest.approx(plain_logme(f, targets), rel=1e-6)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_source_estimators_match_plain_implementation(name):
    _, y = blobs(120, 2, 4, separation=0.0, seed=4)
    probs = source_probs(y, 7, agreement=2.0, seed=5)
    plain = plain_leep(probs, y) if name == "leep" else plain_nce(probs, y)
    assert transfer.get(name)(None, y, source_probs=probs) == pytest.approx(plain, rel=1e-6)


def test_leep_ignores_source_classes_with_zero_probability():
    _, y = blobs(60, 2, 3, separation=0.0, seed=6)
    probs = np.concatenate([source_probs(y, 4, agreement=2.0, seed=7), np.zeros((60, 2))], 1)
    assert transfer.get("leep")(None, y, source_probs=probs) == pytest.approx(plain_leep(probs[:, :4], y), rel=1e-9)


# ---------------------------------------------------------------- planted orderings


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
def test_separating_features_score_higher_than_noise(name):
    signal, y = blobs(90, 8, 3, separation=3.0, seed=8)
    noise = np.random.default_rng(9).normal(size=signal.shape)
    assert call(name, signal, y) > call(name, noise, y)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_matching_source_predictions_score_higher_than_random(name):
    _, y = blobs(150, 2, 4, separation=0.0, seed=10)
    matching = source_probs(y, 6, agreement=4.0, seed=11)
    random = source_probs(y, 6, agreement=0.0, seed=11)
    assert call(name, None, y, matching) > call(name, None, y, random)


# ---------------------------------------------------------------- input types and precision


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_torch_numpy_and_float32_inputs_agree(name):
    f, y = blobs(80, 10, 3, separation=1.5, seed=12)
    f32 = f.astype(np.float32)
    probs = source_probs(y, 5, agreement=2.0, seed=13)
    from_numpy = call(name, f32, y, probs)
    from_torch = call(name, torch.from_numpy(f32), torch.from_numpy(y), torch.from_numpy(probs))
    as_float64 = call(name, f32.astype(np.float64), y, probs)
    assert from_torch == pytest.approx(from_numpy, rel=1e-12, abs=1e-12)
    assert from_numpy == pytest.approx(as_float64, rel=1e-12, abs=1e-12)  # float32 values, float64 math
    if name in PLAIN:
        assert from_numpy == pytest.approx(PLAIN[name](f32.astype(np.float64), y), rel=1e-6)


def test_nleep_is_deterministic():
    f, y = blobs(90, 12, 3, separation=1.0, seed=14)
    assert transfer.get("nleep")(f, y) == transfer.get("nleep")(f, y)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_cuda_matches_cpu(name):
    f, y = blobs(100, 20, 4, separation=1.0, seed=15)
    probs = source_probs(y, 6, agreement=2.0, seed=16)
    cpu = call(name, torch.from_numpy(f), torch.from_numpy(y), torch.from_numpy(probs))
    cuda = call(name, torch.from_numpy(f).cuda(), torch.from_numpy(y).cuda(), torch.from_numpy(probs).cuda())
    assert cuda == pytest.approx(cpu, rel=1e-6)


# ---------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
def test_fewer_samples_than_dimensions(name):
    f, y = blobs(30, 60, 3, separation=1.0, seed=17)
    assert math.isfinite(call(name, f, y))
    assert call(name, f, y) == pytest.approx(PLAIN[name](f, y), rel=1e-6)


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
def test_constant_and_duplicate_features(name):
    f, y = blobs(90, 8, 3, separation=1.0, seed=18)
    padded = np.concatenate([f, np.full((90, 1), 3.0), f[:, :2]], 1)
    assert math.isfinite(call(name, padded, y))


def test_hscore_ignores_duplicate_and_constant_features():
    f, y = blobs(90, 8, 3, separation=1.0, seed=18)
    padded = np.concatenate([f, np.full((90, 1), 3.0), f[:, :2]], 1)
    assert transfer.get("hscore")(padded, y) == pytest.approx(transfer.get("hscore")(f, y), rel=1e-8)


@pytest.mark.parametrize("name", FEATURE_ESTIMATORS)
def test_class_with_a_single_sample_is_scored(name):
    f, y = blobs(61, 6, 2, separation=1.0, seed=19)
    y[0] = 2  # class 2 has exactly one sample
    assert math.isfinite(call(name, f, y))
    assert call(name, f, y) == pytest.approx(PLAIN[name](f, y), rel=1e-6)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_bad_input_raises_value_error(name):
    f, y = blobs(40, 6, 2, separation=1.0, seed=20)
    probs = source_probs(y, 3, agreement=1.0, seed=21)
    with pytest.raises(ValueError, match="single class"):
        call(name, f, np.zeros(40, dtype=int), probs)
    with pytest.raises(ValueError, match="40 samples|N = 39"):
        call(name, f, y[:39], probs)
    with pytest.raises(ValueError, match="integer class ids"):
        call(name, f, y.astype(np.float64), probs)
    if name in ("leep", "nce"):
        with pytest.raises(ValueError, match="probabilities"):
            call(name, None, y, np.log(probs))
        with pytest.raises(ValueError, match=r"\[N, Z\]"):
            call(name, None, y, probs[:30])
    else:
        for bad in (np.nan, np.inf):
            broken = f.copy()
            broken[3, 2] = bad
            with pytest.raises(ValueError, match="NaN or inf"):
                call(name, broken, y)
        with pytest.raises(ValueError, match="constant"):
            call(name, np.ones((40, 6)), y)


def test_undefined_parc_and_sfda_cases_raise():
    f, y = blobs(6, 4, 6, separation=1.0, seed=22)
    with pytest.raises(ValueError, match="two or more samples"):
        transfer.get("parc")(f, y)
    _, y = blobs(30, 4, 3, separation=0.0, seed=23)
    with pytest.raises(ValueError, match="within-class variation"):
        transfer.get("sfda")(np.eye(3, 4)[y] + 1.0, y)


# ---------------------------------------------------------------- registry and aggregation


def test_registry_names_match_the_design():
    assert transfer.names() == DESIGN_NAMES
    assert all(callable(transfer.get(name)) for name in DESIGN_NAMES)
    with pytest.raises(ValueError, match="valid names: logme, hscore, reg_hscore"):
        transfer.get("LEEPS")


def test_aggregate_normalized_mean_rank():
    scores = {"a": [1.0, 3.0, 2.0, 2.0], "b": [-500.0, 900.0, 10.0, 20.0]}
    # a: ranks 1, 4, 2.5, 2.5 -> 0, 1, 0.5, 0.5; b: ranks 1, 4, 2, 3 -> 0, 1, 1/3, 2/3
    np.testing.assert_allclose(transfer.aggregate(scores), [0.0, 1.0, 5 / 12, 7 / 12])
    rescaled = {"a": np.array(scores["a"]) * 1e6, "b": np.array(scores["b"]) - 7}
    np.testing.assert_allclose(transfer.aggregate(rescaled), transfer.aggregate(scores))


def test_aggregate_skips_nan_and_rejects_models_without_scores():
    combined = transfer.aggregate({"a": [1.0, np.nan, 3.0], "b": [3.0, 2.0, 1.0]})
    np.testing.assert_allclose(combined, [(0 + 1) / 2, 0.5, (1 + 0) / 2])
    with pytest.raises(ValueError, match="positions \\[1\\]"):
        transfer.aggregate({"a": [1.0, np.nan], "b": [2.0, np.nan]})
    with pytest.raises(ValueError, match="same models"):
        transfer.aggregate({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="no estimator"):
        transfer.aggregate({})
