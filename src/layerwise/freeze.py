"""`layerwise freeze`: the practitioner's question in one command.

    layerwise freeze --model model.safetensors --arch alexnet-small --data printed-digits

takes a trained network as the given primary (`given.py`), transfers it to the data at every
`l_c`, trains the data's baseline from scratch with the same budget, writes the usual run directory
(curves.csv holds the curve and its baseline, freezable.csv and observations.json the advice,
report.html all of it) and prints the advice: how many leading layers can be held constant
without losing more than the tolerance against training from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Union

from .config import Config, overridden
from .errors import UserError
from .nets.cuts import CUTS
from .search import levels_text, untrained_text
from .tasks import TASKS
from .tasks.files import data_table

ADVICE_FILE = "advice.txt"


def freeze_config(model: Optional[str], arch: Optional[str], data: str, cuts: Optional[Union[str, List[str]]], classes: Optional[int],
                  name: Optional[str], seeds: int, overrides: List[str]) -> Config:
    """The experiment `layerwise freeze` runs: the given primary into one task, `seeds` seeds."""
    hf_model = model is not None and Path(model).expanduser().is_dir()  # a save_pretrained directory
    if not arch and not hf_model:
        raise UserError("--arch is required: a registered architecture or package.module:function (only a saved "
                        "Hugging Face model directory as --model needs none)")
    primary = {"arch": arch} if arch else {}
    if model is not None:
        primary["checkpoint"] = str(Path(model).expanduser().resolve())
    if cuts and len(cuts) == 1 and cuts[0] in CUTS:
        cuts = cuts[0]  # a family's cut list
    for key, value in (("cuts", cuts), ("classes", classes), ("name", name)):
        if value is not None:
            primary[key] = value
    label = name or (Path(model).expanduser().resolve().name if hf_model else Path(model).stem if model
                     else arch.rpartition(":")[2])
    task, files = data_task(data)
    raw = {"name": f"freeze-{label}-{task}", "tasks": [task], "seeds": list(range(seeds)), "primary": primary,
           "description": f"What to freeze of {label} ({arch or 'Hugging Face'}) for {task}", "data": files}
    return overridden(raw, overrides, "layerwise freeze")


def data_task(data: str):
    """`--data` as a task name and its [data] table: a registered task's name as it is, else a
    file or folder of your own (an image folder, arrays, an audio folder: tasks/files.py), named
    after it, its kind told by its content."""
    if data in TASKS:
        return data, {}
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"--data {data!r} is neither a registered task ({', '.join(sorted(TASKS))}) nor a file or "
                        "folder: an image folder (<class>/*.png), a .npz file or folder of .npy arrays, an "
                        "audio folder (<class>/*.wav), or a text file (.csv, .tsv, .jsonl)")
    name, table = data_table(path)
    return name, {name: table}


def advice(out: Path, baseline: bool = True) -> List[str]:
    """One sentence per (architecture, primary, secondary) from the run's observations.json;
    `baseline` False: the config stated that no baseline trains, so there is nothing to advise."""
    obs = json.loads((out / "observations.json").read_text())
    if not baseline:
        obs = {**obs, "what_to_freeze": [], "notes": ["no baseline: [primary] baseline = false, so no transfer is "
                                                      f"compared with training from scratch; each l_c's metric is in "
                                                      f"{out / 'results.csv'}"]}
    metrics = {(p["arch"], p["source"], p["target"]): p["metric"] for p in obs["curves"]}
    lines = []
    for w in obs["what_to_freeze"]:
        pair = f"{w['source']} → {w['target']} ({w['arch']}, L_H = {w['num_layers']})"
        metric = metrics.get((w["arch"], w["source"], w["target"]), "the metric")
        lines.append(f"{pair}: " + advice_sentence(w, metric))
    if not lines:
        lines.append("no advice: " + ("; ".join(obs["notes"]) or "no transfer finished"))
    if obs.get("search"):
        lines.append(search_sentence(obs["search"]))
    (out / ADVICE_FILE).write_text("\n".join(lines) + "\n")
    return lines


def search_sentence(s: dict) -> str:
    """What an adaptive search trained, stopped early and skipped, and what that cost."""
    parts = []
    for c in s["curves"]:
        stopped = "; ".join(f"l_c = {k} stopped early for seed {p['seed']} after epoch {p['epoch']} of {s['epochs']}"
                            for k, ps in c["pruned"].items() for p in ps)
        unneeded = untrained_text(c)
        parts.append(f"{c['source']} → {c['target']} ({c['arch']}): trained l_c {levels_text(list(c['trained']))}"
                     + (f" ({stopped})" if stopped else "")
                     + (f" (not needed, since whatever they gave could not show their l_c safe: {unneeded})" if unneeded else "")
                     + f", skipped {levels_text(c['skipped'])}")
    cost = "" if s["fraction"] is None else f"; the transfers cost {100 * s['fraction']:.0f}% of a full sweep's"
    return ("adaptive search (--search full trains every l_c): " + "; ".join(parts) + cost +
            ". Skipped l_c are not in curves.csv.")


def _needed(w: dict) -> str:
    """How many seeds would decide the l_c that stopped the advice, from the observed seed variance."""
    if w.get("stopped_at") is None:
        return ""
    if w.get("stopped_early"):
        return (f"; l_c = {w['stopped_at']} was stopped early by the adaptive search: a transfer of it could not come "
                "within the tolerance")
    if w.get("seeds", 0) < 2:
        return f"; one seed gives no interval: run at least 3 seeds (--seeds) to decide l_c = {w['stopped_at']}"
    n = w.get("seeds_needed")
    if n is None:
        return (f"; l_c = {w['stopped_at']} is not shown safe, and with its observed mean and seed spread even "
                f"{w.get('seeds_cap', 100)} seeds would not show it (its loss looks like the tolerance or more)")
    return (f"; to decide l_c = {w['stopped_at']} you would need about {n} seeds (80% power, if its observed mean "
            f"and seed spread are the truth; this run has {w['seeds']})")


def advice_sentence(w: dict, metric: str) -> str:
    """The advice for one curve, as strong as the equivalence rule allows and no stronger."""
    tolerance = w["tolerance"]
    points = f"{tolerance:g} point{'' if tolerance == 1 else 's'} of {metric}"
    if w["frozen"] < 0:
        return (f"no l_c can be shown safe (l_c = -1): not even fine-tuning every layer (l_c = 0) is shown to lose less than "
                f"{points} against training from scratch, on the validation split{_needed(w)}")
    test = w.get("test_value") or {}
    gain = w.get("test_gain") or {}
    at_test = (f"; test {metric} there {test['mean']:.2f} ({gain['mean']:+.2f} points against the baseline)"
               if test.get("mean") is not None and gain.get("mean") is not None else "")
    alpha = w.get("alpha", 0.05)
    return (f"freeze the first {w['frozen']} of {w['num_layers']} body layers (l_c = {w['frozen']}): every l_c up to "
            f"it is shown to lose less than {points} against training from scratch (one-sided {100 * (1 - alpha):g}% "
            f"bound over seeds, tested in order from l_c = 0, on the validation split){at_test}"
            + ("" if w.get("stopped_at") is None else _needed(w)))
