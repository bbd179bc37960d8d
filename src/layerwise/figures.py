"""The report's figures, each drawn from verdicts or tables into a PNG file.

- curves.png: the secondary metric against l_c per ordered pair, baseline dashed, 95% intervals
  over seeds as bands (the style of the paper's figures);
- transferability.png: the normalised transferability of every ordered pair as a heatmap;
- relatedness.png: the tasks clustered by relatedness (a dendrogram);
- similarity.png: how much full fine-tuning changed each layer (CKA with the primary);
- estimates.png: the estimates without fine-tuning beside the real curves.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import List

import numpy as np

from .scores import SCORES
from .store import writing

ESTIMATE_LABELS = {"real": "real: normalised gain (val)", "probe": "linear probe accuracy (%)", "logme": "LogME",
                   "hscore": "H-score", "knn": "5-NN accuracy (%)"}


def save(fig, path: Path, **kwargs) -> None:
    """Write a figure atomically (a full disk or a file-size limit leaves the old figure, not a
    truncated one, and is one line naming the file) and close it."""
    try:
        with writing(Path(path)) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], **kwargs)
    finally:
        pyplot().close(fig)


def pyplot():
    """matplotlib's pyplot drawing into files (no display), imported on first use: see the package
    docstring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cycle_color(i: int):
    """The i-th colour of matplotlib's cycle: an architecture's lines look alike in every figure."""
    cycle = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[i % len(cycle)]


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
    plt = pyplot()
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
                color = cycle_color(j)
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
    save(fig, path, dpi=110)


def plot_similarity(profiles, tasks: List[str], path: Path) -> None:
    """Per ordered pair: how similar each layer of the fully fine-tuned transfer (l_c = 0) stays
    to the primary's, one line per architecture."""
    plt = pyplot()
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
                ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, color=cycle_color(j), label=arch)
        ax.set_title(f"{source} → {target}", fontsize=10)
        ax.set_xlabel("body layer")
        ax.set_ylabel("CKA with the primary")
        ax.set_ylim(0, 1.05)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrows < 3 else 0.03, 1, 1))
    save(fig, path, dpi=110)


def plot_matrix(scores: List[dict], tasks: List[str], path: Path) -> None:
    """Normalised transferability of every ordered pair per architecture (and over architectures):
    each cell the mean normalised gain (a share of what the baseline learned above chance), with the
    half-width of its 95% interval."""
    plt = pyplot()
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
    save(fig, path, dpi=110, bbox_inches="tight")


def plot_dendrogram(related: dict, path: Path) -> None:
    """Tasks clustered by relatedness (normalised transferability, both directions averaged)."""
    from scipy.cluster.hierarchy import dendrogram

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(related["tasks"]) + 3, 3.2))
    linkage = np.array(related["linkage"])
    dendrogram(linkage, labels=related["tasks"], ax=ax, color_threshold=0)
    top = max(float(linkage[:, 2].max()), 1e-9)
    ax.set_ylim(-0.06 * top, 1.08 * top)  # the first merge sits at 0 by construction: keep it in view
    ax.set_ylabel("relatedness below the most\nrelated pair (share of margin)", fontsize=8)
    stab = related.get("stability")
    title = "Task relatedness (average linkage)"
    if stab:
        title += f"; both halves of the seeds merge first alike in {100 * stab['first_merge_frequency']:.0f}% of splits"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save(fig, path, dpi=110)


def plot_estimates(estimates, real, path) -> None:
    """A column per ordered pair; the first row the real curve (when the sweep ran), the others
    each score's estimate curve, mean over seeds, one line per architecture."""
    plt = pyplot()
    pairs = list(dict.fromkeys(zip(estimates["source"], estimates["target"])))
    archs = sorted(estimates["arch"].unique())
    rows = (["real"] if real is not None and len(real) else []) + list(SCORES)
    fig, axes = plt.subplots(len(rows), len(pairs), figsize=(2.9 * len(pairs) + 0.6, 2.1 * len(rows) + 0.6),
                             squeeze=False, sharex="col")
    real_mean = None if real is None else real.groupby(["arch", "source", "target", "frozen"], as_index=False)["rel"].mean()
    means = estimates.groupby(["arch", "source", "target"] + ["score", "frozen"], as_index=False)["value"].mean()
    for c, (source, target) in enumerate(pairs):
        axes[0, c].set_title(f"{source} → {target}", fontsize=9)
        axes[-1, c].set_xlabel("$l_c$")
        for r, row in enumerate(rows):
            ax = axes[r, c]
            table, column = (real_mean, "rel") if row == "real" else (means[means["score"] == row], "value")
            for j, arch in enumerate(archs):
                g = table[(table["arch"] == arch) & (table["source"] == source) & (table["target"] == target)]
                g = g.sort_values("frozen")
                ax.plot(g["frozen"], g[column], marker="o", ms=2.5, color=cycle_color(j), label=arch)
            if c == 0:
                ax.set_ylabel(ESTIMATE_LABELS[row], fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, path, dpi=100)
