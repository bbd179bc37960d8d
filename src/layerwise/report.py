"""Figures, tables and report.html for a run directory.

- curves.png: the secondary metric against l_c per ordered pair, baseline dashed, error bars
  over seeds (the style of the paper's figures);
- transferability.png: the transferability of every ordered pair as a heatmap;
- transferability.csv, asymmetry.csv, curves.csv: the numbers behind them;
- report.html: all of it with a summary generated from the numbers.
"""

from __future__ import annotations

import csv
import html
import math
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


def plot_curves(curves: List[analysis.Curve], tasks: List[str], panels: str, path: Path) -> None:
    pairs = _ordered({(c.source, c.target) for c in curves}, [(a, b) for a in tasks for b in tasks])
    archs = sorted({c.arch for c in curves})
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
                if row_arch is not None and arch != row_arch:
                    continue
                c = next((c for c in curves if (c.arch, c.source, c.target) == (arch, source, target)), None)
                if c is None:
                    continue
                color = COLORS[j % len(COLORS)]
                ax.errorbar(c.frozen, c.mean, yerr=c.std, color=color, marker="o", ms=3, capsize=2, label=arch)
                ax.axhline(c.baseline_mean, color=color, ls="--", lw=1, label=f"{arch} baseline")
                ax.set_ylabel(f"{c.metric} ({'lower' if c.lower_is_better else 'higher'} is better)")
            title = f"{source} → {target}" + (f" ({row_arch})" if row_arch else "")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("$l_c$ (layers held constant)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
    legend = {}  # every architecture's line and baseline, once, whichever panel drew them
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(4, len(legend)), frameon=False)
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


