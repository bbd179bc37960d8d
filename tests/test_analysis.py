"""observations() on results tables: units, verdicts, their size under no effect, their power under a
planted one, and no test leakage into what-to-freeze."""

import json

import numpy as np
import pandas as pd
import pytest

from layerwise import analysis, observations

from results_tables import simulate


def row(arch, target, seed, value, source="", frozen="", split="test", metric="accuracy", **extra):
    return {"arch": arch, "source": source, "target": target, "seed": seed, "frozen": frozen, "split": split,
            "metric": metric, "value": value, **extra}


def test_without_chance_the_gain_is_the_relative_change_in_error_and_transferability_its_area_over_depth():
    rows = [row("x", "b", s, 80.0 + d) for s, d in ((0, 1.0), (1, -1.0))]  # baseline error 20 on average
    for s, base in ((0, 81.0), (1, 79.0)):
        rows += [row("x", "b", s, base + g, "a", k, num_layers=2) for k, g in ((0, 4.0), (1, 2.0), (2, 0.0))]
        rows += [row("x", "a", s, 90.0)]
    obs = observations(pd.DataFrame(rows))
    assert any("no chance level for a, b" in n for n in obs.notes)
    (t,) = [t for t in obs.transferability if (t["source"], t["target"]) == ("a", "b")]
    assert t["mean"] == pytest.approx((4 / 20 * 0.5 + 2 / 20 + 0.0 * 0.5) / 2)  # trapezoids over l_c / L_H in [0, 1]
    assert t["points"]["mean"] == pytest.approx(2.0)
    point = next(p for p in obs.curves if p["frozen"] == 1)
    assert point["fraction"] == 0.5 and point["gain"]["mean"] == pytest.approx(2.0) and point["seeds"] == 2


def test_with_a_chance_level_the_gain_is_a_share_of_what_the_baseline_learned_above_chance():
    rows = [row("x", "b", s, 80.0, chance=10.0) for s in (0, 1)] + [row("x", "a", s, 90.0, chance=10.0) for s in (0, 1)]
    rows += [row("x", "b", s, 73.0 + s, "a", 0, num_layers=1, chance=10.0) for s in (0, 1)]
    obs = observations(pd.DataFrame(rows))
    (point,) = obs.curves
    assert point["gain"]["mean"] == pytest.approx(-6.5)  # points
    assert point["relative_gain"]["mean"] == pytest.approx(-6.5 / (90 - 20))  # chance error 90, baseline error 20
    assert not any("chance" in n for n in obs.notes)
    per = [row("x", "t", 0, 20.0, metric="per", chance=100.0), row("x", "t", 0, 30.0, "s", 0, metric="per", chance=100.0),
           row("x", "s", 0, 50.0, metric="per", chance=100.0)]
    assert observations(pd.DataFrame(per)).curves[0]["relative_gain"]["mean"] == pytest.approx(-10 / 80)


def test_lower_is_better_metrics_flip_the_sign_and_deeper_architectures_do_not_weigh_more():
    rows = [row("deep", "t", 0, 20.0, metric="per"), row("flat", "t", 0, 20.0, metric="per")]
    rows += [row("deep", "t", 0, 15.0, "s", k, metric="per", num_layers=8) for k in range(9)]
    rows += [row("flat", "t", 0, 15.0, "s", k, metric="per", num_layers=2) for k in range(3)]
    scores = {t["arch"]: t["mean"] for t in observations(pd.DataFrame(rows)).transferability}
    assert scores["deep"] == pytest.approx(0.25) and scores["flat"] == pytest.approx(0.25)
    assert scores["all"] == pytest.approx(0.25)


