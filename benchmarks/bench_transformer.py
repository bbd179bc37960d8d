"""The whole `layerwise freeze` sweep of a ViT-Tiny-shaped transformer, with and without the prefix
cache: seconds in all and per l_c, and the memory the cache takes.

    python benchmarks/bench_transformer.py [--images 300] [--epochs 2] [--quick] [--keep DIR]

The model is ViT-Tiny's shape (12 blocks, width 192, 3 heads, MLP 768) on 32 x 32 images in 4 x 4
patches (65 tokens), with random weights saved by save_pretrained (its weights do not change the
cost); the data is a few hundred generated images in 5 classes. One seed: a baseline and l_c =
0..13 (the stem and 12 blocks). Each sweep runs from a fresh run directory as a user runs it
(`layerwise freeze --model DIR --data PATH`, default workers and threads); per l_c is the `seconds`
its record holds (training and evaluation). `--quick` is a 2-block, width-32 model on 60 images
for one epoch: a check that the benchmark runs, not a figure.

It prints the machine beside the figures (cores, CPU model, load average before each run): timings
from a loaded machine are not comparable.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_demo import cpu_model  # noqa: E402


def save_model(folder: Path, blocks: int, width: int, heads: int) -> None:
    import torch
    import transformers

    config = transformers.ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=width,
                                    num_hidden_layers=blocks, num_attention_heads=heads, intermediate_size=4 * width,
                                    num_labels=10)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)


def save_images(folder: Path, count: int, classes: int = 5) -> None:
    """Coloured stripes of a class's angle with noise: learnable, not trivial."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(count):
        c = i % classes
        angle = np.pi * c / classes
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.6 + rng.uniform(0, 2 * np.pi))
        pixels = (stripes[..., None] * 60 + 128 + rng.normal(0, 30, (32, 32, 3))).clip(0, 255).astype("uint8")
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.png")


def sweep(model: Path, data: Path, out: Path, epochs: int, cache: bool):
    """Wall seconds of one freeze sweep, and {l_c: seconds} from its records (the baseline as -1)."""
    load = os.getloadavg()[0]
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layerwise", "freeze", "--model", str(model), "--data", str(data),
                    "--seeds", "1", "--set", f"train.epochs={epochs}", "--set", f"train.cache_prefix={str(cache).lower()}",
                    "--out", str(out), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    per = {}
    for path in (out / "jobs").glob("*.json"):
        r = json.loads(path.read_text())
        if r["kind"] in ("transfer", "scratch"):
            per[-1 if r["kind"] == "scratch" else r["frozen"]] = (r["seconds"], bool(r.get("cached_prefix")))
    return wall, per, load


def cache_bytes(model: Path, data: Path) -> int:
    """The memory the prefix cache of one l_c takes on every split of the data (every l_c of a ViT
    keeps the same shape: tokens x width floats per image)."""
    from layerwise import hf
    from layerwise.prefix import PrefixCache
    from layerwise.tasks.files import task_from_path
    from layerwise.train import TrainConfig

    table = hf.data_options(model, "images", {"kind": "image-folder"}, "bench")
    task = task_from_path(data, **{k: v for k, v in table.items() if k != "kind"})
    return PrefixCache(hf.layered(model), task.load(), TrainConfig()).bytes_at(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 2-block, width-32 model on 60 images, one epoch")
    parser.add_argument("--keep", help="copy both run directories here")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.blocks, args.width, args.heads = 60, 1, 2, 32, 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_model(tmp / "vit", args.blocks, args.width, args.heads)
        save_images(tmp / "images", args.images)
        runs = {cache: sweep(tmp / "vit", tmp / "images", tmp / f"cache-{cache}", args.epochs, cache)
                for cache in (False, True)}
        size = cache_bytes(tmp / "vit", tmp / "images")
        if args.keep:
            for cache in runs:
                shutil.copytree(tmp / f"cache-{cache}", Path(args.keep) / f"cache-{cache}", dirs_exist_ok=True)
    print(f"ViT: {args.blocks} blocks, width {args.width}, {args.heads} heads, patch 4 on 32x32; {args.images} images, "
          f"{args.epochs} epochs, 1 seed")
    (plain, plain_per, plain_load), (cached, cached_per, cached_load) = runs[False], runs[True]
    print(f"whole freeze sweep: {plain:.1f} s without the prefix cache, {cached:.1f} s with it ({plain / cached:.2f}x)")
    print("l_c   seconds without   seconds with   (cached)")
    for k in sorted(plain_per):
        name = "base" if k < 0 else str(k)
        print(f"{name:>4}  {plain_per[k][0]:>15.2f}  {cached_per[k][0]:>13.2f}   {'yes' if cached_per[k][1] else 'no'}")
    print(f"prefix cache: {size / 2**20:.1f} MiB for one l_c on all {args.images} images "
          f"({size // args.images:,} bytes per image)")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load average {plain_load:.2f} before the uncached sweep, "
          f"{cached_load:.2f} before the cached one")


if __name__ == "__main__":
    main()
