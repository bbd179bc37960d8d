"""The statistical tools: intervals, paired tests, Holm, and the factor analysis's size and power."""

import numpy as np
import pytest
from scipy import stats as sps

from layerwise import stats


def test_mean_interval_uses_the_sample_sd_and_t_with_n_minus_1_degrees_of_freedom():
    i = stats.mean_interval([1.0, 2.0, 6.0])
    assert i.sd == pytest.approx(np.std([1, 2, 6], ddof=1))
    half = sps.t.ppf(0.975, 2) * i.sd / np.sqrt(3)
    assert (i.low, i.high) == pytest.approx((3 - half, 3 + half))
    one = stats.mean_interval([4.0])
    assert one.mean == 4.0 and one.sd is None and one.low is None


def test_paired_t_matches_scipy_and_one_seed_asserts_nothing():
    d = [0.3, 1.1, 0.8, -0.2]
    r = stats.paired_test(d)
    want = sps.ttest_1samp(d, 0.0)
    assert r.p == pytest.approx(want.pvalue) and r.statistic == pytest.approx(want.statistic) and r.df == 3
    assert stats.paired_test([2.0]).p is None
    assert stats.paired_test([2.0, 2.0, 2.0]).p is None  # no variation: not "infinitely significant"


def test_sign_flip_p_is_exact():
    # 3 positive differences: only the all-plus and all-minus patterns are as extreme -> 2/8.
    assert stats.paired_test([1.0, 2.0, 3.0], "sign-flip").p == pytest.approx(0.25)
    # one flipped sign of the smallest: patterns at least as extreme are +-(1,2,3), +-(-1,2,3) -> 4/8
    assert stats.paired_test([-1.0, 2.0, 3.0], "sign-flip").p == pytest.approx(0.5)


def test_holm_steps_down_and_skips_missing_values():
    adjusted = stats.holm([0.01, 0.04, 0.03, None])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[3] is None
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def null_cells(rng, pairs=6, archs=2, seeds=3):
    """Scores with the correlation of a real sweep and no effect: transfers of one seed into the same
    task share that task's baseline, transfers out of one task share its primary."""
    tasks = 3
    order = [(a, b) for a in range(tasks) for b in range(tasks) if a != b][:pairs]
    base = rng.normal(size=(tasks, archs, seeds))
    primary = rng.normal(size=(tasks, archs, seeds))
    return np.stack([-base[b] + 0.5 * primary[a] + 0.4 * rng.normal(size=(archs, seeds)) for a, b in order])


@pytest.mark.parametrize("seeds", [3, 5])
def test_factor_verdict_keeps_its_size_when_nothing_has_an_effect(seeds):
    rng = np.random.default_rng(seeds)
    reps = 1500
    named = sum(stats.factors(null_cells(rng, seeds=seeds))["verdict"] != "inconclusive"
                for r in range(reps))
    assert named / reps <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)


def test_equal_effects_are_not_called_unequal_more_than_alpha():
    rng = np.random.default_rng(7)
    pair = np.array([-2, -1, 0, 0, 1, 2.0])  # variance of effects 2
    arch = np.array([-1, 1.0])  # variance of effects 2
    reps = 800
    named = sum(stats.factors(pair[:, None, None] + arch[None, :, None] + rng.normal(size=(6, 2, 3)))["verdict"]
                != "inconclusive" for r in range(reps))
    assert named / reps <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)


def test_a_planted_task_effect_is_found_and_a_planted_architecture_effect_too():
    rng = np.random.default_rng(3)
    pair = np.array([-4, -2, 0, 0, 2, 4.0])
    tasks = [stats.factors(pair[:, None, None] + rng.normal(size=(6, 2, 5)))["verdict"] for r in range(40)]
    assert tasks.count("tasks") >= 36
    arch = np.array([-3, 3.0])
    archs = [stats.factors(arch[None, :, None] + rng.normal(size=(6, 2, 5)))["verdict"] for r in range(40)]
    assert archs.count("architecture") >= 36


def test_factors_need_two_levels_of_each_and_two_seeds():
    assert stats.factors(np.zeros((1, 2, 3)))["note"].startswith("needs at least two")
    assert "one seed" in stats.factors(np.ones((3, 2, 1)))["note"]


def test_can_pass_says_whether_any_values_of_the_missing_seeds_could_show_the_level_safe():
    """Against a numerical search: the best lower bound over the missing seeds' values (all equal,
    which the closed form assumes, and at random, which must never beat it) and over how many of
    them come, for known gains drawn near the tolerance."""
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(5)
    decided = {True: 0, False: 0}
    for _ in range(300):
        known, missing = rng.normal(-1.0, 1.0, rng.integers(1, 5)), int(rng.integers(0, 4))
        best = -np.inf
        for r in range(missing + 1):
            if len(known) + r < 2:
                continue
            bound = lambda v: float(stats.lower_bounds(np.concatenate([known, np.full(r, v)]))[None][0])  # noqa: E731
            if r == 0:
                best = max(best, bound(0.0))
                continue
            found = minimize_scalar(lambda v: -bound(v), bounds=(-1e3, 1e3), method="bounded", options={"xatol": 1e-9})
            best = max(best, -found.fun)
            for _ in range(20):  # unequal values never do better than the best equal ones
                free = known.mean() + rng.normal(0, 3, r)
                assert float(stats.lower_bounds(np.concatenate([known, free]))) <= best + 1e-9
        if abs(best + 1.0) < 1e-6:
            continue  # on the boundary: the search's last digits decide
        assert stats.can_pass(known, missing, 1.0) == (best > -1.0), (known, missing, best)
        decided[best > -1.0] += 1
    assert min(decided.values()) > 30  # both answers were put to the test
    assert not stats.can_pass([-1.5], 2, 1.0)  # with 3 seeds, the bound is below the smallest gain
    assert stats.can_pass([-0.5], 2, 1.0) and not stats.can_pass([], 1, 1.0) and stats.can_pass([], 2, 1.0)
