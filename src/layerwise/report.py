"""The report of a run directory: its figures (figures.py), tables and report.html.

- observations.json: every verdict with its statistic, p-value and interval (`analysis.observations`);
- curves.csv, transferability.csv, asymmetry.csv, freezable.csv, similarity.csv: the numbers;
- estimate_*.csv: the estimates' advice and agreement, when the run has estimates.csv, beside the
  references (-l_c, always freeze k, and any truncated sweep in truncated-EPOCHS/) and the costs in
  estimate_costs.json;
- report.html: all of it with a summary generated from the numbers, section by section (SECTIONS).
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import agreement, analysis, figures, search, truncated
from .errors import UserError, warn
from .estimate import COSTS, TRAIN_CAP, VAL_CAP, read_costs
from .results import ESTIMATE_COLUMNS
from .scores import MAX_DIMS
from .store import Store, discard_temporaries, write_atomic, write_results, writing


def write_csv(path: Path, header, rows) -> None:
    """Written atomically: a full disk leaves the old table (or none), never a truncated one."""
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _f(x, fmt="{:+.3f}") -> str:
    return "" if x is None else fmt.format(x)


def _ci(interval, fmt="{:+.3f}") -> List[str]:
    ci = interval.get("ci") if interval else None
    return ["", ""] if not ci else [fmt.format(ci[0]), fmt.format(ci[1])]


def _job_name(r) -> str:
    if r.get("kind") == "transfer":
        return f"{r['arch']} {r['source']} → {r['target']} l_c={r['frozen']} seed {r['seed']}"
    return f"{r['arch']} {r['target']} seed {r['seed']}"


def write_tables(out: Path, obs) -> dict:
    """The CSV files behind the figures; returns {name: (header, rows)} for the HTML tables."""
    tables = {}
    tables["curves"] = (["arch", "source", "target", "metric", "frozen", "fraction", "seeds", "mean", "sd", "ci_low",
                         "ci_high", "baseline_mean", "baseline_sd", "gain", "gain_ci_low", "gain_ci_high",
                         "relative_gain", "p", "p_adjusted", "significant_loss"],
                        [[p["arch"], p["source"], p["target"], p["metric"], p["frozen"], f"{p['fraction']:.3f}", p["seeds"],
                          _f(p["value"]["mean"], "{:.4f}"), _f(p["value"]["sd"], "{:.4f}"), *_ci(p["value"], "{:.4f}"),
                          _f(p["baseline"]["mean"], "{:.4f}"), _f(p["baseline"]["sd"], "{:.4f}"), _f(p["gain"]["mean"]),
                          *_ci(p["gain"]), _f(p["relative_gain"]["mean"], "{:+.4f}"), _f(p["p"], "{:.4g}"),
                          _f(p["p_adjusted"], "{:.4g}"), "yes" if p["significant_loss"] else "no"] for p in obs["curves"]])
    tables["transferability"] = (["arch", "primary", "secondary", "transferability", "ci_low", "ci_high", "sd", "seeds",
                                  "points", "points_ci_low", "points_ci_high"],
                                 [[t["arch"], t["source"], t["target"], _f(t["mean"], "{:+.4f}"), *_ci(t, "{:+.4f}"),
                                   _f(t["sd"], "{:.4f}"), t["n"], _f(t["points"]["mean"]), *_ci(t["points"])]
                                  for t in obs["transferability"]])
    tables["asymmetry"] = (["arch", "A", "B", "A → B", "B → A", "difference", "ci_low (unadjusted)",
                            "ci_high (unadjusted)", "ci_low (adjusted)", "ci_high (adjusted)", "test", "statistic",
                            "df", "p", "p_adjusted (Holm)", "nonsymmetric", "seeds"],
                           [[r["arch"], r["a"], r["b"], _f(r["a_to_b"], "{:+.4f}"), _f(r["b_to_a"], "{:+.4f}"),
                             _f(r["difference"]["mean"], "{:+.4f}"), *_ci(r["difference"], "{:+.4f}"),
                             *_ci({"ci": r.get("ci_adjusted")}, "{:+.4f}"), r["test"],
                             _f(r["statistic"], "{:.3f}"), _f(r["df"], "{}"), _f(r["p"], "{:.4g}"),
                             _f(r["p_adjusted"], "{:.4g}"), "yes" if r["nonsymmetric"] else "no", r["seeds"]]
                            for r in obs["asymmetry"]])
    depth = {(d["arch"], d["source"], d["target"]): d["depth"] for d in obs["transfer_depth"]}
    tables["freezable"] = (["arch", "primary", "secondary", "L_H", "freeze l_c", "chosen on", "established",
                            "stopped at l_c", "seeds", "seeds needed there",
                            "test gain at that l_c", "test ci_low", "test ci_high", "transfer depth (test)"],
                           [[w["arch"], w["source"], w["target"], w["num_layers"], w["frozen"], w["chosen_on"],
                             "yes" if w["established"] else "no", _f(w.get("stopped_at"), "{}"), w.get("seeds", ""),
                             _seeds_needed(w), _f((w["test_gain"] or {}).get("mean")),
                             *_ci(w["test_gain"]), _f(depth.get((w["arch"], w["source"], w["target"])), "{}")]
                            for w in obs["what_to_freeze"]])
    for name, (header, rows) in tables.items():
        write_csv(out / f"{name}.csv", header, rows)
    return tables


def factors_table(f: dict):
    header = ["factor", "spread (sd of effects)", "variance", "F", "df (Greenhouse-Geisser)", "epsilon", "p"]
    rows = [[name, _f(e["spread"], "{:.4f}"), _f(e["variance"], "{:+.5f}"), _f(e["F"], "{:.3f}"),
             "" if e["df"] is None else f"{e['df'][0]:g}, {e['df'][1]:g}", f"{e['epsilon']:.3f}", _f(e["p"], "{:.4g}")]
            for name, e in (("ordered pair (tasks)", f["tasks"]), ("architecture", f["architecture"]))]
    rows.append(["pair x architecture interaction", _f(max(f["interaction"], 0) ** 0.5, "{:.4f}"),
                 _f(f["interaction"], "{:+.5f}"), "", "", "", ""])
    rows.append(["seed residual (one cell)", _f(f["residual"] ** 0.5, "{:.4f}"), _f(f["residual"], "{:+.5f}"), "", "", "", ""])
    return header, rows


def data_lines(config: dict, tasks) -> List[str]:
    """A paragraph per task read from files (config.json's `data` tables): its kind, path and classes."""
    data = config.get("data")
    if not isinstance(data, dict):
        return []
    return [f"<p>Task {html.escape(name)}: {html.escape(str(d.get('kind')))} {html.escape(str(d.get('path')))}; "
            f"classes: {html.escape(', '.join(map(str, d.get('classes') or [])))}.</p>"
            for name, d in data.items() if name in tasks and isinstance(d, dict)]


@dataclass
class Run:
    """What every section of a report reads: the run directory, its config and records, the
    verdicts and tables made from them, and the figures drawn so far."""
    out: Path
    config: dict
    records: List[dict]
    planned: int
    source: Optional[Path] = None  # the run directory, when the report goes elsewhere (its truncated sweeps are there)
    obs: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    figures: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.source or self.out

    @property
    def tasks(self) -> List[str]:
        return self.config.get("tasks", [])

    @property
    def done(self) -> List[dict]:
        return [r for r in self.records if r.get("status", "ok") == "ok"]

    @property
    def scored(self) -> List[dict]:
        """The records the analysis reads: successful, and stopped early by the adaptive search."""
        return [r for r in self.records if r.get("status", "ok") in ("ok", "pruned")]

    @property
    def failed(self) -> List[dict]:
        return [r for r in self.records if r.get("status", "ok") not in ("ok", "pruned")]


def draw_figures(run: Run) -> None:
    """The run's figures, each with its caption; similarity.csv beside its figure."""
    obs, out, tasks = run.obs, run.out, run.tasks
    if obs["curves"]:
        figures.plot_curves(obs["curves"], tasks, run.config.get("report", {}).get("panels", "pair"), out / "curves.png")
        run.figures.append(("curves.png", "Secondary metric against l_c for each ordered pair (primary → secondary): "
                            "mean over seeds with its 95% t interval (band); dashed: the baseline, with its interval; "
                            "x: a significant loss against the baseline (Holm across the curve's l_c)."))
    if obs["transferability"]:
        figures.plot_matrix(obs["transferability"], tasks, out / "transferability.png")
        run.figures.append(("transferability.png", "Transferability: the mean gain against the baseline over the "
                            "depth fraction l_c / L_H, as a share of what the baseline learned above chance (positive: "
                            "fewer errors than training on the secondary task alone; -50%: half of the baseline's "
                            "margin over chance lost), with the half-width of its 95% interval over seeds."))
    related = obs.get("relatedness")
    if related and related.get("related") and related.get("linkage") and len(related["tasks"]) >= 3:  # two tasks make no tree
        figures.plot_dendrogram(related, out / "relatedness.png")
        run.figures.append(("relatedness.png", "Tasks clustered by relatedness: normalised transferability, both "
                            "directions averaged, average linkage."))
    profiles = analysis.similarity(run.done)
    if any(k[3] == 0 for k in profiles):
        figures.plot_similarity(profiles, tasks, out / "similarity.png")
        run.figures.append(("similarity.png", "How much full fine-tuning (l_c = 0) changed each layer: linear CKA "
                            "between the primary's and the transfer's layer outputs on a sample of the secondary task's "
                            "validation examples (1: unchanged up to rotation and scale). Layers that stay near 1 "
                            "carried over."))
    write_csv(out / "similarity.csv", ["arch", "source", "target", "frozen", "layer", "cka"],
              [[a, s, t, k, i + 1, f"{v:.4f}"] for (a, s, t, k), values in profiles.items() for i, v in enumerate(values)])


def header_section(run: Run) -> List[str]:
    config, done, failed = run.config, run.done, run.failed
    missing = max(run.planned - len(run.records), 0)
    parts = [f"<h1>layerwise report: {html.escape(config.get('name', ''))}</h1>",
             f"<p>{html.escape(config.get('description', ''))}</p>"]
    if missing:
        parts.append(f"<p class='warn'><b>Partial report:</b> {missing} of {run.planned} planned jobs have not finished; "
                     "run the same command again to finish them. Every number below counts only finished jobs "
                     "(the seeds column says how many per point).</p>")
    if failed:
        parts.append(f"<p class='warn'><b>{len(failed)} jobs failed</b> and are left out of every statistic "
                     "(see <a href='#failed'>Failed jobs</a>).</p>")
    scratch = sum(r.get("kind") == "scratch" for r in done)
    given = [r["target"] for r in done if r.get("kind") == "given"]  # a primary loaded, not trained (given.py)
    loaded = f", the given primary {html.escape(', '.join(given))}" if given else ""
    parts += [f"<p>{len(done)} finished jobs ({scratch} trained from scratch, "
              f"{sum(r.get('kind') == 'transfer' for r in done)} transfers{loaded}); "
              f"tasks: {html.escape(', '.join(run.tasks))}; architectures: {html.escape(', '.join(config.get('archs', [])))}; "
              f"seeds: {html.escape(', '.join(map(str, config.get('seeds', []))))}. Metrics are on the "
              f"{run.obs.get('split', 'test')} split at the epoch chosen by the validation metric; what to freeze is "
              "chosen on the validation split. Intervals are 95% t intervals over seeds (sample standard deviation), for "
              "these test sets (the test sets' own sampling is not in them), and tests pair by seed. What each "
              "correction controls: Holm's correction keeps the family-wise false-positive rate at alpha across every "
              "row of the asymmetry table, and within each curve across its l_c values (not across the curves table: "
              "with many curves, a spurious loss somewhere in it is far likelier than alpha); what to freeze is a "
              "fixed sequence per curve, which keeps the chance of advising a truly lossy l_c at alpha per curve.</p>",
              *data_lines(config, run.tasks)]
    return parts


def summary_section(run: Run) -> List[str]:
    parts = ["<h2>Summary</h2>", *(f"<p>{html.escape(line)}</p>" for line in analysis.summary(run.obs))]
    if run.config.get("primary", {}).get("baseline") is False:
        parts.append("<p class='warn'><b>No baseline:</b> the given primary's architecture is not trained from scratch "
                     "([primary] baseline = false), so no transfer is compared with anything and there is no advice; "
                     "each l_c's metrics are in results.csv.</p>")
    return parts


def figures_section(run: Run) -> List[str]:
    return [f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption>'
            "</figure>" for name, caption in run.figures]


def asymmetry_section(run: Run) -> List[str]:
    return ["<h2>Asymmetry</h2><p>A → B against B → A in normalised transferability, paired by seed; "
            "p-values adjusted by Holm across every row; each adjusted interval is at the level Holm tested its row at "
            "(confidence 1 - alpha p / adjusted p; for the sign-flip test, that test inverted), so it excludes 0 exactly "
            "when the row is called nonsymmetric; the plain one is unadjusted. Over seeds, for these test sets: the test "
            "sets' own sampling is not in any interval.</p>", _table(*run.tables["asymmetry"])]


def factors_section(run: Run) -> List[str]:
    f = run.obs.get("factors") or {}
    if not f.get("tasks"):
        return []
    iv = f["interval"]
    return [f"<h2>Tasks against architectures</h2><p>Verdict: <b>{html.escape(f['verdict'])}</b>. Two-way "
            "decomposition of per-seed transferability (repeated measures, seeds as subjects). The variance of "
            "pair effects minus that of architecture effects is "
            f"{1e4 * f['difference']:+.1f} (% of margin)² (95% delete-one-seed jackknife interval "
            f"[{1e4 * iv[0]:+.1f}, {1e4 * iv[1]:+.1f}]; spread: the square root of sum(effect²) / (levels - 1)). A factor "
            "is named only when its effect is significant at alpha / 2 and the interval excludes equality.</p>",
            _table(*factors_table(f))]


def relatedness_section(run: Run) -> List[str]:
    related = run.obs.get("relatedness")
    if not related or not related.get("ranking"):
        return []
    stab = related.get("stability") or {}
    test = related.get("test") or {}
    agreement = (f" Reproducibility: two disjoint halves of the seeds rank the pairs alike with a mean Kendall tau of "
                 f"{stab['kendall_tau_mean']:.2f} over {stab['splits']} random splits (0: no agreement)." if stab else "")
    if test.get("p") is None:
        head = "Whether the pairs differ cannot be tested (one seed or one pair)."
    else:
        head = (f"Do the ordered pairs differ in transferability at all? {html.escape(test['method'])}: "
                f"F = {test['F']:.3g}, p = {test['p']:.3g}.")
    if not related.get("related"):
        return [f"<h2>Relatedness</h2><p>{head} Not shown at alpha {related.get('alpha', 0.05):g}, so no ranking or "
                f"clustering of the tasks is given.{agreement}</p>"]
    return [f"<h2>Relatedness</h2><p>{head} Ordered pairs ranked by normalised transferability averaged over "
            f"architectures.{agreement}</p>",
            _table(["rank", "primary", "secondary"], [[e["rank"], e["source"], e["target"]] for e in related["ranking"]])]


def _seeds_needed(w: dict) -> str:
    """The freezable table's 'seeds needed' cell: blank when nothing stopped the advice."""
    if w.get("stopped_at") is None or w.get("seeds", 0) < 2:
        return ""
    return str(w["seeds_needed"]) if w.get("seeds_needed") is not None else f"more than {w.get('seeds_cap', 100)}"


def freeze_section(run: Run) -> List[str]:
    settings = run.obs["settings"]
    alpha = settings.get("alpha", 0.05)
    return ["<h2>What to freeze</h2><p>By equivalence, not absence of evidence: an l_c is safe only when its loss "
            f"against the baseline, on the validation split, is shown to be less than {settings['tolerance']:g} metric "
            f"point(s) (the lower end of the one-sided {100 * (1 - alpha):g}% t bound of the gain over seeds lies above "
            "-tolerance). The l_c are tested in order from 0 and testing stops at the first not shown safe (a fixed "
            f"sequence, which keeps the chance of calling any truly lossy l_c safe at {alpha:g} without adjustment); "
            "the advice is the deepest safe l_c, -1 when not even l_c = 0 is shown safe. Seeds needed: how many seeds "
            "would show the l_c that stopped the sequence safe with 80% power, if its observed mean and seed spread "
            "were the truth. The test gain at the chosen l_c is reported, never used to choose. Transfer depth: the "
            "deepest l_c without a significant loss on the test split (Holm across l_c); -1: even full fine-tuning "
            "loses.</p>",
            _table(*run.tables["freezable"])]


def search_summary(run: Run) -> dict:
    """What an adaptive search trained, stopped early and skipped, and what it cost against a full
    sweep (examples x epochs of the transfers)."""
    train = run.config.get("train", {})
    epochs = train.get("finetune_epochs") or train.get("epochs", 0)  # what a transfer trains for
    frozen = run.config.get("frozen", "all")
    levels_of = (lambda r: list(range(r["num_layers"] + 1))) if frozen == "all" else (lambda r: list(frozen))
    curves = search.summary(run.records, epochs, levels_of)
    cost, full = sum(c["cost"] for c in curves), sum(c["full_cost"] for c in curves)
    return {"mode": "adaptive", "epochs": epochs, "curves": curves, "cost": cost, "full_cost": full,
            "fraction": cost / full if full else None,
            "rule": "l_c tested in order from 0 (the equivalence rule of what to freeze); the levels past the first "
                    "not shown safe are skipped, and so are the other seeds of an l_c once the seeds it has show that "
                    "whatever they gave it could not be shown safe; a transfer stops early when its validation error, less "
                    f"{search.SAFETY:g} x the most a shallower l_c improved after that epoch (at least "
                    f"{search.FLOOR:g} x the tolerance), still exceeds the "
                    "baseline's plus the tolerance",
            "cost_unit": "training examples x epochs of the transfers (baselines and primaries are the same in both)"}


def search_section(run: Run) -> List[str]:
    s = run.obs.get("search")
    if not s:
        return []
    rows = [[c["arch"], f"{c['source']} → {c['target']}", search.levels_text(list(c["trained"])),
             "; ".join(f"l_c {k}: seed {p['seed']} after epoch {p['epoch']}" for k, ps in c["pruned"].items() for p in ps),
             search.untrained_text(c), search.levels_text(c["skipped"]),
             f"{100 * c['cost'] / c['full_cost']:.0f}%" if c["full_cost"] else ""]
            for c in s["curves"]]
    fraction = "" if s["fraction"] is None else f" The transfers cost {100 * s['fraction']:.0f}% of a full sweep's."
    return ["<h2>Adaptive search</h2><p>Only the l_c the advice needs were trained: " + html.escape(s["rule"]) +
            f". Skipped l_c are absent from the curves, never interpolated; a transfer stopped early is not a point of "
            f"its curve (results.csv marks it \"pruned\").{fraction}</p>",
            _table(["arch", "pair", "trained l_c", f"stopped early (of {s['epochs']} epochs)",
                    "seeds not needed (whatever they gave, their l_c could not be shown safe)", "skipped l_c",
                    "cost against full"], rows)]


def transferability_section(run: Run) -> List[str]:
    return ["<h2>Transferability</h2>", _table(*run.tables["transferability"])]


def failed_section(run: Run) -> List[str]:
    if not run.failed:
        return []
    return ["<h2 id='failed'>Failed jobs</h2>",
            _table(["job", "reason", "key"], [[_job_name(r), r.get("reason", ""), r["key"]] for r in run.failed])]


def files_section(run: Run) -> List[str]:
    return ['<p>Every number: <a href="results.csv">results.csv</a> (one row per job, split and metric), '
            '<a href="observations.json">observations.json</a> (every verdict with its statistic), '
            '<a href="curves.csv">curves.csv</a>, <a href="transferability.csv">transferability.csv</a>, '
            '<a href="asymmetry.csv">asymmetry.csv</a>, <a href="freezable.csv">freezable.csv</a>, '
            '<a href="similarity.csv">similarity.csv</a>.</p>']


def read_estimates(out: Path):
    """The run's estimates.csv as a DataFrame; None when there is none, or it cannot be read (said)."""
    import pandas as pd

    path = out / "estimates.csv"
    if not path.exists():
        return None
    try:
        estimates = pd.read_csv(path)
        missing = set(ESTIMATE_COLUMNS) - set(estimates.columns)
        if missing:
            raise ValueError(f"it lacks the column(s) {', '.join(sorted(missing))}")
    except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
        warn(f"{path} cannot be read ({err}); its report section is left out: run `layerwise estimate` again to "
             "remake it")
        return None
    return estimates


def estimates_section(run: Run) -> List[str]:
    """The estimates of the run's estimates.csv: estimates.png, what they advise to freeze
    (estimate_freeze.csv) and, when the sweep has real curves, how well they agree with them
    (estimate_curves.csv per pair, estimate_agreement.csv per architecture and overall)."""
    estimates = read_estimates(run.out)
    if estimates is None:
        return []
    done = run.done
    real = agreement.real_curves(done) if any(r.get("kind") == "transfer" for r in done) else None
    references = truncated.runs(run.run_dir)
    figures.plot_estimates(estimates, real, run.out / "estimates.png")
    caption = ("Estimated curves (mean over seeds) beside the real one (top row, when the sweep ran): a column "
               "per ordered pair, a line per architecture.")
    parts = ["<h2>Estimates without fine-tuning</h2>",
             "<p>Estimated transferability of each l_c from forward passes only: the primary's first l_c layers "
             f"applied to the secondary task's examples (at most {TRAIN_CAP} training and {VAL_CAP} validation "
             f"examples, features wider than {MAX_DIMS} reduced by a seeded random projection), scored by a linear "
             "probe (ridge regression with an intercept, its ridge chosen on the training examples by generalised "
             "cross-validation; validation accuracy), LogME and H-score (on the training examples) and a "
             "5-nearest-neighbour vote (validation accuracy). These are <b>estimates</b>: nothing was fine-tuned to "
             "make them; the figures above are the real sweep.</p>",
             f'<figure><img src="estimates.png" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
             "</figcaption></figure>", *estimate_costs(run), *estimated_freeze(run, estimates, real, references)]
    if real is None or real.empty:
        return parts + ["<p>The sweep has no finished transfers yet, so the estimates cannot be checked against it; "
                        "<code>layerwise run</code> with the same config produces the real curves.</p>"]
    return parts + estimate_agreement(run.out, estimates, real, references)


def _cost_text(cost: dict) -> str:
    """A measured cost in words, with the machine and its load when measured."""
    cores = cost.get("cores")
    where = f" on {cores} core(s), {cost['core_seconds']:.1f} core-seconds" if cores else ""
    load = cost.get("load_average")
    machine = (f" (machine: {cost.get('machine_cores')} cores, {cost.get('cpu')}; load average {load:.2f} when it began"
               + (": other work was running, so this time is not a clean measurement" if load is not None and
                  cost.get("machine_cores") and load > 0.5 else "") + ")")
    return f"{cost['wall_seconds']:.1f} s wall{where}{machine}"


def estimate_costs(run: Run) -> List[str]:
    """What the estimates cost against what the real sweep's transfers and the truncated sweeps
    cost (estimate_costs.json; the transfers' seconds from their records)."""
    costs = read_costs(run.run_dir)
    if not costs.get("estimates"):
        return []
    transfers = [r for r in run.done if r.get("kind") == "transfer"]
    lines = [f"The estimates of {costs['estimates'].get('points')} points: {_cost_text(costs['estimates'])}."]
    if transfers:
        fit = sum(r.get("seconds", 0.0) for r in transfers)
        fit_cores = sum(r.get("seconds", 0.0) * r.get("threads", 1) for r in transfers)
        lines.append(f"The sweep's {len(transfers)} transfers trained for {fit:.1f} s in all ({fit_cores:.1f} "
                     "core-seconds; their records' own training seconds, without loading or evaluation).")
    for what, cost in costs.items():
        if what != "estimates" and isinstance(cost, dict) and cost.get("wall_seconds") is not None:
            lines.append(f"The {html.escape(what)}, {cost.get('transfers')} transfers really trained from the same "
                         f"primaries: {_cost_text(cost)}; its transfers' own training {cost.get('fit_seconds', 0):.1f} s.")
    return [f"<p><b>Cost</b> ({COSTS}): " + " ".join(lines) + " A ratio of costs holds for this suite only: it grows "
            "with the cost of a transfer (data, epochs, network), which the estimates do not pay.</p>"]


def sweep_advice(records, settings) -> dict:
    """{(arch, source, target): the l_c a sweep's records advise to freeze (validation, equivalence)}."""
    return {(w["arch"], w["source"], w["target"]): w["frozen"]
            for w in analysis.what_to_freeze(analysis.per_seed(records), settings["tolerance"], settings["alpha"])}


def estimated_freeze(run: Run, estimates, real, references=()) -> List[str]:
    """What the estimates advise to freeze, beside the sweep's own choice where it ran, with two
    references: each truncated sweep's own advice (the same rule as the sweep's), and "always
    freeze k" for the fixed k that matches the sweep most often (chosen after the fact)."""
    import pandas as pd

    advice = agreement.freeze_advice(estimates)
    chosen = {}
    if real is not None and not real.empty:
        chosen = sweep_advice(run.done, run.obs["settings"])
    for epochs, records in references:
        short = sweep_advice(records, run.obs["settings"])
        advice = pd.concat([advice, pd.DataFrame(
            [{"arch": a, "source": s, "target": t, "score": truncated.name(epochs), "frozen": k,
              "tolerance": run.obs["settings"]["tolerance"]} for (a, s, t), k in short.items()])], ignore_index=True)
    advice["real"] = [chosen.get(k) for k in zip(advice["arch"], advice["source"], advice["target"])]
    header = ["arch", "primary", "secondary", "score", "freeze l_c (estimate)", "freeze l_c (sweep, validation)"]
    rows = [[r["arch"], r["source"], r["target"], r["score"], r["frozen"],
             "" if r["real"] is None else r["real"]] for r in advice.to_dict("records")]
    write_csv(run.out / "estimate_freeze.csv", header, rows)
    matched = advice.dropna(subset=["real"])
    agree = "".join(f" {score}: {int((g['frozen'] == g['real']).sum())} of {len(g)} equal to the sweep's choice, "
                    f"mean distance {np.mean(np.abs(g['frozen'] - g['real'])):.1f} layers."
                    for score, g in matched.groupby("score"))
    fixed = ""
    if chosen:
        counts = agreement.always_freeze(chosen, int(estimates["frozen"].max()))
        k, hits, distance = max(counts, key=lambda c: (c[1], -c[2]))
        fixed = (f" Reference, <i>always freeze k</i>: k = {k} is the sweep's choice for {hits} of "
                 f"{sum(v is not None for v in chosen.values())} curves (mean distance {distance:.1f} layers); that k "
                 "was chosen after seeing the sweep's choices (every k: "
                 + ", ".join(f"{c[0]}: {c[1]}" for c in counts) + "), so no fixed rule set beforehand does better. "
                 "An estimate's advice is worth having where it beats that count.")
    return ["<h3>What to freeze, estimated</h3><p><b>Estimates</b>, not measurements: the deepest l_c whose "
            "reachable probe or kNN accuracy stays within 1 point of the best the primary offers; beside it, the "
            "sweep's own choice on validation data where it ran. A truncated sweep's rows are its own advice, by "
            "the sweep's rule (equivalence on validation), from its really trained transfers." + agree + fixed
            + "</p>", _table(header, rows)]


def estimate_agreement(out: Path, estimates, real, references=()) -> List[str]:
    """Rank correlations of every estimate (and its reachable form, and the references: -l_c and
    each truncated sweep) with the real curves, over l_c and over pairs."""
    import pandas as pd

    both_forms = pd.concat([estimates, agreement.reachable(estimates), agreement.depth_only(estimates)])
    short = pd.concat([truncated.as_estimates(records, epochs) for epochs, records in references]) if references else None
    per_curve, by_arch = agreement.curve_agreement(both_forms if short is None else pd.concat([both_forms, short]), real)
    pairs = agreement.pair_agreement(both_forms, real)
    if short is not None:  # already gains against the baseline, so not rebased
        pairs = pd.concat([pairs, agreement.pair_agreement(short, real, rebase=False)], ignore_index=True)
    both = by_arch.merge(pairs, on=["arch", "score"], how="outer", suffixes=("", "_pairs"))
    header = ["arch", "score", "tau over l_c", "rho over l_c", "tau over pairs", "rho over pairs", "seeds",
              "curves not ranked"]
    rows = [[r["arch"], r["score"], _ci_text(r, "tau"), _ci_text(r, "rho"), _ci_text(r, "tau", "_pairs"),
             _ci_text(r, "rho", "_pairs"), r["seeds"], r["unranked"]] for r in both.to_dict("records")]
    write_csv(out / "estimate_agreement.csv", header, rows)
    with writing(out / "estimate_curves.csv") as tmp:
        per_curve.to_csv(tmp, index=False, float_format="%.4f")
    verdict = "".join(_beside_references(both, suffix, what) for suffix, what in (("", "Over l_c"), ("_pairs", "Over pairs")))
    return [f"<p>{verdict}</p>" if verdict else "", "<p>How far each estimate can be trusted here: rank correlations (Kendall's tau-b, Spearman's rho) "
            "with the real curve, the validation normalised gain (validation, because "
            "decisions are taken on validation data). Over l_c: within each curve; over pairs: the estimated "
            "transferability (the mean gain of the score over its shallowest l_c) against the real one. Each "
            "seed's estimates are compared with the same seed's real curves (one primary, one replicate): mean "
            "over seeds with a 95% interval on Fisher's z scale, so it stays within [-1, 1]; curves that cannot "
            "be ranked (constant) are counted, not averaged. 1 is perfect agreement, 0 none, -1 a reversed "
            "ranking. The table shows several forms of each score: whichever of them looks best here is picked "
            "after seeing these numbers, and no interval allows for that choice (with eight forms, the best "
            "interval's level is not 95%). A score's <i>reachable</i> form is the best score of "
            "any layer at or above l_c (what a transfer holding l_c layers can still reach). Two references, "
            "which an estimate must beat to be worth its cost: the row <i>-l_c (no estimate)</i> only says that "
            "holding more layers constant is worse (over l_c; it is the same for every pair, so it cannot rank "
            "pairs); a <i>truncated sweep</i> row (<code>layerwise estimate --truncated EPOCHS</code>) is the real "
            "sweep with each transfer trained for that many epochs from the same primaries, compared with the "
            "full sweep seed by seed as the estimates are (its cost is above). Per pair: "
            '<a href="estimate_curves.csv">estimate_curves.csv</a>; every estimate: '
            '<a href="estimates.csv">estimates.csv</a>.</p>', _table(header, rows)]


def _beside_references(both, suffix: str, what: str) -> str:
    """One sentence per direction (over l_c, over pairs): the estimate form with the highest mean
    tau over every architecture, said to be selected after the fact, beside each reference."""
    every = both[both["arch"] == "all"]
    tau = every.set_index("score")[f"tau{suffix}"].dropna()
    references = [name for name in tau.index if name == "-l_c (no estimate)" or name.startswith("truncated sweep")]
    forms = tau.drop(references)
    if forms.empty:
        return ""
    best = forms.idxmax()
    beside = "; ".join(f"{name}: {tau[name]:+.2f}" for name in references)
    return (f"{what}, the estimate form with the highest mean tau is {html.escape(best)} ({forms[best]:+.2f}), "
            f"selected after seeing all {len(forms)} forms' numbers, so that figure is optimistic; the references"
            + (f" reach {html.escape(beside)}. " if beside else ": none computed. "))


def _ci_text(row, name, suffix="") -> str:
    """`mean [low, high]` of one correlation in a row of an agreement table."""
    mean, low, high = (row.get(f"{name}{part}{suffix}") for part in ("", "_low", "_high"))
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:+.2f}" + ("" if low is None or not np.isfinite(low) else f" [{low:+.2f}, {high:+.2f}]")