def test_no_effect_keeps_every_verdict_at_its_nominal_rate():
    """Many simulated sweeps with only seed noise: each verdict's false-positive rate stays at 5%."""
    rng = np.random.default_rng(11)
    reps = 150
    family = factor = curves_lost = curves = 0
    for r in range(reps):
        obs = observations(simulate(rng), resamples=100, seed=r)
        family += obs["nonsymmetric"]
        factor += obs["factors"]["verdict"] != "inconclusive"
        curves_lost += sum(d["depth"] < d["num_layers"] for d in obs["transfer_depth"])
        curves += len(obs["transfer_depth"])
    bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / reps)  # nominal level plus Monte Carlo error
    assert family / reps <= bound  # "nonsymmetric" anywhere in the asymmetry table (Holm across its rows)
    assert factor / reps <= bound
    assert curves_lost / curves <= bound


def test_a_planted_asymmetry_is_found_and_named():
    rng = np.random.default_rng(1)
    obs = observations(simulate(rng, pair_effect={("a", "b"): 30.0}, seeds=5))
    found = [r for r in obs.asymmetry if r["nonsymmetric"]]
    assert found and all({r["a"], r["b"]} == {"a", "b"} for r in found)
    assert obs.nonsymmetric and any(r["arch"] == "all" for r in found)
    assert all(r["p_adjusted"] >= r["p"] for r in obs.asymmetry if r["p"] is not None)
    assert "Transferability is nonsymmetric here" in " ".join(analysis.summary(obs))


def test_a_planted_task_effect_names_the_tasks_and_a_planted_architecture_effect_the_architecture():
    rng = np.random.default_rng(2)
    effects = {("a", "b"): 15.0, ("b", "a"): -15.0, ("a", "c"): 8.0, ("c", "b"): -8.0}
    tasks = observations(simulate(rng, pair_effect=effects, seeds=5), resamples=500)
    assert tasks.factors.verdict == "tasks" and tasks.factors.interval[0] > 0
    archs = observations(simulate(rng, arch_effect={"x": 6.0, "y": -6.0}, seeds=5), resamples=500)
    assert archs.factors.verdict == "architecture" and archs.factors.interval[1] < 0


def test_a_planted_loss_sets_the_transfer_depth():
    obs = observations(simulate(np.random.default_rng(4), loss_from=4, noise=0.5))
    depths = [d["depth"] for d in obs.transfer_depth]
    assert max(depths) == 3 and depths.count(3) >= 10  # a chance loss elsewhere is allowed its 5%
    lost = [p for p in obs.curves if p["significant_loss"]]
    assert sum(p["frozen"] >= 4 for p in lost) >= 30 and sum(p["frozen"] < 4 for p in lost) <= 2


def test_what_to_freeze_is_chosen_on_validation_and_reports_test():
    rows = []
    for seed in range(3):
        noise = [0.1, -0.1, 0.0][seed]
        for split in ("val", "test"):
            rows.append(row("x", "b", seed, 80.0, split=split))
            rows.append(row("x", "a", seed, 90.0, split=split))
        # validation: fine up to l_c = 2, a 5-point loss from 3; test: the loss comes at 1 already
        for k in range(5):
            rows.append(row("x", "b", seed, 80.0 + noise - (5 if k >= 3 else 0), "a", k, "val", num_layers=4))
            rows.append(row("x", "b", seed, 77.0 + noise - (5 if k >= 3 else 0) + (3 if k == 0 else 0), "a", k, "test",
                            num_layers=4))
    (advice,) = observations(pd.DataFrame(rows)).what_to_freeze
    assert advice["frozen"] == 2 and advice["chosen_on"] == "val" and advice["established"]
    assert advice["test_gain"]["mean"] == pytest.approx(-3.0)


def test_what_to_freeze_stops_where_the_loss_is_not_shown_within_the_tolerance():
    """A noisy l_c is not safe because its loss is not significant: the advice stops before it and
    says how many seeds would decide it."""
    rows = []
    for seed, wobble in enumerate([-4.0, 3.0, -1.5]):
        rows += [row("x", "b", seed, 80.0, split="val"), row("x", "a", seed, 90.0, split="val")]
        rows += [row("x", "b", seed, 80.0 + (wobble if k == 1 else 0.1 * seed), "a", k, "val", num_layers=2)
                 for k in range(3)]
    (advice,) = observations(pd.DataFrame(rows)).what_to_freeze
    assert advice["frozen"] == 0 and advice["stopped_at"] == 1 and advice["established"]
    assert advice["seeds_needed"] is None or advice["seeds_needed"] > 3  # mean loss 0.83 of sd 3.5: many or "more than"


