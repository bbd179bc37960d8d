"""The cheap estimates: each score against values derived by hand or from its definition, their
invariances, and `layerwise estimate` end to end."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from layerwise import agreement, estimate, scores
from layerwise.report import Run, estimates_section


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
    assert scores.linear_probe(train, y, np.array([[-3.0], [0.5]]), np.array([0, 1])) == 100.0
    assert scores.linear_probe(train, y, np.array([[-3.0], [0.5]]), np.array([0, 0])) == 50.0


def test_knn_votes_and_breaks_ties_by_the_nearest_neighbour():
    train = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    y = np.array([0, 0, 0, 1, 1])
    val = np.array([[1.5], [10.5], [6.2]])
    # k = 3: [1.5] -> three 0s; [10.5] -> 1, 1, 0 -> 1; k = 2 at 6.2: one vote each, 10 is nearer than 2.
    assert scores.knn_accuracy(train, y, val[:2], np.array([0, 1]), k=3) == 100.0
    assert scores.knn_accuracy(train, y, val[2:], np.array([1]), k=2) == 100.0


def test_hscore_is_between_class_over_total_variance_in_one_dimension():
    y = np.array([0, 0, 1, 1])
    # Class means 0 and 2 about the grand mean 1: between-class variance 1; total variance 1 and 2.
    assert scores.hscore(np.array([[0.0], [0.0], [2.0], [2.0]]), y) == pytest.approx(1.0)
    assert scores.hscore(np.array([[-1.0], [1.0], [1.0], [3.0]]), y) == pytest.approx(0.5)


def test_hscore_matches_its_definition_in_several_dimensions():
    f, y = blobs(d=3)
    centred = f - f.mean(0)
    between = sum(np.mean(y == c) * np.outer(centred[y == c].mean(0), centred[y == c].mean(0)) for c in range(3))
    expected = np.trace(np.linalg.inv(np.cov(f.T, bias=True)) @ between)
    assert scores.hscore(f, y, shrinkage=0.0) == pytest.approx(expected, rel=1e-9)


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
    found, alpha, beta = scores.logme_class(s ** 2, z ** 2, t @ t - z @ z, n, d)
    # At the fixed point, the evidence formula and the Gaussian marginal likelihood agree with it.
    assert direct_evidence(f, t, alpha, beta) == pytest.approx(found, abs=1e-9)
    cov = f @ f.T / alpha + np.eye(n) / beta
    assert multivariate_normal(np.zeros(n), cov).logpdf(t) / n == pytest.approx(found, abs=1e-9)
    # No (alpha, beta) on a fine grid around it gives more evidence, and the best of the grid is close.
    grid = [direct_evidence(f, t, alpha * a, beta * b) for a in np.geomspace(0.1, 10, 41) for b in np.geomspace(0.1, 10, 41)]
    assert max(grid) <= found + 1e-9
    assert max(grid) == pytest.approx(found, abs=1e-3)


@pytest.mark.parametrize("n, d", [(30, 4), (6, 10)])
def test_logme_averages_the_classes_evidence(n, d):
    f, y = blobs(n=n, d=d)
    per_class = []
    for c in range(3):
        t = (y == c).astype(float)
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        z = u.T @ t
        per_class.append(scores.logme_class(s ** 2, z ** 2, t @ t - z @ z, n, d)[0])
    assert scores.logme(f, y) == pytest.approx(np.mean(per_class))


def test_logme_prefers_features_that_separate_the_classes():
    f, y = blobs(spread=0.3)
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert scores.logme(f, y) > scores.logme(noise, y)


# ---------------------------------------------------------------------------------------------
# Invariances


def test_logme_is_invariant_to_scaling_every_feature_by_one_factor_but_not_each_by_its_own():
    """Scaling F by c is absorbed by alpha (the prior precision), so the maximised evidence is the
    same; the paper's claim does not extend to per-feature scales, and neither does the maths."""
    f, y = blobs()
    for factor in (7.5, 1e4, 1e-4):  # far scales too: the alpha and beta clamp must not show
        assert scores.logme(factor * f, y) == pytest.approx(scores.logme(f, y), rel=1e-6)
    scales = np.array([0.01, 1.0, 30.0, 1.0, 1.0])
    assert scores.logme(f * scales, y) != pytest.approx(scores.logme(f, y), rel=1e-3)


