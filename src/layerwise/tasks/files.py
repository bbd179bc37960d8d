"""Tasks from your own files, defined in a config without Python: an image folder, arrays, or an
audio folder.

    tasks = ["digits", "flowers"]

    [data.flowers]
    kind = "image-folder"        # or "arrays", "audio-folder"
    path = "data/flowers"        # relative to the config file
    shape = [1, 16, 16]          # images are converted and resized to it

After that `flowers` is a task name like any registered one. Every kind takes `fractions`
(train, validation, test; default [0.6, 0.2, 0.2]) and `split_seed` for the splits it makes, and
`classes`: the class names you expect, checked against the files (a run's config.json records
the classes it found this way).

- `image-folder`: `path/<class>/*.png|jpg|jpeg|bmp|gif|webp|tif|tiff` (a GIF's or TIFF's first frame). `shape` = [C, H, W] (C = 1 grey, 3 colour) or
  [H, W] (channels as the files have them), or unset: then every image must already have the
  same size and channels. `mode` ("L" or "RGB") converts without giving a shape. Images are kept
  as bytes and standardised per channel by the training split's statistics.
- `arrays`: a `.npz` file, or a folder of `.npy` files, holding `x` and `y` (split here) or
  `x_train`, `y_train`, `x_test`, `y_test` and optionally `x_val`, `y_val`. Labels are integers
  or strings; the class names are their sorted values. `x` is used as given (scale it yourself).
- `audio-folder`: `path/<class>/*.wav`. Examples are windows of `context` log-mel frames (the
  speech tasks' features, cached the same way) every `hop` frames, labelled with their file's
  class; a file is predicted from its windows' averaged posteriors, and accuracy counts files.

Folders may instead hold `train/`, `test/` and optionally `val/`, each with the class folders;
a missing `val/` is held out of `train/` in the ratio of the first two fractions. Otherwise each
class is shuffled by `split_seed` and cut in the fractions, so every split keeps the classes'
proportions. Splits never depend on the run's seed: every model of a sweep sees the same ones.

A task's identity (and so every job key) holds a digest of its files' content, names and
classes, not their place: a changed folder gives new jobs, a moved one reruns nothing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..audio import FeatureMatrix, LogMel, cached_features, read_audio
from ..bundle import Bundle
from ..errors import UserError, warn
from ..hashing import file_hash
from ..options import check_dataclass_options
from . import TASKS
from .base import Split, Task, TaskData, data_root
from .images import Images, channel_stats
from .speech import check_windows, utterance_posteriors, window_split

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # what Pillow reads (a first frame)
AUDIO_SUFFIXES = (".wav",)
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")  # kind "text" (tasks/text.py)
INPUTS = ("log-mel", "waveform")  # what an audio folder gives a network
MODES = {"L": 1, "RGB": 3}
GREY = {"1", "L", "LA", "I", "I;16", "F"}  # Pillow modes without colour
EXPECTED = ("a text file (.csv, .tsv, .jsonl, or a folder of train.*, test.*), an image folder (DIR/<class>/*.png|jpg|bmp|gif|webp|tif...), an audio folder (DIR/<class>/*.wav), either "
            "optionally under DIR/train/, DIR/val/, DIR/test/; a .npz file with x and y (or x_train, y_train, "
            "x_test, y_test); or a folder of such .npy files")


# --- folders of class folders -------------------------------------------------------------------

def _entries(folder: Path) -> List[Path]:
    """What a folder holds, sorted, without hidden entries (.DS_Store, ._ copies)."""
    try:
        return sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    except OSError as err:
        raise UserError(f"cannot read the folder {folder}: {err.strerror}") from None


def class_files(folder: Path, suffixes: Tuple[str, ...]) -> Dict[str, List[Path]]:
    """Class name -> its files (sorted) from `folder/<class>/*<suffix>`."""
    pattern = f"{folder}/<class>/*{'|'.join(suffixes)}"
    loose = [e for e in _entries(folder) if e.is_file() and e.suffix.lower() in suffixes]
    if loose:
        raise UserError(f"{loose[0]} lies directly in {folder}; expected each file in its class's folder: {pattern}")
    classes = {}
    for sub in (e for e in _entries(folder) if e.is_dir()):
        files = [e for e in _entries(sub) if e.is_file() and e.suffix.lower() in suffixes]
        if not files:
            raise UserError(f"the class folder {sub} holds no {'|'.join(suffixes)} files; expected {pattern} "
                            "(remove the folder if the class is not wanted)")
        classes[sub.name] = files
    if not classes:
        raise UserError(f"{folder} holds no class folders; expected {pattern}")
    return classes


def folder_layout(root: Path, suffixes: Tuple[str, ...]) -> Dict[str, Dict[str, List[Path]]]:
    """{"all": classes} for `root/<class>/`, or {"train": .., "test": .., ["val": ..]} when `root`
    holds split folders; the splits must have the same classes."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; expected {root}/<class>/*{'|'.join(suffixes)}")
    names = {e.name for e in _entries(root) if e.is_dir()}
    if "train" not in names:
        return {"all": class_files(root, suffixes)}
    if names - set(SPLITS) or "test" not in names:
        raise UserError(f"{root} holds train/, so it must hold train/, test/ and optionally val/ and nothing else "
                        f"(each with the class folders); it holds {', '.join(sorted(names))}")
    layout = {s: class_files(root / s, suffixes) for s in SPLITS if s in names}
    check_same_classes({s: list(c) for s, c in layout.items()}, str(root))
    return layout


