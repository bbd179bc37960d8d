"""Figures, tables and report.html for a run directory.

- curves.png: the secondary metric against l_c per ordered pair, baseline dashed, 95% intervals
  over seeds as bands (the style of the paper's figures);
- transferability.png: the normalised transferability of every ordered pair as a heatmap;
- relatedness.png: the tasks clustered by relatedness (a dendrogram);
- observations.json: every verdict with its statistic, p-value and interval (`analysis.observations`);
- curves.csv, transferability.csv, asymmetry.csv, freezable.csv, similarity.csv: the numbers;
- report.html: all of it with a summary generated from the numbers.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import analysis  # noqa: E402
from .store import Store  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _ordered(names, order):
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _curve_groups(points):
    groups = defaultdict(list)
    for p in points:
        groups[p["arch"], p["source"], p["target"]].append(p)
    return {k: sorted(v, key=lambda p: p["frozen"]) for k, v in groups.items()}


def _band(ax, x, intervals, color, alpha):
    low = [np.nan if i["ci"] is None else i["ci"][0] for i in intervals]
    high = [np.nan if i["ci"] is None else i["ci"][1] for i in intervals]
    ax.fill_between(x, low, high, color=color, alpha=alpha, lw=0)


def plot_curves(points: List[dict], tasks: List[str], panels: str, path: Path) -> None:
    """The secondary metric against l_c per ordered pair: mean over seeds with its 95% t interval
    as a band; the baseline dashed, with its own interval as a lighter band."""
    curves = _curve_groups(points)
    pairs = _ordered({k[1:] for k in curves}, [(a, b) for a in tasks for b in tasks])
    archs = sorted({k[0] for k in curves})
    rows = archs if panels == "pair-arch" else [None]
    ncols = min(len(pairs), 3 if panels == "pair" else len(pairs))
    nrows = len(rows) * math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for r, row_arch in enumerate(rows):
        for i, (source, target) in enumerate(pairs):
            ax = axes.flat[r * math.ceil(len(pairs) / ncols) * ncols + i]
            ax.set_visible(True)
            for j, arch in enumerate(archs):
                ps = curves.get((arch, source, target))
                if not ps or (row_arch is not None and arch != row_arch):
                    continue
                color = COLORS[j % len(COLORS)]
                x = [p["frozen"] for p in ps]
                ax.plot(x, [p["value"]["mean"] for p in ps], color=color, marker="o", ms=3, label=arch)
                _band(ax, x, [p["value"] for p in ps], color, 0.25)
                ax.plot(x, [p["baseline"]["mean"] for p in ps], color=color, ls="--", lw=1, label=f"{arch} baseline")
                _band(ax, x, [p["baseline"] for p in ps], color, 0.08)
                loss = [p for p in ps if p["significant_loss"]]
                if loss:
                    ax.plot([p["frozen"] for p in loss], [p["value"]["mean"] for p in loss], ls="none", marker="x",
                            color="black", ms=6, label="significant loss (Holm)")
                better = "lower" if ps[0]["lower_is_better"] else "higher"
                ax.set_ylabel(f"{ps[0]['metric']} ({better} is better)")
            ax.set_title(f"{source} → {target}" + (f" ({row_arch})" if row_arch else ""), fontsize=10)
            ax.set_xlabel("$l_c$ (layers held constant)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    legend = {}  # every architecture's line and baseline, once, whichever panel drew them
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(5, len(legend)), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrows < 3 else 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_similarity(profiles, tasks: List[str], path: Path) -> None:
    """Per ordered pair: how similar each layer of the fully fine-tuned transfer (l_c = 0) stays
    to the primary's, one line per architecture."""
    full = {k[:3]: v for k, v in profiles.items() if k[3] == 0}
    pairs = _ordered({k[1:] for k in full}, [(a, b) for a in tasks for b in tasks])
    archs = sorted({k[0] for k in full})
    ncols = min(len(pairs), 3)
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    for ax, (source, target) in zip(axes.flat, pairs):
        for j, arch in enumerate(archs):
            values = full.get((arch, source, target))
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, color=COLORS[j % len(COLORS)], label=arch)
        ax.set_title(f"{source} → {target}", fontsize=10)
        ax.set_xlabel("body layer")
        ax.set_ylabel("CKA with the primary")
        ax.set_ylim(0, 1.05)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrows < 3 else 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matrix(scores: List[dict], tasks: List[str], path: Path) -> None:
    """Normalised transferability of every ordered pair per architecture (and over architectures):
    each cell the mean normalised gain (a share of what the baseline learned above chance), with the
    half-width of its 95% interval."""
    archs = sorted({s["arch"] for s in scores if s["arch"] != "all"}) + (["all"] if any(s["arch"] == "all" for s in scores) else [])
    names = [t for t in tasks if any(t in (s["source"], s["target"]) for s in scores)]
    fig, axes = plt.subplots(1, len(archs), figsize=(3.4 * len(archs) + 2.0, 3.9), squeeze=False,
                             sharey=True, layout="constrained")
    limit = max([1e-9] + [abs(100 * s["mean"]) for s in scores])
    for ax, arch in zip(axes.flat, archs):
        m = np.full((len(names), len(names)), np.nan)
        half = {}
        for s in scores:
            if s["arch"] == arch and s["source"] in names and s["target"] in names:
                i, j = names.index(s["source"]), names.index(s["target"])
                m[i, j] = 100 * s["mean"]
                half[i, j] = None if s["ci"] is None else 50 * (s["ci"][1] - s["ci"][0])
        image = ax.imshow(m, cmap="RdBu", vmin=-limit, vmax=limit)
        for (i, j), h in half.items():
            text = f"{m[i, j]:+.0f}%" + ("" if h is None else f"\n±{h:.0f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(m[i, j]) > 0.6 * limit else "black")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("secondary")
        ax.set_title("mean over architectures" if arch == "all" else arch, fontsize=10)
    axes[0, 0].set_ylabel("primary")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="gain, % of the baseline's margin over chance (± 95% CI)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_dendrogram(related: dict, path: Path) -> None:
    """Tasks clustered by relatedness (normalised transferability, both directions averaged)."""
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = plt.subplots(figsize=(1.2 * len(related["tasks"]) + 3, 3.2))
    linkage = np.array(related["linkage"])
    dendrogram(linkage, labels=related["tasks"], ax=ax, color_threshold=0)
    top = max(float(linkage[:, 2].max()), 1e-9)
    ax.set_ylim(-0.06 * top, 1.08 * top)  # the first merge sits at 0 by construction: keep it in view
    ax.set_ylabel("relatedness below the most\nrelated pair (share of margin)", fontsize=8)
    stab = related.get("stability")
    title = "Task relatedness (average linkage)"
    if stab:
        title += f"; first merge recurs in {100 * stab['first_merge_frequency']:.0f}% of seed resamples"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
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
    tables["asymmetry"] = (["arch", "A", "B", "A → B", "B → A", "difference", "ci_low", "ci_high", "test", "statistic",
                            "df", "p", "p_adjusted (Holm)", "nonsymmetric", "seeds"],
                           [[r["arch"], r["a"], r["b"], _f(r["a_to_b"], "{:+.4f}"), _f(r["b_to_a"], "{:+.4f}"),
                             _f(r["difference"]["mean"], "{:+.4f}"), *_ci(r["difference"], "{:+.4f}"), r["test"],
                             _f(r["statistic"], "{:.3f}"), _f(r["df"], "{}"), _f(r["p"], "{:.4g}"),
                             _f(r["p_adjusted"], "{:.4g}"), "yes" if r["nonsymmetric"] else "no", r["seeds"]]
                            for r in obs["asymmetry"]])
    depth = {(d["arch"], d["source"], d["target"]): d["depth"] for d in obs["transfer_depth"]}
    tables["freezable"] = (["arch", "primary", "secondary", "L_H", "freeze l_c", "chosen on", "established",
                            "test gain at that l_c", "test ci_low", "test ci_high", "transfer depth (test)"],
                           [[w["arch"], w["source"], w["target"], w["num_layers"], w["frozen"], w["chosen_on"],
                             "yes" if w["established"] else "no", _f((w["test_gain"] or {}).get("mean")),
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


def write_report(out: Path, records, config: dict, planned: int = 0) -> Path:
    """Write the figures, the CSV tables, observations.json and report.html into `out`; return the
    report's path. `planned` is the number of jobs the run planned (0: all of `records`)."""
    out = Path(out)
    tasks = config.get("tasks", [])
    done = [r for r in records if r.get("status", "ok") == "ok"]
    failed = [r for r in records if r.get("status", "ok") != "ok"]
    obs = analysis.observations(done)
    (out / "observations.json").write_text(json.dumps(obs, indent=1) + "\n")
    tables = write_tables(out, obs)
    figures = []
    if obs["curves"]:
        plot_curves(obs["curves"], tasks, config.get("report", {}).get("panels", "pair"), out / "curves.png")
        figures.append(("curves.png", "Secondary metric against l_c for each ordered pair (primary → secondary): mean "
                        "over seeds with its 95% t interval (band); dashed: the baseline, with its interval; x: a "
                        "significant loss against the baseline (Holm across the curve's l_c)."))
    if obs["transferability"]:
        plot_matrix(obs["transferability"], tasks, out / "transferability.png")
        figures.append(("transferability.png", "Transferability: the mean gain against the baseline over the depth "
                        "fraction l_c / L_H, as a share of what the baseline learned above chance (positive: fewer "
                        "errors than training on the secondary task alone; -50%: half of the baseline's margin over "
                        "chance lost), with the half-width of its 95% interval over seeds."))
    related = obs.get("relatedness")
    if related and related.get("linkage") and len(related["tasks"]) >= 3:  # two tasks make no tree
        plot_dendrogram(related, out / "relatedness.png")
        figures.append(("relatedness.png", "Tasks clustered by relatedness: normalised transferability, both "
                        "directions averaged, average linkage."))
    profiles = analysis.similarity(done)
    if any(k[3] == 0 for k in profiles):
        plot_similarity(profiles, tasks, out / "similarity.png")
        figures.append(("similarity.png", "How much full fine-tuning (l_c = 0) changed each layer: linear CKA between "
                        "the primary's and the transfer's layer outputs on a sample of the secondary task's "
                        "validation examples (1: unchanged up to rotation and scale). Layers that stay near 1 carried over."))
    write_csv(out / "similarity.csv", ["arch", "source", "target", "frozen", "layer", "cka"],
              [[a, s, t, k, i + 1, f"{v:.4f}"] for (a, s, t, k), values in profiles.items() for i, v in enumerate(values)])

    scratch = sum(r.get("kind") == "scratch" for r in done)
    missing = max(planned - len(records), 0)
    parts = [f"<h1>layerwise report: {html.escape(config.get('name', ''))}</h1>",
             f"<p>{html.escape(config.get('description', ''))}</p>"]
    if missing:
        parts.append(f"<p class='warn'><b>Partial report:</b> {missing} of {planned} planned jobs have not finished; "
                     "run the same command again to finish them. Every number below counts only finished jobs "
                     "(the seeds column says how many per point).</p>")
    if failed:
        parts.append(f"<p class='warn'><b>{len(failed)} jobs failed</b> and are left out of every statistic "
                     "(see <a href='#failed'>Failed jobs</a>).</p>")
    given = [r["target"] for r in done if r.get("kind") == "given"]  # a primary loaded, not trained (given.py)
    loaded = f", the given primary {html.escape(', '.join(given))}" if given else ""
    parts += [f"<p>{len(done)} finished jobs ({scratch} trained from scratch, "
              f"{sum(r.get('kind') == 'transfer' for r in done)} transfers{loaded}); "
              f"tasks: {html.escape(', '.join(tasks))}; architectures: {html.escape(', '.join(config.get('archs', [])))}; "
              f"seeds: {html.escape(', '.join(map(str, config.get('seeds', []))))}. Metrics are on the {obs.get('split', 'test')} "
              "split at the epoch chosen by the validation metric; what to freeze is chosen on the validation split. "
              "Intervals are 95% t intervals over seeds (sample standard deviation), tests pair by seed, and "
              "Holm's correction keeps the false-positive rate of each table at 5%.</p>",
              *data_lines(config, tasks),
              "<h2>Summary</h2>", *(f"<p>{html.escape(line)}</p>" for line in analysis.summary(obs))]
    if config.get("primary", {}).get("baseline") is False:
        parts.append("<p class='warn'><b>No baseline:</b> the given primary's architecture is not trained from scratch "
                     "([primary] baseline = false), so no transfer is compared with anything and there is no advice; "
                     "each l_c's metrics are in results.csv.</p>")
    for name, caption in figures:
        parts.append(f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    parts += ["<h2>Asymmetry</h2><p>A → B against B → A in normalised transferability, paired by seed; "
              "p-values adjusted by Holm across every row.</p>", _table(*tables["asymmetry"])]
    f = obs.get("factors") or {}
    if f.get("tasks"):
        iv = f["interval"]
        parts += [f"<h2>Tasks against architectures</h2><p>Verdict: <b>{html.escape(f['verdict'])}</b>. Two-way "
                  "decomposition of per-seed transferability (repeated measures, seeds as subjects). The variance of "
                  "pair effects minus that of architecture effects is "
                  f"{f['difference']:+.5f} (95% bootstrap interval over seeds [{iv[0]:+.5f}, {iv[1]:+.5f}]). A factor "
                  "is named only when its effect is significant at alpha / 2 and the interval excludes equality.</p>",
                  _table(*factors_table(f))]
    if related and related.get("ranking"):
        stab = related.get("stability") or {}
        parts += ["<h2>Relatedness</h2><p>Ordered pairs ranked by normalised transferability averaged over "
                  "architectures" + (f"; rank intervals from {stab['resamples']} resamples of the seeds, mean Kendall "
                                     f"tau with the observed ranking {stab['kendall_tau_mean']:.2f}" if stab else "")
                  + ".</p>",
                  _table(["rank", "primary", "secondary", "rank interval"],
                         [[e["rank"], e["source"], e["target"], "" if "rank_interval" not in e else
                           f"{e['rank_interval'][0]:g} to {e['rank_interval'][1]:g}"] for e in related["ranking"]])]
    parts += ["<h2>What to freeze</h2><p>The deepest l_c such that no l_c up to it loses, on the validation split, "
              f"significantly more than {obs['settings']['tolerance']:g} metric point(s) against the baseline (the upper end "
              "of the 95% interval stays above the tolerance); established: the whole interval lies within it. The "
              "test gain at that l_c is reported, never used to choose. Transfer depth: the deepest l_c without a "
              "significant loss on the test split (Holm across l_c); -1: even full fine-tuning loses.</p>",
              _table(*tables["freezable"]),
              "<h2>Transferability</h2>", _table(*tables["transferability"])]
    if failed:
        parts += ["<h2 id='failed'>Failed jobs</h2>",
                  _table(["job", "reason", "key"], [[_job_name(r), r.get("reason", ""), r["key"]] for r in failed])]
    from .estimate import write_estimate_report  # its own section, when the run has estimates.csv

    parts.append(write_estimate_report(out, records))
    parts.append('<p>Every number: <a href="results.csv">results.csv</a> (one row per job, split and metric), '
                 '<a href="observations.json">observations.json</a> (every verdict with its statistic), '
                 '<a href="curves.csv">curves.csv</a>, <a href="transferability.csv">transferability.csv</a>, '
                 '<a href="asymmetry.csv">asymmetry.csv</a>, <a href="freezable.csv">freezable.csv</a>, '
                 '<a href="similarity.csv">similarity.csv</a>.</p>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "img{max-width:100%}table{border-collapse:collapse;font-size:90%}.warn{color:#a40}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>layerwise: "
                    f"{html.escape(config.get('name', ''))}</title><style>{style}</style></head><body>"
                    + "\n".join(parts) + "</body></html>\n")
    return path


def report(run_dir: Path) -> Path:
    """Rebuild the report of a run directory from its config and finished records."""
    store = Store(run_dir)
    config = store.read_config()
    plan = store.read_plan()
    records = store.records(plan)
    store.write_results(records)
    return write_report(run_dir, records, config, planned=len(plan))
