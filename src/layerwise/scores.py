"""Cheap per-layer transferability scores: how well fixed features suit a task's labels.

The estimate run (estimate.py) applies a primary's first l_c body layers to the secondary task's
training and validation examples (l_c = 0: the raw inputs), flattens the outputs, and scores them
here, with numpy alone:

- `probe`: accuracy (%) on validation of a ridge-regression classifier (one-vs-rest least squares
  on one-hot targets with an intercept, closed form, so deterministic) fitted on the standardised
  training features, its ridge chosen on the training split by generalised cross-validation;
- `logme`: LogME (You et al., ICML 2021): per class, the log evidence of a Bayesian linear model
  of the one-hot target, maximised over its prior and noise precisions (alpha, beta) by the
  paper's fixed-point updates through the features' singular values (from the smaller Gram
  matrix); averaged over classes, divided by the number of examples. Computed on the training
  features as they are (no standardisation: the paper's form; it is invariant to scaling all
  features by one factor, not each by its own);
- `hscore`: H-score (Bao et al., ICIP 2019): tr(cov(f)^-1 cov(E[f | y])) on the training
  features, with the covariance shrunk slightly towards its mean variance so that it inverts when
  examples are few;
- `knn`: accuracy (%) on validation of a 5-nearest-neighbour vote (Euclidean, standardised
  features; ties go to the class of the nearer neighbour).

Features wider than MAX_DIMS are reduced by a seeded Gaussian random projection (distances and
inner products are kept up to a small distortion, Johnson-Lindenstrauss), the same projection
for both splits.
"""

from __future__ import annotations

import functools
from typing import Dict

import numpy as np
import torch

MAX_DIMS = 512
KNN_K = 5
RIDGES = tuple(10.0 ** k for k in range(-4, 3))  # the probe's penalties per training example, chosen on train
SHRINKAGE = 1e-3  # the H-score covariance's weight on its mean variance
SCORES = ("probe", "logme", "hscore", "knn")
PRECISION = (1e-10, 1e10)  # the range LogME's alpha and beta are kept in




# ---------------------------------------------------------------------------------------------
# Features


@functools.lru_cache(maxsize=8)
def _projection(dims: int, out: int, seed: int = 0) -> torch.Tensor:
    """A fixed Gaussian random projection, scaled so that squared lengths are kept on average."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dims, out, generator=g) / out ** 0.5


def flat_features(x: torch.Tensor, max_dims: int = MAX_DIMS, seed: int = 0) -> np.ndarray:
    """Layer outputs as a float64 matrix (examples, at most `max_dims` columns); wider outputs
    go through the random projection of `seed` (the sweep's seed, so seeds are replicates of the
    projection too)."""
    f = x.detach().reshape(len(x), -1).float()
    if f.shape[1] > max_dims:
        f = f @ _projection(f.shape[1], max_dims, seed).to(f.device)
    return f.cpu().double().numpy()


def _standardise(train: np.ndarray, *others: np.ndarray):
    """Every split centred and scaled by the training split's mean and standard deviation
    (constant features keep scale 1, so they stay constant rather than blow up)."""
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mean) / sd for a in (train, *others)]


def _one_hot(y: np.ndarray):
    classes = np.unique(y)
    return (y[:, None] == classes[None, :]).astype(float), classes


# ---------------------------------------------------------------------------------------------
# Scores


def linear_probe(train_f, train_y, val_f, val_y, ridges=RIDGES) -> float:
    """Validation accuracy (%) of one-vs-rest ridge regression on one-hot targets, with an
    intercept: on standardised X, W minimises ||X W - (Y - mean Y)||^2 + ridge * n * ||W||^2 and
    a class is the argmax of X W + mean Y, so features that say nothing predict the majority class.
    The ridge is chosen on the training split alone (`probe_ridge`)."""
    x, v = _standardise(np.asarray(train_f, float), np.asarray(val_f, float))
    targets, classes = _one_hot(np.asarray(train_y))
    mean = targets.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    projected = u.T @ (targets - mean)
    ridge = probe_ridge(s, projected, targets - mean, ridges)
    w = vt.T @ ((s / (s ** 2 + ridge * len(x)))[:, None] * projected)
    predicted = classes[np.argmax(v @ w + mean, axis=1)]
    return float(100.0 * np.mean(predicted == np.asarray(val_y)))


def probe_ridge(s: np.ndarray, projected: np.ndarray, centred: np.ndarray, ridges=RIDGES) -> float:
    """The probe's ridge (per training example) with the least generalised cross-validation error
    (Golub, Heath and Wahba 1979: the leave-one-out squared error of the fit, in closed form) on
    the training split, from the singular values `s` of the standardised features X = U S V', the
    centred targets and their coordinates U' Y; among equal errors, the heavier ridge."""
    n = len(centred)
    outside = float((centred ** 2).sum() - (projected ** 2).sum())  # what no feature can fit
    best = None
    for ridge in sorted(ridges, reverse=True):
        shrink = s ** 2 / (s ** 2 + ridge * n)
        residual = outside + float((((1 - shrink)[:, None] * projected) ** 2).sum())
        error = n * residual / max(n - 1 - shrink.sum(), 1e-9) ** 2  # the intercept is one more parameter
        if best is None or error < best[0] - 1e-12 * abs(best[0]):
            best = (error, ridge)
    return best[1]