# The report, top to bottom: each section reads the run and returns its HTML parts.
SECTIONS = (header_section, summary_section, figures_section, asymmetry_section, factors_section,
            relatedness_section, freeze_section, search_section, transferability_section, failed_section, estimates_section,
            files_section)
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
         "img{max-width:100%}table{border-collapse:collapse;font-size:90%}.warn{color:#a40}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")


def analysis_settings(config: dict) -> dict:
    """alpha, test and tolerance from the run's config ([analysis]; a config.json written before that
    table existed gets the defaults)."""
    table = config.get("analysis") or {}
    return {key: table[key] for key in ("alpha", "test", "tolerance") if table.get(key) is not None}


def write_report(out: Path, records, config: dict, planned: int = 0, source: Optional[Path] = None) -> Path:
    """Write the figures, the CSV tables, observations.json and report.html into `out`; return the
    report's path. `planned` is the number of jobs the run planned (0: all of `records`); `source`
    the run directory when `out` is another folder (its truncated sweeps and costs are read there)."""
    run = Run(Path(out), config, list(records), planned, source=None if source is None else Path(source))
    run.obs = analysis.observations(run.scored, **analysis_settings(config))
    if config.get("search") == "adaptive":
        run.obs["search"] = search_summary(run)
    write_atomic(run.out / "observations.json", json.dumps(run.obs, indent=1) + "\n")
    run.tables = write_tables(run.out, run.obs)
    draw_figures(run)
    parts = [part for section in SECTIONS for part in section(run)]
    path = run.out / "report.html"
    write_atomic(path, f"<!doctype html><html><head><meta charset='utf-8'><title>layerwise: "
                    f"{html.escape(config.get('name', ''))}</title><style>{STYLE}</style></head><body>"
                    + "\n".join(parts) + "</body></html>\n")
    return path