def test_probe_knn_and_hscore_are_invariant_to_feature_scaling():
    f, y = blobs()
    v, vy = blobs(seed=1)
    scales = np.array([0.01, 1.0, 30.0, 2.0, 5.0])
    assert scores.linear_probe(f * scales, y, v * scales, vy) == scores.linear_probe(f, y, v, vy)
    assert scores.knn_accuracy(f * scales, y, v * scales, vy) == scores.knn_accuracy(f, y, v, vy)
    assert scores.hscore(f * scales, y, shrinkage=0.0) == pytest.approx(scores.hscore(f, y, shrinkage=0.0))
    assert scores.hscore(f * scales, y) == pytest.approx(scores.hscore(f, y))  # with its shrinkage too


def test_each_sweep_seed_gets_its_own_random_projection():
    import torch

    x = torch.randn(10, 600)
    assert not np.allclose(scores.flat_features(x, seed=0), scores.flat_features(x, seed=1))
    assert np.array_equal(scores.flat_features(x, seed=1), scores.flat_features(x, seed=1))


@pytest.mark.parametrize("score", scores.SCORES)
def test_every_score_is_invariant_to_relabelling_the_classes(score):
    f, y = blobs(spread=2.5)  # overlapping classes, so that mistakes and knn ties occur
    v, vy = blobs(seed=1, spread=2.5)
    relabel = np.array([2, 0, 1])
    before = scores.all_scores(f, y, v, vy)[score]
    after = scores.all_scores(f, relabel[y], v, relabel[vy])[score]
    assert after == pytest.approx(before, rel=1e-9)
    assert 0 < scores.all_scores(f, y, v, vy)["knn"] < 100  # the case above is not trivial


def test_wide_features_are_projected_to_at_most_max_dims_with_distances_roughly_kept():
    import torch

    x = torch.randn(50, 32, 8, 8)  # 2048 values each
    f = scores.flat_features(x, max_dims=512)
    assert f.shape == (50, 512)
    flat = x.reshape(50, -1).double().numpy()
    ratio = np.linalg.norm(f[0] - f[1]) / np.linalg.norm(flat[0] - flat[1])
    assert 0.85 < ratio < 1.15
    assert np.array_equal(scores.flat_features(x, max_dims=512), f)  # one projection for every split


# ---------------------------------------------------------------------------------------------
# Agreement with the real curves


def synthetic(real_by_pair, estimate_by_pair, seeds=(0, 1)):
    """Tables shaped as real_curves() and estimate_sweep() give them, for one architecture."""
    import pandas as pd

    real = pd.DataFrame([{"arch": "a", "source": s, "target": t, "seed": seed, "frozen": k, "fraction": k / 3, "rel": v}
                         for (s, t), curve in real_by_pair.items() for seed in seeds for k, v in enumerate(curve)])
    est = pd.DataFrame([{"arch": "a", "source": s, "target": t, "seed": seed, "frozen": k, "fraction": k / 3,
                         "score": "probe", "value": v + 0.01 * seed}
                        for (s, t), curve in estimate_by_pair.items() for seed in seeds for k, v in enumerate(curve)])
    return est, real


def test_agreement_is_one_for_an_estimate_that_ranks_like_the_real_curve_and_minus_one_reversed():
    real = {("x", "y"): [0.0, -0.1, -0.3, -0.6], ("y", "x"): [0.1, 0.0, -0.2, -0.2], ("x", "z"): [0.2, 0.1, 0.1, 0.0]}
    same = {k: [10 * v + 3 for v in c] for k, c in real.items()}  # another scale, the same order
    _, by_arch = agreement.curve_agreement(*synthetic(real, same))
    assert by_arch.set_index("arch").loc["a", "tau"] == pytest.approx(1.0)
    assert by_arch.set_index("arch").loc["a", "rho"] == pytest.approx(1.0)
    _, by_arch = agreement.curve_agreement(*synthetic(real, {k: [-v for v in c] for k, c in same.items()}))
    assert by_arch.set_index("arch").loc["all", "tau"] == pytest.approx(-1.0)
    # Over pairs: x->z > y->x > x->y in real transferability; an estimate whose gains rank them so agrees.
    gains = {("x", "y"): [0, -3, -6, -9], ("y", "x"): [5, 4, 3, 2], ("x", "z"): [1, 2, 3, 4]}
    pairs = agreement.pair_agreement(*synthetic(real, gains)).set_index("arch")
    assert pairs.loc["a", "tau"] == pytest.approx(1.0) and pairs.loc["a", "seeds"] == 2


