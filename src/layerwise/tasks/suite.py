"""The embedded, offline task suite: three image tasks of one shape, so every ordered pair transfers.

- `digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), resized.
- `printed-digits`: 0-9 rendered from the TrueType fonts that ship with matplotlib, with random
  affine jitter, stroke width, contrast and noise.
- `printed-letters`: A-Z rendered the same way.

All three are white ink on black, 1 x SIZE x SIZE, standardised with their training split's mean
and standard deviation. Splits are fixed by `split_seed`, not by the run's seed, so every model of
a sweep sees the same examples. Generated images are cached on disk and are the same on every
machine for the same options.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .base import Split, Task, TaskData, data_root

# Fonts shipped with every matplotlib install (mpl-data/fonts/ttf), chosen for distinct styles.
FONTS = [
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
]
RENDER = 64  # glyphs are rendered and jittered at this resolution, then averaged down


def split_indices(n: int, seed: int, fractions=(0.6, 0.2)) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed, seeded permutation cut into train / validation / test."""
    order = np.random.default_rng(seed).permutation(n)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return order[:a], order[a:b], order[b:]


def standardised_splits(images: np.ndarray, labels: np.ndarray, split_seed: int) -> TaskData:
    """Cut (N, 1, H, W) images into splits, standardised by the training split's statistics."""
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    parts = split_indices(len(y), split_seed)
    train = x[parts[0]]
    mean, std = train.mean(), train.std().clamp_min(1e-6)
    make = lambda idx: Split((x[idx] - mean) / std, y[idx])  # noqa: E731
    return TaskData(*(make(torch.as_tensor(p)) for p in parts))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average (down) or bilinear (up) resize of (N, H, W) images to (N, size, size)."""
    t = torch.as_tensor(images, dtype=torch.float32)[:, None]
    if t.shape[-1] >= size:
        out = F.adaptive_avg_pool2d(t, size)
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


@dataclass
class Digits(Task):
    name = "digits"
    description = "scikit-learn's handwritten digits (1,797 real 8x8 scans), resized"
    num_classes = 10
    size: int = 16
    split_seed: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be at least 1; got {self.size}")

    @property
    def input_shape(self):
        return (1, self.size, self.size)

    def load(self, seed: int = 0) -> TaskData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = resize(bunch.images / 16.0, self.size)
        return standardised_splits(images[:, None], bunch.target, self.split_seed)


def render_glyphs(chars: str, fonts=FONTS, size: int = RENDER) -> np.ndarray:
    """(len(fonts), len(chars), size, size) ink coverage in [0, 1], each glyph centred and
    scaled to fit 80% of the square."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out = np.zeros((len(fonts), len(chars), size, size), dtype=np.float32)
    fig = Figure(figsize=(1, 1), dpi=size, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    for i, font in enumerate(fonts):
        prop = FontProperties(fname=str(font_dir / font))
        for j, ch in enumerate(chars):
            path = TextPath((0, 0), ch, size=1, prop=prop)
            box = path.get_extents()
            ax.clear()
            ax.set_axis_off()
            ax.add_patch(PathPatch(path, facecolor="white", edgecolor="none"))
            half = max(box.width, box.height) / 0.8 / 2
            cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(cy - half, cy + half)
            canvas.draw()
            out[i, j] = np.asarray(canvas.buffer_rgba())[:, :, 0] / 255.0
    return out


def jitter(glyph: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random variant of a high-resolution glyph: affine jitter, stroke width, contrast and
    noise, averaged down to size x size."""
    from scipy import ndimage

    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.8, 1.1)
    shear = rng.uniform(-0.2, 0.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.linalg.inv(rot @ np.array([[1, shear], [0, 1]]) * scale)
    centre = (np.array(glyph.shape) - 1) / 2
    shift = rng.uniform(-0.06, 0.06, size=2) * glyph.shape[0]
    offset = centre - matrix @ (centre + shift)
    img = ndimage.affine_transform(glyph, matrix, offset=offset, order=1)
    width = rng.integers(-2, 4)  # thinner or bolder strokes, in render pixels
    if width > 0:
        img = ndimage.grey_dilation(img, size=(width + 1, width + 1))
    elif width < 0:
        img = ndimage.grey_erosion(img, size=(1 - width, 1 - width))
    small = img.reshape(size, img.shape[0] // size, size, img.shape[1] // size).mean(axis=(1, 3))
    small = small * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.15)
    small = small + rng.normal(0, rng.uniform(0.0, 0.08), small.shape)
    return np.clip(small, 0, 1).astype(np.float32)


@dataclass
class Printed(Task):
    """Characters rendered from matplotlib's fonts with random jitter; subclasses set `chars`."""

    chars = ""
    size: int = 16
    per_class: int = 150
    split_seed: int = 0
    root: Optional[str] = None  # cache directory; default $LAYERWISE_DATA/suite or ~/.cache/layerwise/suite

    def __post_init__(self):
        if self.size < 1 or RENDER % self.size:
            sizes = ", ".join(str(d) for d in range(1, RENDER + 1) if RENDER % d == 0)
            raise ValueError(f"size must divide {RENDER}, the resolution glyphs are rendered at ({sizes}); got {self.size}")
        if self.per_class < 1:
            raise ValueError(f"per_class must be at least 1; got {self.per_class}")

    @property
    def input_shape(self):
        return (1, self.size, self.size)

    def cache_file(self) -> Path:
        key = json.dumps({"chars": self.chars, "size": self.size, "per_class": self.per_class,
                          "fonts": FONTS, "version": 1}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return data_root(self.root, "suite") / f"{self.name}-{digest}.npz"

    def generate(self) -> Tuple[np.ndarray, np.ndarray]:
        glyphs = render_glyphs(self.chars)
        # One stream per task, independent of everything else, so the images are reproducible.
        rng = np.random.default_rng(int(hashlib.sha256(self.name.encode()).hexdigest()[:8], 16))
        n = self.per_class * len(self.chars)
        labels = np.repeat(np.arange(len(self.chars)), self.per_class)
        fonts = rng.integers(0, len(FONTS), size=n)
        images = np.stack([jitter(glyphs[f, c], rng, self.size) for f, c in zip(fonts, labels)])
        return images, labels

    def load(self, seed: int = 0) -> TaskData:
        path = self.cache_file()
        if path.exists():
            with np.load(path) as f:
                images, labels = f["images"], f["labels"]
        else:
            images, labels = self.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez_compressed(tmp, images=images, labels=labels)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
        return standardised_splits(images[:, None], labels, self.split_seed)


@dataclass
class PrintedDigits(Printed):
    name = "printed-digits"
    description = "digits 0-9 rendered from matplotlib's fonts with random jitter"
    chars = "0123456789"
    num_classes = 10


@dataclass
class PrintedLetters(Printed):
    name = "printed-letters"
    description = "letters A-Z rendered from matplotlib's fonts with random jitter"
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    num_classes = 26