def report(run_dir: Path, out: Optional[Path] = None) -> Path:
    """Rebuild the report of a run directory from its config and finished records, into the run
    directory or into `out` (with its own results.csv), which leaves the run as it is: the way to
    report on a read-only run."""
    store = Store(run_dir)
    config = store.read_config()
    plan = store.read_plan()
    if out is None and not store.writable():
        raise UserError(f"{run_dir} cannot be written (a read-only copy?); its report goes elsewhere: "
                        f"layerwise report {run_dir} --out FOLDER")
    records = store.records(plan)
    if out is None:
        discard_temporaries(Path(run_dir))  # of a report killed as it wrote
        store.write_results(records)
        return write_report(Path(run_dir), records, config, planned=len(plan))
    out = Path(out)
    if (out / "config.json").exists() or (out / "jobs").exists():
        raise UserError(f"--out {out} holds a run directory; choose a folder for the report alone")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the report folder {out}: {err.strerror}") from None
    discard_temporaries(out)
    write_results(out / "results.csv", records)
    if (Path(run_dir) / "estimates.csv").exists():  # the estimates' section reads them beside the report
        write_atomic(out / "estimates.csv", (Path(run_dir) / "estimates.csv").read_text())
    return write_report(out, records, config, planned=len(plan), source=Path(run_dir))