def test_reachable_curves_take_the_best_layer_at_or_above_each_l_c():
    est, _ = synthetic({}, {("x", "y"): [1.0, 3.0, 2.0, 0.5]}, seeds=(0,))
    out = agreement.reachable(est)
    assert list(out.sort_values("frozen")["value"]) == [3.0, 3.0, 2.0, 0.5]
    assert set(out["score"]) == {"probe (reachable)"}


# ---------------------------------------------------------------------------------------------
# The command line


def test_estimate_trains_only_primaries_then_a_run_reuses_them_and_checks_the_estimates(tmp_path, tiny_raw):
    import csv
    import json

    from test_cli import layerwise, write_config

    config = write_config(tmp_path, tiny_raw)
    out = tmp_path / "run"
    done = layerwise("estimate", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "plans no transfer" not in done.stderr  # it does plan them; estimate only trains the primaries
    assert len(list((out / "jobs").glob("*.json"))) == 2  # the two primaries, no transfer
    assert len(json.loads((out / "plan.json").read_text())) == 8  # the report still counts the whole sweep
    rows = list(csv.DictReader(open(out / "estimates.csv")))
    assert list(rows[0]) == ["arch", "source", "target", "seed", "frozen", "fraction", "score", "value"]
    assert {(r["source"], r["target"], r["frozen"], r["score"]) for r in rows} == {
        (a, b, k, s) for a, b in [("digits", "printed-digits"), ("printed-digits", "digits")] for k in "026"
        for s in scores.SCORES}
    assert len(rows) == 24 and {r["fraction"] for r in rows} == {"0", "0.333333", "1"}
    html = (out / "report.html").read_text()
    assert "Estimates without fine-tuning" in html and "estimates.png" in html and (out / "estimates.png").exists()
    assert "cannot be checked against it" in html

    run = layerwise("run", str(config), "--out", str(out), "--set", "train.epochs=1", "--set", "estimate=true", "--quiet")
    assert run.returncode == 0, run.stderr
    assert "2 already finished" in run.stderr and "estimates:" in run.stderr
    agreed = list(csv.DictReader(open(out / "estimate_agreement.csv")))
    assert {r["score"] for r in agreed} >= set(scores.SCORES) | {"-l_c (no estimate)"}
    assert "tau over l_c" in (out / "report.html").read_text()
    assert "What to freeze, estimated" in (out / "report.html").read_text()
    freeze = list(csv.DictReader(open(out / "estimate_freeze.csv")))
    assert len(freeze) == 2 * len(agreement.ADVICE_SCORES) and all(r["freeze l_c (sweep, validation)"] for r in freeze)

    again = layerwise("estimate", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet")
    assert again.returncode == 0 and "0 primaries to train" in again.stderr, again.stderr  # the same experiment
    assert len(json.loads((out / "plan.json").read_text())) == 8


def test_estimates_from_worker_processes_are_those_of_one_process(tmp_path, tiny_raw):
    import pandas as pd

    from layerwise.config import config_from_dict
    from layerwise.sweep import Sweep

    cfg = config_from_dict({**tiny_raw, "threads": 1}, "tiny.toml")
    estimate.train_primaries(Sweep(cfg, tmp_path / "run", progress=False))
    here = estimate.estimate_sweep(Sweep(cfg, tmp_path / "run", progress=False), progress=False)
    cfg.workers = 2
    there = estimate.estimate_sweep(Sweep(cfg, tmp_path / "run", progress=False), progress=False)
    assert len(here) == 2 * 3 * len(scores.SCORES)  # 2 pairs x 3 l_c
    pd.testing.assert_frame_equal(there, here, rtol=1e-9)


def test_estimate_must_be_true_or_false(capsys, tmp_path, tiny_raw):
    from test_cli import write_config

    from layerwise.cli import main

    config = write_config(tmp_path, tiny_raw)
    assert main(["estimate", str(config), "--out", str(tmp_path / "run"), "--set", "estimate=3"]) == 2
    err = capsys.readouterr().err
    assert "tiny.toml" in err and "estimate must be true or false; got 3" in err
    assert not (tmp_path / "run").exists()


def test_estimated_freeze_advice_is_the_deepest_lc_within_a_point_of_the_best_reachable_score():
    import pandas as pd

    rows = []
    for seed, wobble in ((0, 0.2), (1, -0.2)):
        for frozen, probe, knn in ((0, 80.0, 70.0), (1, 82.0, 69.5), (2, 81.5, 65.0), (3, 79.0, 60.0)):
            for score, value in (("probe", probe + wobble), ("knn", knn), ("logme", -frozen)):
                rows.append({"arch": "x", "source": "a", "target": "b", "seed": seed, "frozen": frozen,
                             "fraction": frozen / 3, "score": score, "value": value})
    advice = agreement.freeze_advice(pd.DataFrame(rows)).set_index("score")["frozen"].to_dict()
    # probe reachable: 82, 82, 81.5, 79 -> within 1 point of 82 up to l_c = 2; knn: 70, 69.5, 65, 60 -> 1
    assert advice == {"probe (reachable)": 2, "knn (reachable)": 1}  # LogME has no unit for a tolerance: it does not advise


def test_a_damaged_estimates_file_is_named_and_the_report_still_builds(tmp_path, capsys):
    (tmp_path / "estimates.csv").write_bytes(b"\x00\x01garbage,\n\"unterminated")
    assert estimates_section(Run(tmp_path, {}, [], 0)) == []
    err = capsys.readouterr().err
    assert "estimates.csv cannot be read" in err and "layerwise estimate" in err


def test_estimate_on_a_finished_run_keeps_every_row_of_its_results(tmp_path, tiny_raw):
    from test_cli import layerwise, write_config

    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    assert layerwise("run", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet").returncode == 0
    before = (out / "results.csv").read_text()
    assert len(before.splitlines()) > 1 + 2 * 2 * 2  # more than the primaries' rows
    done = layerwise("estimate", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (out / "results.csv").read_text() == before


def test_estimate_sets_a_damaged_primary_aside_trains_it_again_and_finishes(tmp_path, tiny_raw):
    import csv
    import json

    from test_cli import layerwise, write_config

    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    assert layerwise("estimate", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet").returncode == 0
    primary = next(r for r in (json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")) if r["target"] == "digits")
    checkpoint = out / "checkpoints" / f"{primary['key']}.safetensors"
    checkpoint.write_bytes(b"not a safetensors file")
    again = layerwise("estimate", str(config), "--out", str(out), "--set", "train.epochs=1", "--quiet")
    assert again.returncode == 0, again.stderr
    assert str(checkpoint) in again.stderr and "Traceback" not in again.stderr
    assert (out / "damaged" / checkpoint.name).read_bytes() == b"not a safetensors file"
    assert checkpoint.exists() and (out / "jobs" / f"{primary['key']}.json").exists()  # trained again
    rows = list(csv.DictReader(open(out / "estimates.csv")))
    assert len(rows) == 24 and {r["source"] for r in rows} == {"digits", "printed-digits"}


def test_the_probe_predicts_the_majority_class_from_features_that_say_nothing():
    rng = np.random.default_rng(0)
    y, val_y = (rng.random(600) < 0.1).astype(int), (rng.random(400) < 0.1).astype(int)
    f, v = rng.normal(size=(600, 20)), rng.normal(size=(400, 20))
    assert scores.linear_probe(f, y, v, val_y) == pytest.approx(100 * np.mean(val_y == 0))  # 90%, not 51%
    f[:, 0] += 3 * y  # one informative feature: the probe now beats the majority
    v[:, 0] += 3 * val_y
    assert scores.linear_probe(f, y, v, val_y) > 100 * np.mean(val_y == 0) + 2


def test_the_probe_chooses_a_heavy_ridge_for_noise_and_a_light_one_for_signal():
    def chosen(f, y):
        x = (f - f.mean(0)) / f.std(0)
        targets = np.eye(3)[y] - np.eye(3)[y].mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        return scores.probe_ridge(s, u.T @ targets, targets)

    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    assert chosen(rng.normal(size=(90, 30)), y) == max(scores.RIDGES)
    assert chosen(blobs(seed=1, n=90, d=5, spread=0.3)[0], y) < 1.0


def test_each_seed_is_paired_with_its_own_real_curve_and_intervals_stay_within_one():
    real = {("x", "y"): [0.0, -0.1, -0.3, -0.6], ("y", "x"): [0.1, 0.0, -0.2, -0.2], ("x", "z"): [0.2, 0.1, 0.1, 0.0]}
    est, truth = synthetic(real, real, seeds=(0, 1, 2))
    # seed 1's real curves are reversed: its estimates (the unreversed ones) disagree with them only
    flip = truth["seed"] == 1
    truth.loc[flip, "rel"] = -truth.loc[flip, "rel"]
    per_curve, by_arch = agreement.curve_agreement(est, truth)
    row = by_arch.set_index("arch").loc["a"]
    assert row["tau"] < 0.9 and row["seeds"] == 3  # against the seed-averaged curve it would be 1 for every seed
    assert -1 <= row["tau_low"] <= row["tau"] <= row["tau_high"] <= 1
    truth["rel"] = 0.0  # constant real curves cannot be ranked: counted, not averaged
    _, by_arch = agreement.curve_agreement(est, truth)
    assert by_arch.set_index("arch").loc["a", "unranked"] == 3 * 3


def test_fisher_intervals_are_bounded_and_centred_on_z():
    mean, low, high = agreement.fisher_interval([0.95, 0.99, 0.7])
    assert -1 < low < mean < high < 1
    assert agreement.fisher_interval([]) == (None, None, None)


def test_prefix_outputs_over_the_cache_limit_are_streamed_in_chunks_to_the_same_estimates(tmp_path, tiny_raw, monkeypatch):
    """`layerwise estimate` at cache_limit_gb = 0 (no split's outputs fit) streams the outputs a
    chunk of eval_batch_size examples at a time, instead of refusing, and gets the same estimates,
    to the last bit."""
    from layerwise.cli import main
    from layerwise.config import config_from_dict
    from layerwise.prefix import PrefixCache
    from layerwise.runner import Runner
    from layerwise.sweep import Sweep
    from test_cli import write_config

    tiny_raw["train"].update(epochs=1, eval_batch_size=128)  # several chunks of the 2000 + 1000 examples
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    assert main(["estimate", str(config), "--out", str(out), "--quiet"]) == 0
    whole = (out / "estimates.csv").read_text()
    streamed, real = [], PrefixCache.stream
    monkeypatch.setattr(PrefixCache, "stream", lambda self, *a: streamed.append(1) or real(self, *a))
    assert main(["estimate", str(config), "--out", str(out), "--quiet", "--set", "train.cache_limit_gb=0"]) == 0
    assert streamed and (out / "estimates.csv").read_text() == whole

    # The numbers themselves, not only their six digits in the file.
    cfg = config_from_dict(tiny_raw, "tiny.toml")
    unit = next(u for u in estimate.units(Sweep(cfg, out, progress=False).jobs)
                if u[0].kind == "transfer" and u[0].target == "digits")
    runner = Runner(cfg, out)
    primary, _ = runner.primary(unit[0])
    data, levels = runner.data(unit[0].target, 0), [job.frozen for job in unit]
    assert len(data.train) > 2 * 128
    chunked = estimate.curve_scores(primary, data, levels, 0, dataclasses_replace(cfg.train, cache_limit_gb=0))
    assert chunked == estimate.curve_scores(primary, data, levels, 0, cfg.train) and len(chunked) == 3


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


# ---------------------------------------------------------------------------------------------
# References: always freeze k, and the truncated sweep


def test_always_freeze_k_counts_the_curves_where_k_is_the_sweeps_choice():
    chosen = {("a", "x", "y"): 2, ("a", "y", "x"): 2, ("a", "x", "z"): 0, ("a", "z", "x"): -1, ("a", "y", "z"): None}
    counts = agreement.always_freeze(chosen, 3)
    # four choices (None: the sweep did not run): k = 2 matches two; distances for k = 2: 0, 0, 2, 3
    assert [(k, hits) for k, hits, _ in counts] == [(0, 1), (1, 0), (2, 2), (3, 0)]
    assert counts[2][2] == pytest.approx(5 / 4)


def test_a_gain_curve_is_compared_over_pairs_by_its_own_height_unless_rebased():
    real = {("x", "y"): [0.0, -0.1, -0.3, -0.6], ("y", "x"): [0.1, 0.0, -0.2, -0.2], ("x", "z"): [0.2, 0.1, 0.1, 0.0]}
    # heights rank x->z > y->x > x->y as the real ones do; rebased on l_c = 0 they rank the other way
    gains = {("x", "y"): [-0.1, -0.1, -0.1, -0.1], ("y", "x"): [0.0, 0.0, 0.0, -0.05], ("x", "z"): [0.5, 0.0, 0.0, 0.0]}
    est, real_table = synthetic(real, gains)
    assert agreement.pair_agreement(est, real_table, rebase=False).set_index("arch").loc["a", "tau"] == pytest.approx(1.0)
    assert agreement.pair_agreement(est, real_table).set_index("arch").loc["a", "tau"] < 0


def test_truncated_sweep_trains_its_transfers_from_the_runs_primaries_and_is_judged_like_an_estimate(tmp_path, tiny_raw):
    import csv
    import json

    import pandas as pd
    from scipy.stats import kendalltau
    from test_cli import layerwise, write_config

    from layerwise import analysis
    from layerwise.store import Store

    tiny_raw["seeds"] = [0, 1]
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    assert layerwise("run", str(config), "--out", str(out), "--quiet").returncode == 0  # 2 epochs each
    done = layerwise("estimate", str(config), "--out", str(out), "--truncated", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    short = Store(out / "truncated-1")
    full, trunc = Store(out).records(Store(out).read_plan()), short.records(short.read_plan())
    primaries = {r["key"]: r for r in full if r["kind"] == "scratch"}
    assert len(primaries) == 4 and len(trunc) == 4 + 12
    for r in trunc:  # the same primaries, not trained again; every transfer trained for one epoch
        if r["kind"] == "scratch":
            assert r == primaries[r["key"]]
            assert (short.checkpoint_path(r["key"])).exists()
        else:
            assert len(r["history"]) == 1
    assert all(len(r["history"]) == 2 for r in full if r["kind"] == "transfer")

    costs = json.loads((out / "estimate_costs.json").read_text())
    for what in ("estimates", "truncated sweep (1 epoch)"):
        assert costs[what]["wall_seconds"] > 0 and {"cpu", "load_average", "machine_cores", "cores"} <= set(costs[what])
    assert costs["truncated sweep (1 epoch)"]["transfers"] == 12

    # tau over l_c by hand: per seed, Kendall's tau of each pair's truncated curve against its real one
    # (validation normalised gain), averaged over pairs; then the mean over the two seeds
    def curves(records):
        t = analysis.per_seed(records)
        return t[t["split"] == "val"].set_index(["source", "target", "seed", "frozen"])["rel"]

    real, cheap = curves(full), curves(trunc)
    per_seed = pd.Series({(s, t, seed): kendalltau(cheap.loc[(s, t, seed)].sort_index(), real.loc[(s, t, seed)].sort_index()).statistic
                          for s, t, seed, _ in real.index}).groupby(level=2).mean()
    rows = {r["score"]: r for r in csv.DictReader(open(out / "estimate_agreement.csv")) if r["arch"] == "all"}
    assert float(rows["truncated sweep (1 epoch)"]["tau over l_c"].split()[0]) == pytest.approx(per_seed.mean(), abs=0.006)
    html = (out / "report.html").read_text()
    assert "truncated sweep (1 epoch)" in html and "always freeze k" in html and "after seeing the sweep" in html
    assert "estimate_costs.json" in html and "load average" in html
    freeze = {r["score"] for r in csv.DictReader(open(out / "estimate_freeze.csv"))}
    assert "truncated sweep (1 epoch)" in freeze