def test_one_seed_asserts_no_verdict():
    obs = observations(simulate(np.random.default_rng(5), seeds=1, pair_effect={("a", "b"): 20.0}))
    assert not obs.nonsymmetric and all(r["p"] is None for r in obs.asymmetry)
    assert obs.factors.verdict == "inconclusive" and all(d["depth"] is None for d in obs.transfer_depth)
    text = " ".join(analysis.summary(obs))
    assert "one seed" in text and "nonsymmetric here" not in text


def test_folds_are_averaged_within_a_seed_against_the_same_folds_baseline():
    rows = []
    for fold, base in ((1, 60.0), (2, 70.0)):
        rows.append(row("x", "e", 0, base, fold=fold))
        rows.append(row("x", "e", 0, base + 10, "s", 0, fold=fold, num_layers=1))
    rows.append(row("x", "s", 0, 50.0))
    (point,) = observations(pd.DataFrame(rows)).curves
    assert point["gain"]["mean"] == pytest.approx(10.0) and point["value"]["mean"] == pytest.approx(75.0)


def test_the_original_results_columns_are_enough_and_a_csv_path_works(tmp_path):
    table = simulate(np.random.default_rng(6), seeds=2).drop(columns=["num_layers"])
    extra = table.assign(metric="error", value=100 - table["value"])  # a second metric per job, listed after
    mixed = pd.concat([table, extra]).sort_index(kind="stable")
    path = tmp_path / "results.csv"
    mixed.to_csv(path, index=False)
    from_csv = observations(path, resamples=50)
    direct = observations(table, resamples=50)
    assert from_csv["transferability"] == direct["transferability"]
    assert any("largest l_c" in n for n in direct.notes)


def test_failed_jobs_and_missing_columns_are_handled_by_name():
    table = simulate(np.random.default_rng(8), seeds=2)
    table["status"] = "ok"
    table.loc[table.index[-4:], "status"] = "failed"
    assert any("failed" in n for n in observations(table, resamples=50).notes)
    with pytest.raises(analysis.UserError, match="lacks the column.*seed"):
        observations(table.drop(columns=["seed"]))


def test_observations_are_plain_json():
    obs = observations(simulate(np.random.default_rng(9), seeds=3), resamples=50)
    text = json.dumps(obs, allow_nan=False)
    back = json.loads(text)
    assert set(back) >= {"asymmetry", "factors", "relatedness", "curves", "transfer_depth", "what_to_freeze"}
    assert {"nonsymmetric", "p_adjusted", "difference"} <= set(back["asymmetry"][0])
    assert {"verdict", "interval"} <= set(back["factors"])


def test_relatedness_clusters_tasks_that_transfer_well_both_ways():
    effects = {("a", "b"): 15.0, ("b", "a"): 15.0}
    rel = observations(simulate(np.random.default_rng(10), pair_effect=effects, seeds=4)).relatedness
    assert rel["stability"]["first_merge"] == ["a", "b"] and rel["stability"]["first_merge_frequency"] > 0.9
    assert {rel["ranking"][0]["source"], rel["ranking"][0]["target"]} == {"a", "b"}
    assert len(rel["linkage"]) == 2 and len(rel["matrix"]) == 3


def test_similarity_is_averaged_over_seeds_per_lc():
    rs = [{"kind": "transfer", "arch": "x", "source": "a", "target": "b", "frozen": 0, "similarity": [1.0, 0.5 + 0.2 * s]}
          for s in (0, 1)]
    assert analysis.similarity(rs) == {("x", "a", "b", 0): pytest.approx([1.0, 0.6])}