def plot_matrix(scores, tasks: List[str], path: Path) -> None:
    archs = sorted({k[0] for k in scores if k[0] != "all"}) + ["all"]
    names = [t for t in tasks if any(t in k[1:] for k in scores)]
    fig, axes = plt.subplots(1, len(archs), figsize=(3.2 * len(archs) + 2.0, 3.8), squeeze=False,
                             sharey=True, layout="constrained")
    values = [v[0] for v in scores.values()]
    limit = max(1e-9, max(abs(min(values)), abs(max(values))))
    for ax, arch in zip(axes.flat, archs):
        m = np.full((len(names), len(names)), np.nan)
        for i, s in enumerate(names):
            for j, t in enumerate(names):
                if (arch, s, t) in scores:
                    m[i, j] = scores[arch, s, t][0]
        image = ax.imshow(m, cmap="RdBu", vmin=-limit, vmax=limit)
        for i in range(len(names)):
            for j in range(len(names)):
                if not np.isnan(m[i, j]):
                    dark = abs(m[i, j]) > 0.6 * limit
                    ax.text(j, i, f"{m[i, j]:+.1f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("secondary")
        ax.set_title("mean over architectures" if arch == "all" else arch, fontsize=10)
    axes[0, 0].set_ylabel("primary")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="gain over baseline (points)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
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


def write_report(out: Path, records, config: dict) -> Path:
    """Write the figures, the CSV tables and report.html into `out`; return the report's path."""
    out = Path(out)
    tasks = config.get("tasks", [])
    curves = analysis.curves(records)
    scores = analysis.transferability(records)
    asym = analysis.asymmetry(records)
    figures = []
    if curves:
        plot_curves(curves, tasks, config.get("report", {}).get("panels", "pair"), out / "curves.png")
        figures.append(("curves.png", "Secondary metric against l_c for each ordered pair (primary → secondary); "
                        "error bars are the standard deviation over seeds, dashed lines the baselines."))
        plot_matrix(scores, tasks, out / "transferability.png")
        figures.append(("transferability.png", "Transferability: mean gain over l_c against the baseline, in metric "
                        "points; positive means the transfer beats training on the secondary task alone."))
    profiles = analysis.similarity(records)
    if any(k[3] == 0 for k in profiles):
        plot_similarity(profiles, tasks, out / "similarity.png")
        figures.append(("similarity.png", "How much full fine-tuning (l_c = 0) changed each layer: linear CKA between "
                        "the primary's and the transfer's layer outputs on the secondary test set (1: unchanged up to "
                        "rotation and scale). Layers that stay near 1 carried over."))
    write_csv(out / "similarity.csv", ["arch", "source", "target", "frozen", "layer", "cka"],
              [[a, s, t, k, i + 1, f"{v:.4f}"] for (a, s, t, k), values in profiles.items() for i, v in enumerate(values)])
    write_csv(out / "curves.csv", ["arch", "source", "target", "metric", "frozen", "mean", "std", "baseline_mean", "baseline_std", "seeds"],
              [[c.arch, c.source, c.target, c.metric, k, f"{m:.4f}", f"{s:.4f}", f"{c.baseline_mean:.4f}", f"{c.baseline_std:.4f}", c.seeds]
               for c in curves for k, m, s in zip(c.frozen, c.mean, c.std)])
    score_rows = [[a, s, t, f"{m:+.3f}", f"{sd:.3f}"] for (a, s, t), (m, sd) in sorted(scores.items())]
    write_csv(out / "transferability.csv", ["arch", "source", "target", "gain_mean", "gain_std"], score_rows)
    asym_rows = [[r.arch, r.a, r.b, f"{r.a_to_b:+.3f}", f"{r.b_to_a:+.3f}", f"{r.difference:+.3f}",
                  "" if r.spread is None else f"{r.spread:.3f}", r.seeds, "yes" if r.clear else "no"] for r in asym]
    asym_header = ["arch", "A", "B", "A → B", "B → A", "difference", "std over seeds", "seeds", "beyond noise"]
    write_csv(out / "asymmetry.csv", asym_header, asym_rows)

    depth = {(r["arch"], r["target"]): r["num_layers"] for r in records}
    freeze_header = ["arch", "primary", "secondary", "L_H", "deepest l_c within 1 point of the baseline"]
    freeze_rows = [[c.arch, c.source, c.target, depth[c.arch, c.target], analysis.freezable(c)] for c in curves]
    write_csv(out / "freezable.csv", freeze_header, freeze_rows)

    scratch = sum(r["kind"] == "scratch" for r in records)
    parts = [f"<h1>layerwise report: {html.escape(config.get('name', ''))}</h1>",
             f"<p>{html.escape(config.get('description', ''))}</p>",
             f"<p>{len(records)} finished jobs ({scratch} trained from scratch, {len(records) - scratch} transfers); "
             f"tasks: {html.escape(', '.join(tasks))}; architectures: {html.escape(', '.join(config.get('archs', [])))}; "
             f"seeds: {html.escape(', '.join(map(str, config.get('seeds', []))))}. All metrics are on the test split at "
             "the epoch chosen by the validation metric.</p>",
             "<h2>Summary</h2>", *(f"<p>{html.escape(line)}</p>" for line in analysis.summary(records))]
    for name, caption in figures:
        parts.append(f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    parts += ["<h2>What to freeze</h2>", "<p>How many leading layers of the primary can be held constant "
              "for the secondary task while staying within 1 metric point of the baseline (every shallower "
              "choice too); -1: even full fine-tuning loses more.</p>", _table(freeze_header, freeze_rows),
              "<h2>Asymmetry</h2>", _table(asym_header, asym_rows),
              "<h2>Transferability</h2>", _table(["arch", "primary", "secondary", "gain (mean)", "std"], score_rows),
              '<p>Every number: <a href="results.csv">results.csv</a> (one row per job, split and metric), '
              '<a href="curves.csv">curves.csv</a>, <a href="transferability.csv">transferability.csv</a>, '
              '<a href="asymmetry.csv">asymmetry.csv</a>, <a href="freezable.csv">freezable.csv</a>, '
              '<a href="similarity.csv">similarity.csv</a>.</p>']
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "img{max-width:100%}table{border-collapse:collapse;font-size:90%}"
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
    records = store.records(store.read_plan())
    store.write_results(records)
    return write_report(run_dir, records, config)