def check_same_classes(found: Dict[str, List[str]], where: str) -> None:
    """Every split has the training split's classes: a class seen in one split only would be
    trained but never tested, or tested but never trained."""
    train = set(found["train"])
    problems = []
    for split, classes in found.items():
        lacks, extra = sorted(train - set(classes)), sorted(set(classes) - train)
        if lacks:
            problems.append(f"{split} lacks {', '.join(lacks)}")
        if extra:
            problems.append(f"{split} has {', '.join(extra)}, which train lacks")
    if problems:
        raise UserError(f"{where}: the splits' classes differ ({'; '.join(problems)}); every split needs the same classes")


def warn_classes_missing(path: str, classes: List[str], labels: List[np.ndarray]) -> None:
    """Say which class has no example in which split (a class too small for the fractions): it is
    then never validated or tested, or never trained, and the split's score says nothing of it."""
    for split, part in zip(SPLITS, labels):
        absent = [c for i, c in enumerate(classes) if not (part == i).any()]
        if absent:
            warn(f"{path}: class{'es' if len(absent) > 1 else ''} {', '.join(absent)} ha{'ve' if len(absent) > 1 else 's'} "
                 f"no examples in the {split} split; add examples or change the option fractions")


def stratified_split(labels: np.ndarray, fractions, seed: int) -> List[np.ndarray]:
    """Indices of each part: each class is shuffled by `seed` and cut in `fractions`, so every
    part keeps the classes' proportions (up to rounding)."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(fractions)[:-1] / np.sum(fractions)
    parts: List[List[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        for part, chunk in zip(parts, np.split(members, np.round(cuts * len(members)).astype(int))):
            part.append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


# --- the tasks -----------------------------------------------------------------------------------

@dataclass
class FileTask(Task):
    """What the three kinds share: a path, the class names, how splits are made, and a content
    digest for the identity. Subclasses find their examples in `__post_init__` (so a bad folder
    is reported when the config is read, before any training) and read them in `load`."""

    kind: ClassVar[str] = ""
    INCIDENTAL: ClassVar[Tuple[str, ...]] = ("path", "cache")
    path: str = ""  # absolute, once read from a config
    fractions: List[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # train, val, test
    split_seed: int = 0
    classes: Optional[List[str]] = None  # as given: checked against the files; then the classes found

    def __post_init__(self):
        if not self.path:
            raise ValueError("path must name the data's file or folder")
        numbers = all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in self.fractions)
        if len(self.fractions) != 3 or not numbers or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three positive numbers (train, val, test) adding to 1; got {self.fractions}")
        self._digest: Optional[str] = None
        self._data: Optional[TaskData] = None

    def found(self, classes: List[str], what: str) -> None:
        """Keep the classes found, after checking them against those the config names."""
        if self.classes is not None and [str(c) for c in self.classes] != list(classes):
            raise UserError(f"{self.path} holds the classes {', '.join(classes)}; the config expects "
                            f"{', '.join(map(str, self.classes))} (option classes)")
        self.classes, self.num_classes = list(classes), len(classes)
        self.description = f"{what} {self.path}: {len(classes)} classes ({', '.join(classes)})"

    def table(self) -> Dict[str, Any]:
        """The config table that makes this task again (what config.json records)."""
        return {"kind": self.kind, **self.options()}

    def content(self) -> Iterator[bytes]:
        """What the examples and labels are made of, piece by piece, for the digest."""
        raise NotImplementedError

    def identity(self) -> Dict[str, Any]:
        if self._digest is None:
            h = hashlib.sha256()
            for piece in self.content():
                h.update(hashlib.sha256(piece).digest())
            self._digest = h.hexdigest()[:16]
        options = {k: v for k, v in self.options().items() if k not in self.INCIDENTAL}
        return {"name": self.name, "kind": self.kind, **options, "data": self._digest}

    def three_way(self, labels: Dict[str, np.ndarray], what: str) -> List[Tuple[str, np.ndarray]]:
        """Where the train, validation and test examples come from, as (given split, indices into
        it), from the labels of the splits the data comes in: "all" is cut in `fractions`, each
        class apart; a train split without val gives up val in the first two fractions; train, val
        and test are taken as they are. An empty split is refused, naming the data's path."""
        if "all" in labels:
            parts = [("all", part) for part in stratified_split(labels["all"], self.fractions, self.split_seed)]
        elif "val" in labels:
            parts = [(name, np.arange(len(labels[name]))) for name in SPLITS]
        else:
            keep, held = stratified_split(labels["train"], self.fractions[:2], self.split_seed)
            parts = [("train", keep), ("train", held), ("test", np.arange(len(labels["test"])))]
        total = sum(len(y) for y in labels.values())
        for name, (_, part) in zip(SPLITS, parts):
            if len(part) == 0:
                raise UserError(f"{self.path}: the {name} split has no {what} ({total} {what} in all, fractions "
                                f"{self.fractions}); add {what} or change the option fractions")
        warn_classes_missing(self.path, self.classes, [labels[name][part] for name, part in parts])
        return parts

    def available(self) -> bool:
        """Whether every file reads. A sweep asks before its first job and, on False, loads the
        task to report what is wrong, so a bad file stops it before any training."""
        try:
            self.load()
        except UserError:
            return False
        return True

    def __getstate__(self):
        """What another process is sent (a worker of the local executor): the task without the
        data read here, which it reads for itself, once."""
        return {**self.__dict__, "_data": None}

    def load(self, seed: int = 0) -> TaskData:
        """The splits, read once per process (they do not depend on the run's seed)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def read(self) -> TaskData:
        raise NotImplementedError


@dataclass
class FolderTask(FileTask):
    """A folder of class folders (or of split folders holding them)."""

    suffixes: ClassVar[Tuple[str, ...]] = ()
    what: ClassVar[str] = ""

    def __post_init__(self):
        super().__post_init__()
        layout = folder_layout(Path(self.path), self.suffixes)
        self.found(sorted(next(iter(layout.values()))), self.what)
        index = {c: i for i, c in enumerate(self.classes)}
        # Every file once, in split, class and name order, with its class index and its split.
        self.paths = [f for part in layout.values() for c in self.classes for f in part[c]]
        self.labels = np.array([index[c] for part in layout.values() for c in self.classes for _ in part[c]], dtype=np.int64)
        self.parts = np.array([s for s, part in layout.items() for c in self.classes for _ in part[c]])
        self.description += f", {len(self.paths)} files"

    def content(self) -> Iterator[bytes]:
        """Each file's place under the root (its split and class) and its bytes' hash."""
        for p in self.paths:
            yield p.relative_to(self.path).as_posix().encode() + b"\0" + file_hash(p)

    def split_indices(self) -> List[np.ndarray]:
        """Train, validation and test indices into `self.paths`."""
        given = {"all": np.arange(len(self.paths))}
        if "train" in self.parts:  # the folder's own split folders; no val/ means val is held out of train/
            given = {name: np.flatnonzero(self.parts == name) for name in SPLITS if name != "val" or name in self.parts}
        return [given[name][part] for name, part in self.three_way({k: self.labels[v] for k, v in given.items()}, "files")]


def native_mode(mode: str) -> str:
    return "L" if mode in GREY else "RGB"


def eight_bit(img):
    """A 16-bit grey image (PNG's, which Pillow opens as I;16 or I) scaled to 8 bits: Pillow's
    own conversion to L clips every value above 255 to white."""
    from PIL import Image

    if not img.mode.startswith("I"):
        return img
    pixels = np.asarray(img).astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "L")


def read_image(path: Path, mode: Optional[str], size: Optional[Tuple[int, int]]) -> np.ndarray:
    """(C, H, W) uint8 pixels of one file, turned upright by its EXIF orientation, converted to
    `mode` (else grey or RGB as the file is) and resized to `size` (H, W) when given."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img = eight_bit(ImageOps.exif_transpose(img))
            img = img.convert(mode or native_mode(img.mode))
            if size is not None:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: cannot read image ({err}); expected an image file Pillow reads (PNG, JPEG, BMP, GIF, WebP, TIFF)") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


@dataclass
class ImageFolder(FolderTask):
    kind = "image-folder"
    suffixes = IMAGE_SUFFIXES
    what = "image folder"
    shape: Optional[List[int]] = None  # [C, H, W] or [H, W]; unset: as the files are, all alike
    mode: Optional[str] = None  # "L" or "RGB"; unset: from shape's C, else as each file is
    mean: Optional[List[float]] = None  # per channel, pixels scaled to 0..1 (a Hugging Face image processor's
    std: Optional[List[float]] = None  # image_mean and image_std); unset: the training split's statistics

    def __post_init__(self):
        if self.shape is not None and (len(self.shape) not in (2, 3) or
                                       not all(isinstance(n, int) and n > 0 for n in self.shape)):
            raise ValueError(f"shape must be [C, H, W] or [H, W] in positive integers; got {self.shape}")
        if self.shape is not None and len(self.shape) == 3 and self.shape[0] not in MODES.values():
            raise ValueError(f"shape [C, H, W] must have C = 1 (grey) or 3 (colour); got {self.shape}")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.mode is not None and self.shape is not None and len(self.shape) == 3 and MODES[self.mode] != self.shape[0]:
            raise ValueError(f"mode {self.mode!r} has {MODES[self.mode]} channel(s), but shape {self.shape} asks for {self.shape[0]}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, list) or not value or
                                      not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{key} must be a list of numbers, one per channel; got {value!r}")
        if (self.mean is None) != (self.std is None) or (self.std is not None and min(self.std) <= 0):
            raise ValueError(f"mean and std go together (std positive); got mean = {self.mean}, std = {self.std}")
        super().__post_init__()

    def pixel_mode(self) -> Optional[str]:
        if self.mode is None and self.shape is not None and len(self.shape) == 3:
            return {n: m for m, n in MODES.items()}[self.shape[0]]
        return self.mode

    @property
    def input_shape(self):
        if self.shape is not None and self.pixel_mode() is not None:
            return (MODES[self.pixel_mode()], *self.shape[-2:])
        return tuple(self.load().train.x.shape[1:])  # the files say: read them

    def read(self) -> TaskData:
        from tqdm import tqdm

        size = None if self.shape is None else tuple(self.shape[-2:])
        images, first = [], None
        for path in tqdm(self.paths, desc=f"{self.name}: reading images (once)", unit="img", file=sys.stderr,
                         disable=len(self.paths) < 1000):
            pixels = read_image(path, self.pixel_mode(), size)
            if first is None:
                first = (path, pixels.shape)
            elif pixels.shape != first[1]:
                raise UserError(f"{path} is {'x'.join(map(str, pixels.shape))} (channels x height x width) but "
                                f"{first[0]} is {'x'.join(map(str, first[1]))}; set the option shape = [C, H, W] "
                                "to convert and resize every image to one shape")
            images.append(pixels)
        x, y = torch.from_numpy(np.stack(images)), torch.from_numpy(self.labels)
        parts = [torch.from_numpy(p) for p in self.split_indices()]
        mean, std = channel_stats(x[parts[0]])
        if self.mean is not None:  # the model's own normalisation, given for pixels scaled to 0..1
            if len(self.mean) not in (1, x.shape[1]) or len(self.std) not in (1, x.shape[1]):
                raise UserError(f"[data.{self.name}]: mean and std need one value per channel ({x.shape[1]}); got "
                                f"mean = {self.mean}, std = {self.std}")
            mean = torch.tensor(self.mean, dtype=torch.float32).expand(x.shape[1]) * 255
            std = torch.tensor(self.std, dtype=torch.float32).expand(x.shape[1]) * 255
        return TaskData(*(Split(Images(x[p], mean, std), y[p]) for p in parts))


@dataclass
class AudioFolder(FolderTask):
    kind = "audio-folder"
    suffixes = AUDIO_SUFFIXES
    what = "audio folder"
    context: int = 21  # frames per window (odd), centred on the frame it stands for
    hop: int = 1  # a window every `hop` frames
    n_mels: int = 40
    sample_rate: int = 16000  # log-mel: every file must have it; waveform: files at other rates are resampled
    cache: Optional[str] = None  # feature cache folder; default $LAYERWISE_DATA/cache or ~/.cache/layerwise/cache
    input: str = "log-mel"  # "log-mel" windows, or "waveform": raw samples for wav2vec2 and HuBERT
    seconds: float = 2.0  # waveform: each file is cut into pieces this long, the last padded (with a mask)
    normalize: bool = False  # waveform: each piece to zero mean and unit variance (wav2vec2's feature extractor)

    def __post_init__(self):
        check_windows(self.context, hop=self.hop, n_mels=self.n_mels, sample_rate=self.sample_rate)
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {', '.join(INPUTS)}; got {self.input!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise ValueError(f"seconds must be a positive number; got {self.seconds!r}")
        super().__post_init__()

    @property
    def samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def input_shape(self):
        return (self.samples,) if self.input == "waveform" else (1, self.n_mels, self.context)

    def example(self):
        """One input of the task's shape, for checking a network takes it before training."""
        if self.input != "waveform":
            return torch.zeros(1, *self.input_shape)
        return Bundle(input_values=torch.zeros(1, self.samples), attention_mask=torch.ones(1, self.samples, dtype=torch.long))

    def read(self) -> TaskData:
        if self.input == "waveform":
            return self.read_waveforms()
        found = cached_features(self.paths, LogMel(sample_rate=self.sample_rate, n_mels=self.n_mels),
                                data_root(self.cache, "cache"), "audio-folder", f"[data.{self.name}] cache")
        matrix = FeatureMatrix(torch.from_numpy(found.feats))
        splits = []
        for part in self.split_indices():
            examples = []
            for u in part:
                frames = np.arange(0, found.offsets[u + 1] - found.offsets[u], self.hop)
                examples.append((int(u), frames, np.full(len(frames), self.labels[u])))
            splits.append(window_split(matrix, found.offsets, examples, self.context // 2))
        return TaskData(*splits)

    def read_waveforms(self) -> TaskData:
        """Each file as pieces of `seconds` (the last padded, its mask marking the samples), at
        `sample_rate`: a file at another rate is resampled (a polyphase filter, scipy's
        resample_poly). Its pieces share its group, so a file is scored by their mean posterior."""
        pieces = [waveform_pieces(p, self.sample_rate, self.samples, self.normalize) for p in self.paths]
        splits = []
        for part in self.split_indices():
            files = [int(u) for u in part]
            waves = torch.cat([pieces[u][0] for u in files])
            masks = torch.cat([pieces[u][1] for u in files])
            counts = torch.tensor([len(pieces[u][0]) for u in files])
            y = torch.from_numpy(self.labels[files]).repeat_interleave(counts)
            groups = torch.tensor(files).repeat_interleave(counts)
            splits.append(Split(Bundle(input_values=waves, attention_mask=masks), y, groups))
        return TaskData(*splits)

    def score(self, logits: torch.Tensor, split: Split) -> Dict[str, float]:
        """Accuracy over files: each file's class is the argmax of its windows' mean posterior."""
        if len(split) == 0:
            return {"accuracy": 0.0, "error": 100.0}
        _, inverse, posteriors = utterance_posteriors(logits, split.groups)
        truth = torch.zeros(len(posteriors), dtype=torch.long, device=split.y.device)
        truth[inverse] = split.y
        acc = (posteriors.argmax(1) == truth).float().mean().item() * 100
        return {"accuracy": acc, "error": 100 - acc}


def waveform_pieces(path: Path, rate: int, length: int, normalize: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """A file's samples at `rate` cut into pieces of `length` (the last zero-padded, unless it is
    under a tenth of a piece and not the only one) and their masks (1 for a real sample)."""
    from math import gcd

    from scipy.signal import resample_poly

    signal, found = read_audio(path)
    if found != rate:
        common = gcd(int(found), int(rate))
        signal = resample_poly(signal, rate // common, int(found) // common)
    signal = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    starts = list(range(0, max(len(signal), 1), length))
    if len(starts) > 1 and len(signal) - starts[-1] < length // 10:
        starts.pop()
    waves = torch.zeros(len(starts), length)
    masks = torch.zeros(len(starts), length, dtype=torch.long)
    for i, start in enumerate(starts):
        piece = signal[start:start + length]
        if normalize and len(piece) > 1:
            piece = (piece - piece.mean()) / torch.sqrt(piece.var(unbiased=False) + 1e-7)
        waves[i, :len(piece)], masks[i, :len(piece)] = piece, 1
    return waves, masks


def label_values(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as the class names they stand for: strings as they are, integers written out."""
    if y.ndim != 1:
        raise UserError(f"{where} has shape {y.shape}; expected one label per example (a 1-D array)")
    if y.dtype.kind in "US":
        return y.astype(str)
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    raise UserError(f"{where} holds {y.dtype} values; expected class labels, integers or strings "
                    "(convert with y.astype(int) or y.astype(str))")


@dataclass
class Arrays(FileTask):
    """Arrays x (N, ...) and y (N,), in one .npz file or as .npy files in a folder."""

    kind = "arrays"

    def __post_init__(self):
        super().__post_init__()
        self.arrays = self.read_arrays()
        named = {s: label_values(y, self.source("y" if s == "all" else f"y_{s}")) for s, (_, y) in self.arrays.items()}
        if "train" in named:
            check_same_classes({s: [str(v) for v in np.unique(y)] for s, y in named.items()}, self.path)
        values = np.unique(np.concatenate(list(named.values())))  # sorted: by number, or by name
        self.found([str(v) for v in values], "arrays")
        self.labels = {s: np.searchsorted(values, y) for s, y in named.items()}
        shapes = {s: x.shape[1:] for s, (x, _) in self.arrays.items()}
        if len(set(shapes.values())) > 1:
            raise UserError(f"{self.path}: the splits' x differ in shape per example ({shapes}); expected one shape")
        self.description += f", {sum(len(y) for y in self.labels.values())} examples"

    def source(self, key: str) -> str:
        """How a message names one array."""
        return f"{self.path} [{key}]" if self.path.endswith(".npz") else str(Path(self.path) / f"{key}.npy")

    def read_arrays(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """{"all": (x, y)} or {"train": .., "test": .., ["val": ..]}, each x and y checked."""
        path = Path(self.path)
        if path.is_dir():
            stored = {p.stem: p for p in _entries(path) if p.suffix == ".npy"}
            arrays = {k: read_npy(stored[k]) for k in wanted(stored, path)}
        else:
            arrays = read_npz(path)
        splits = ["all"] if "x" in arrays else [s for s in SPLITS if f"x_{s}" in arrays]
        out = {}
        for s in splits:
            xk, yk = ("x", "y") if s == "all" else (f"x_{s}", f"y_{s}")
            x, y = arrays[xk], arrays[yk]
            if x.dtype.kind not in "biuf" or x.ndim < 2:
                raise UserError(f"{self.source(xk)} holds {x.dtype} of shape {x.shape}; expected numbers, one row "
                                "per example: shape (N, ...) with at least one value per example")
            if len(x) != len(y):
                raise UserError(f"{self.source(xk)} has {len(x)} examples but {self.source(yk)} has {len(y)} labels")
            check_finite(x, self.source(xk))
            out[s] = (x, y)
        return out

    def content(self) -> Iterator[bytes]:
        """The arrays themselves (not the file, whose zip headers hold times)."""
        for split, (x, y) in self.arrays.items():
            for a in (x, y):
                yield f"{split} {a.dtype.str} {a.shape}".encode()
                yield np.ascontiguousarray(a).tobytes()

    @property
    def input_shape(self):
        return tuple(next(iter(self.arrays.values()))[0].shape[1:])

    def read(self) -> TaskData:
        x = {s: torch.as_tensor(a, dtype=torch.float32) for s, (a, _) in self.arrays.items()}
        y = {s: torch.from_numpy(labels) for s, labels in self.labels.items()}
        parts = self.three_way(self.labels, "examples")
        splits = [Split(x[name][index], y[name][index]) for name, index in
                  ((name, torch.from_numpy(part)) for name, part in parts)]
        return TaskData(*splits)


def check_finite(x: np.ndarray, where: str) -> None:
    """Refuse NaN, inf and values float32 cannot hold: in training data they read as a divergence
    ("try a lower lr"), in a val or test split they are scored as errors without a word."""
    if x.dtype.kind != "f":
        return
    rows = x.reshape(len(x), -1)
    bad = ~(np.isfinite(rows) & (np.abs(rows) <= np.finfo(np.float32).max)).all(axis=1)
    if bad.any():
        raise UserError(f"{where} holds NaN, inf or values beyond float32 in {int(bad.sum())} example(s) (the first "
                        f"is row {int(np.argmax(bad))}); expected finite numbers: drop or fill those rows")


def wanted(keys, path: Path) -> List[str]:
    """The array names a task reads: x and y, or x_/y_ train, val, test; any other mix is an error."""
    keys = set(keys)
    if "x_train" in keys and "x" in keys:
        raise UserError(f"{path} holds both x and x_train; expected either x and y (split here) or the splits")
    pairs = [("x", "y")] if "x" in keys else [(f"x_{s}", f"y_{s}") for s in SPLITS if f"x_{s}" in keys or s != "val"]
    missing = [k for pair in pairs for k in pair if k not in keys]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (it holds {', '.join(sorted(keys)) or 'nothing'}); expected "
                        "x and y, or x_train, y_train, x_test, y_test and optionally x_val, y_val")
    return [k for pair in pairs for k in pair]


def numpy_error(path: Path, err: Exception) -> UserError:
    hint = ("save labels as plain strings or integers (np.array(labels, dtype=str)), not Python objects"
            if "pickle" in str(err) else f"expected {EXPECTED}")
    return UserError(f"{path}: cannot read the arrays ({err}); {hint}")


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise numpy_error(path, err) from None


def read_npz(path: Path) -> Dict[str, np.ndarray]:
    """The arrays a task reads from a .npz file (a zip of .npy files)."""
    if not path.exists():
        raise UserError(f"{path} does not exist; expected {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a .npz file (not a zip archive of .npy files); expected {EXPECTED}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in wanted(f.files, path)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise numpy_error(path, err) from None


KINDS = {cls.kind: cls for cls in (ImageFolder, Arrays, AudioFolder)}


# --- from a config, or from a path alone ---------------------------------------------------------

def make_file_task(cls, name: str, options: Dict[str, Any], where: str) -> FileTask:
    check_dataclass_options(cls, options, f"key for kind {cls.kind!r}:", where)
    try:
        task = cls(**options)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None
    task.name = name
    return task


def data_tasks(tables: Any, base: Path, where: str) -> Dict[str, FileTask]:
    """The tasks of a config's `[data.NAME]` tables, paths taken relative to `base` (the config
    file's folder)."""
    if not isinstance(tables, dict):
        raise UserError(f"{where}: data must be a table of tables, [data.NAME] with kind and path")
    tasks = {}
    for name, table in tables.items():
        at = f"{where} [data.{name}]"
        if name in TASKS:
            raise UserError(f"{at}: {name!r} is a registered task; give your data another name")
        if not isinstance(table, dict):
            raise UserError(f"{at} must be a table with kind and path")
        options = dict(table)
        kind = options.pop("kind", None)
        if kind not in KINDS:
            raise UserError(f"{at}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
        path = options.get("path")
        if not isinstance(path, str) or not path:
            raise UserError(f"{at}: path must be a string: the data's file or folder, relative to the config file")
        options["path"] = os.path.abspath(base / Path(path).expanduser())
        tasks[name] = make_file_task(KINDS[kind], name, options, at)
    return tasks


def detect_kind(path: Path) -> str:
    """Which kind of data `path` holds, told by its content."""
    if not path.exists():
        raise UserError(f"{path} does not exist; expected {EXPECTED}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "arrays"
        if path.suffix.lower() in TEXT_SUFFIXES:
            return "text"
        raise UserError(f"{path} is a file, not a .npz file; expected {EXPECTED}")
    names = {e.name for e in _entries(path)}
    if names & {"x.npy", "x_train.npy"}:
        return "arrays"
    if any(f"train{suffix}" in names for suffix in TEXT_SUFFIXES):
        return "text"
    top = path / "train" if "train" in names and (path / "train").is_dir() else path
    suffixes = {f.suffix.lower() for c in _entries(top) if c.is_dir() for f in _entries(c) if f.is_file()}
    images, audio = bool(suffixes & set(IMAGE_SUFFIXES)), bool(suffixes & set(AUDIO_SUFFIXES))
    if images and audio:
        raise UserError(f"{path} holds both images and .wav files in its class folders; expected one kind")
    if not images and not audio:
        raise UserError(f"{path} holds no data this tool reads; expected {EXPECTED}")
    return "image-folder" if images else "audio-folder"


def data_table(path: Path) -> Tuple[str, Dict[str, str]]:
    """A file or folder of data as a task name (its own name) and the [data.NAME] table that
    reads it, its kind told by its content."""
    path = Path(path).expanduser().resolve()
    return path.stem or "data", {"kind": detect_kind(path), "path": str(path)}


def task_from_path(path: Path, name: Optional[str] = None, **options) -> FileTask:
    """A task from a file or folder alone (`layerwise freeze --data`). `options` are those of
    the kind's config table (e.g. shape=[3, 32, 32]); the name defaults to the file or folder's."""
    found, table = data_table(path)
    return make_file_task(KINDS[table["kind"]], name or found, {**options, "path": table["path"]}, f"data {path}")
