"""The cheap estimates: each score against values derived by hand or from its definition, their
invariances, and `layerwise estimate` end to end."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from layerwise import estimate


def blobs(seed=0, n=60, d=5, classes=3, spread=1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(0, 2, (classes, d))
    return centres[y] + rng.normal(0, spread, (n, d)), y


# ---------------------------------------------------------------------------------------------
# Hand-derived values


def test_probe_separates_a_threshold_and_counts_validation_hits():
    train = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    # The threshold sits at 0: -3 and 0.5 are classified 0 and 1; labels [0, 0] make one hit in two.
    assert estimate.linear_probe(train, y, np.array([[-3.0], [0.5]]), np.array([0, 1])) == 100.0
    assert estimate.linear_probe(train, y, np.array([[-3.0], [0.5]]), np.array([0, 0])) == 50.0


def test_knn_votes_and_breaks_ties_by_the_nearest_neighbour():
    train = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    y = np.array([0, 0, 0, 1, 1])
    val = np.array([[1.5], [10.5], [6.2]])
    # k = 3: [1.5] -> three 0s; [10.5] -> 1, 1, 0 -> 1; k = 2 at 6.2: one vote each, 10 is nearer than 2.
    assert estimate.knn_accuracy(train, y, val[:2], np.array([0, 1]), k=3) == 100.0
    assert estimate.knn_accuracy(train, y, val[2:], np.array([1]), k=2) == 100.0


def test_hscore_is_between_class_over_total_variance_in_one_dimension():
    y = np.array([0, 0, 1, 1])
    # Class means 0 and 2 about the grand mean 1: between-class variance 1; total variance 1 and 2.
    assert estimate.hscore(np.array([[0.0], [0.0], [2.0], [2.0]]), y) == pytest.approx(1.0)
    assert estimate.hscore(np.array([[-1.0], [1.0], [1.0], [3.0]]), y) == pytest.approx(0.5)


def test_hscore_matches_its_definition_in_several_dimensions():
    f, y = blobs(d=3)
    centred = f - f.mean(0)
    between = sum(np.mean(y == c) * np.outer(centred[y == c].mean(0), centred[y == c].mean(0)) for c in range(3))
    expected = np.trace(np.linalg.inv(np.cov(f.T, bias=True)) @ between)
    assert estimate.hscore(f, y, shrinkage=0.0) == pytest.approx(expected, rel=1e-9)


def direct_evidence(f, t, alpha, beta):
    """log p(t | F, alpha, beta) / n from the evidence formula, with m solved directly."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    value = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * np.sum((f @ m - t) ** 2)
             - alpha * m @ m - np.linalg.slogdet(a)[1]) / 2
    return value / n


@pytest.mark.parametrize("n, d", [(40, 6), (8, 12)])  # more examples than features, and fewer
def test_logme_evidence_is_the_marginal_likelihood_at_the_best_alpha_beta_of_a_grid(n, d):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(n, d))
    t = (f @ rng.normal(size=d) + rng.normal(0, 0.5, n) > 0).astype(float)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    z = u.T @ t
    found, alpha, beta = estimate.logme_class(s ** 2, z ** 2, t @ t - z @ z, n, d)
    # At the fixed point, the evidence formula and the Gaussian marginal likelihood agree with it.
    assert direct_evidence(f, t, alpha, beta) == pytest.approx(found, abs=1e-9)
    cov = f @ f.T / alpha + np.eye(n) / beta
    assert multivariate_normal(np.zeros(n), cov).logpdf(t) / n == pytest.approx(found, abs=1e-9)
    # No (alpha, beta) on a fine grid around it gives more evidence, and the best of the grid is close.
    grid = [direct_evidence(f, t, alpha * a, beta * b) for a in np.geomspace(0.1, 10, 41) for b in np.geomspace(0.1, 10, 41)]
    assert max(grid) <= found + 1e-9
    assert max(grid) == pytest.approx(found, abs=1e-3)


def test_logme_averages_the_classes_evidence():
    f, y = blobs(n=30, d=4)
    per_class = []
    for c in range(3):
        t = (y == c).astype(float)
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        z = u.T @ t
        per_class.append(estimate.logme_class(s ** 2, z ** 2, t @ t - z @ z, 30, 4)[0])
    assert estimate.logme(f, y) == pytest.approx(np.mean(per_class))


def test_logme_prefers_features_that_separate_the_classes():
    f, y = blobs(spread=0.3)
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert estimate.logme(f, y) > estimate.logme(noise, y)


# ---------------------------------------------------------------------------------------------
# Invariances


def test_logme_is_invariant_to_scaling_every_feature_by_one_factor_but_not_each_by_its_own():
    """Scaling F by c is absorbed by alpha (the prior precision), so the maximised evidence is the
    same; the paper's claim does not extend to per-feature scales, and neither does the maths."""
    f, y = blobs()
    assert estimate.logme(7.5 * f, y) == pytest.approx(estimate.logme(f, y), rel=1e-6)
    scales = np.array([0.01, 1.0, 30.0, 1.0, 1.0])
    assert estimate.logme(f * scales, y) != pytest.approx(estimate.logme(f, y), rel=1e-3)


def test_probe_knn_and_hscore_are_invariant_to_feature_scaling():
    f, y = blobs()
    v, vy = blobs(seed=1)
    scales = np.array([0.01, 1.0, 30.0, 2.0, 5.0])
    assert estimate.linear_probe(f * scales, y, v * scales, vy) == estimate.linear_probe(f, y, v, vy)
    assert estimate.knn_accuracy(f * scales, y, v * scales, vy) == estimate.knn_accuracy(f, y, v, vy)
    assert estimate.hscore(f * scales, y, shrinkage=0.0) == pytest.approx(estimate.hscore(f, y, shrinkage=0.0))


@pytest.mark.parametrize("score", estimate.SCORES)
def test_every_score_is_invariant_to_relabelling_the_classes(score):
    f, y = blobs(spread=2.5)  # overlapping classes, so that mistakes and knn ties occur
    v, vy = blobs(seed=1, spread=2.5)
    relabel = np.array([2, 0, 1])
    before = estimate.all_scores(f, y, v, vy)[score]
    after = estimate.all_scores(f, relabel[y], v, relabel[vy])[score]
    assert after == pytest.approx(before, rel=1e-9)
    assert 0 < estimate.all_scores(f, y, v, vy)["knn"] < 100  # the case above is not trivial


def test_wide_features_are_projected_to_at_most_max_dims_with_distances_roughly_kept():
    import torch

    x = torch.randn(50, 32, 8, 8)  # 2048 values each
    f = estimate.flat_features(x, max_dims=512)
    assert f.shape == (50, 512)
    flat = x.reshape(50, -1).double().numpy()
    ratio = np.linalg.norm(f[0] - f[1]) / np.linalg.norm(flat[0] - flat[1])
    assert 0.85 < ratio < 1.15
    assert np.array_equal(estimate.flat_features(x, max_dims=512), f)  # one projection for every split
