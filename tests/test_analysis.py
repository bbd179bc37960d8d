"""Curves, gains, asymmetry and the generated summary, on hand-made records."""

import pytest

from layerwise import analysis


def rec(arch, target, seed, value, source=None, frozen=None, metric="accuracy", lower=False):
    return {"kind": "transfer" if source else "scratch", "arch": arch, "source": source, "target": target,
            "seed": seed, "frozen": frozen, "metric": metric, "lower_is_better": lower,
            "val": {metric: value}, "test": {metric: value}}


def records():
    """Two archs, two tasks, two seeds. a->b loses 10 points on average, b->a 2 (arch x) or 4 (arch y)."""
    out = []
    for arch, b_to_a in (("x", [-1, -3]), ("y", [-3, -5])):
        for seed in (0, 1):
            out += [rec(arch, "a", seed, 90.0), rec(arch, "b", seed, 80.0)]
            out += [rec(arch, "b", seed, 80.0 - 5 - 10 * k, "a", k) for k in (0, 1)]  # gains -5, -15: mean -10
            out += [rec(arch, "a", seed, 90.0 + g, "b", k) for k, g in enumerate(b_to_a)]  # mean -2 or -4
    return out


def test_gains_are_signed_against_the_same_seeds_baseline():
    scores = analysis.transferability(records())
    assert scores["x", "a", "b"] == pytest.approx((-10, 0))
    assert scores["x", "b", "a"] == pytest.approx((-2, 0))
    assert scores["y", "b", "a"] == pytest.approx((-4, 0))
    assert scores["all", "b", "a"] == pytest.approx((-3, 1))


def test_lower_is_better_flips_the_sign():
    rs = [rec("x", "t", 0, 20.0, metric="per", lower=True), rec("x", "t", 0, 15.0, "s", 0, metric="per", lower=True)]
    assert analysis.transferability(rs)["x", "s", "t"][0] == pytest.approx(5.0)


def test_curves_average_over_seeds_with_the_baseline():
    (curve,) = [c for c in analysis.curves(records()) if (c.arch, c.source, c.target) == ("x", "a", "b")]
    assert curve.frozen == [0, 1] and curve.mean == pytest.approx([75, 65]) and curve.std == pytest.approx([0, 0])
    assert curve.baseline_mean == 80 and curve.seeds == 2


def test_asymmetry_compares_both_directions_per_seed():
    rows = {r.arch: r for r in analysis.asymmetry(records())}
    assert rows["x"].difference == pytest.approx(-8) and rows["y"].difference == pytest.approx(-6)
    assert rows["x"].spread == 0 and rows["x"].clear


def test_asymmetry_within_the_seed_noise_is_not_called_nonsymmetric():
    rs = []
    for seed, (ab, ba) in enumerate([(-1.0, -3.0), (-3.0, -1.0), (-2.0, -2.5)]):
        rs += [rec("x", "a", seed, 90.0), rec("x", "b", seed, 90.0), rec("x", "b", seed, 90 + ab, "a", 0),
               rec("x", "a", seed, 90 + ba, "b", 0)]
    (row,) = analysis.asymmetry(rs)
    assert not row.clear
    assert "does not show nonsymmetry" in " ".join(analysis.summary(rs))


def test_tasks_against_architectures():
    across_archs, across_pairs = analysis.tasks_against_architectures(analysis.transferability(records()))
    assert across_archs == pytest.approx(1.0)  # same pair: a->b equal, b->a differs by 2 -> mean range 1
    assert across_pairs == pytest.approx(7.0)  # same arch: ranges 8 (x) and 6 (y)
    text = " ".join(analysis.summary(records()))
    assert "the tasks matter more than the architecture" in text
    assert "b → a is the most related" in text


def test_summary_without_transfers():
    assert "nothing to compare" in analysis.summary([rec("x", "a", 0, 90.0)])[0]


def test_freezable_is_the_deepest_lc_within_tolerance_of_the_baseline():
    curve = analysis.Curve("x", "a", "b", "accuracy", False, [0, 1, 2, 3], [91, 89.5, 88, 89.8], [0] * 4, 90.0, 0, 1)
    assert analysis.freezable(curve) == 1  # l_c = 2 loses 2 points; l_c = 3 recovering does not count
    assert analysis.freezable(curve, tolerance=2.5) == 3
    errors = analysis.Curve("x", "a", "b", "per", True, [0, 1], [21.5, 20.5], [0, 0], 20.0, 0, 1)
    assert analysis.freezable(errors) == -1


def test_similarity_is_averaged_over_seeds_per_lc():
    rs = [dict(rec("x", "b", seed, 80.0, "a", 0), similarity=[1.0, 0.5 + 0.2 * seed]) for seed in (0, 1)]
    assert analysis.similarity(rs) == {("x", "a", "b", 0): pytest.approx([1.0, 0.6])}


def test_summary_reports_which_layers_fine_tuning_rewrote():
    rs = records()
    for r in rs:
        if r["kind"] == "transfer":
            r["similarity"] = [1.0, 0.4] if r["source"] == "a" else [0.9, 0.8]
    text = " ".join(analysis.summary(rs))
    assert "the first layer keeps a linear CKA of 0.95" in text and "the last layer 0.60" in text
    assert "x a → b rewrites its primary the most (mean CKA 0.70" in text