def logme_class(sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int, iterations: int = 100,
                tol: float = 1e-7):
    """LogME's maximised evidence for one target vector t, from the squared singular values
    `sigma` of the features F (n x d), the squared coordinates `z2` of t in F's left singular
    basis, and `rest` = the squared length of t outside F's column span. Returns
    (evidence / n, alpha, beta). The fixed point: gamma = sum(beta s / (alpha + beta s)),
    alpha = gamma / m'm, beta = (n - gamma) / ||F m - t||^2, m = beta A^-1 F' t,
    A = alpha I + beta F'F."""
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        shrink = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / shrink))
        mm = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))
        residual = float(np.sum((alpha / shrink) ** 2 * z2)) + rest
        # Bounded: when the features fit t exactly (as many features as examples), the evidence
        # grows as the noise vanishes (beta -> inf) towards a finite limit, which the bound approaches.
        new_alpha = min(max(gamma / max(mm, 1e-300), PRECISION[0]), PRECISION[1])
        new_beta = min(max((n - gamma) / max(residual, 1e-300), PRECISION[0]), PRECISION[1])
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    shrink = alpha + beta * sigma
    mm = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))
    residual = float(np.sum((alpha / shrink) ** 2 * z2)) + rest
    # log|A|: the d - k directions outside F's row span contribute log(alpha) each.
    logdet = float(np.sum(np.log(shrink))) + (d - len(sigma)) * np.log(alpha)
    evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * residual - alpha * mm - logdet) / 2
    return evidence / n, alpha, beta


def logme(features, labels) -> float:
    """LogME of features for class labels: the mean over classes of `logme_class` on one-hot
    targets."""
    f = np.asarray(features, float)
    n, d = f.shape
    # LogME does not change when every feature is scaled by one factor, but its alpha and beta are
    # kept in PRECISION: features scaled to unit mean square first keep them there, so the value
    # stays the same at any common scale (features x 1e4 changed it before).
    f = f / max(np.sqrt(np.mean(f ** 2)), 1e-300)
    targets, _ = _one_hot(np.asarray(labels))
    # F's spectrum from the eigenvectors of the smaller Gram matrix, as cheap as an SVD gets:
    # with F = U S V', F'F = V S^2 V' and U' t = S^-1 V' F' t; FF' = U S^2 U'.
    sigma, vectors = np.linalg.eigh(f.T @ f if n > d else f @ f.T)
    keep = sigma > 1e-10 * max(sigma.max(), 1e-300)  # directions F does not span count as d - k below
    sigma, vectors = sigma[keep], vectors[:, keep]
    z = (vectors.T @ (f.T @ targets)) / np.sqrt(sigma)[:, None] if n > d else vectors.T @ targets  # (k, classes)
    rest = np.maximum((targets ** 2).sum(axis=0) - (z ** 2).sum(axis=0), 0.0)
    return float(np.mean([logme_class(sigma, z[:, c] ** 2, rest[c], n, d)[0] for c in range(targets.shape[1])]))


def hscore(features, labels, shrinkage: float = SHRINKAGE) -> float:
    """H-score: tr(cov(f)^-1 cov(E[f | y])), both covariances over the examples (classes weighted
    by their frequency). Unshrunk, it does not change when any feature is scaled; cov(f) is shrunk
    by `shrinkage` towards (mean variance) x I so that it inverts when examples are fewer than
    features, and the features are standardised first so that the shrinkage treats every feature
    alike and the score stays unchanged by each feature's scale. Inverted by pseudo-inverse."""
    f = np.asarray(features, float)
    f = f - f.mean(axis=0)
    sd = f.std(axis=0)
    f = f / np.where(sd > 1e-12, sd, 1.0)
    n, d = f.shape
    cov = f.T @ f / n
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    targets, _ = _one_hot(np.asarray(labels))
    counts = targets.sum(axis=0)
    means = targets.T @ f / counts[:, None]  # (classes, d): E[f | y]
    between = (means * (counts / n)[:, None]).T @ means
    return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ between))


def knn_accuracy(train_f, train_y, val_f, val_y, k: int = KNN_K) -> float:
    """Validation accuracy (%) of a k-nearest-neighbour majority vote on standardised features;
    among classes with equal votes, the one with the nearest neighbour wins (so relabelling the
    classes changes nothing)."""
    x, v = _standardise(np.asarray(train_f, float), np.asarray(val_f, float))
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    k = min(k, len(x))
    distance = (v ** 2).sum(1)[:, None] + (x ** 2).sum(1)[None, :] - 2 * v @ x.T
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distance, nearest, 1), axis=1, kind="stable")
    neighbours = train_y[np.take_along_axis(nearest, order, 1)]  # (val, k), nearest first
    votes = (neighbours[:, :, None] == neighbours[:, None, :]).sum(axis=2)  # each neighbour's class's votes
    # Rank by votes, then by nearness: the first neighbour with the most votes names the class.
    best = np.argmax(votes * (k + 1) - np.arange(k)[None, :], axis=1)
    predicted = neighbours[np.arange(len(v)), best]
    return float(100.0 * np.mean(predicted == val_y))


def all_scores(train_f, train_y, val_f, val_y) -> Dict[str, float]:
    """Every score of one feature matrix: LogME and H-score on the training split, the
    classifiers fitted on training and scored on validation."""
    return {"probe": linear_probe(train_f, train_y, val_f, val_y), "logme": logme(train_f, train_y),
            "hscore": hscore(train_f, train_y), "knn": knn_accuracy(train_f, train_y, val_f, val_y)}
