"""CIFAR-10, CIFAR-100 and SVHN, read from their official distributions.

The files are the ones `layerwise fetch` downloads (see `fetch.py`):
- CIFAR: the "python version" archive, read straight from the .tar.gz (or from the folder it
  unpacks to, if that is what is there). Each batch is a pickled dict: `data`, uint8 (N, 3072),
  one row per image holding the red, green and blue 32x32 planes in turn; `labels` (CIFAR-10) or
  `fine_labels` / `coarse_labels` (CIFAR-100).
- SVHN: the cropped-digit MATLAB files: `X` uint8 (32, 32, 3, N), `y` (N, 1) where 10 means the
  digit 0.

A validation split is held out of the training set (5,000 images for CIFAR, 6,000 for SVHN, as
in the DenseNet paper), fixed by the `split_seed` option rather than by the run's seed, so every
model of a sweep (primary or transfer, of any seed) sees the same examples. Images stay uint8
and are normalised per channel (by the training split's mean and standard deviation) as batches
are taken, which keeps all of CIFAR on the GPU in 180 MB. CIFAR trains with the standard augmentation (zero-padded 4-pixel
random crop and horizontal flip), done on whole batches of tensors where they live; SVHN has
none, as in the DenseNet paper, so a frozen prefix's outputs can be cached for it.

A corrupt or truncated file raises a `UserError` saying so, never garbage: by default every file
is checked against its published MD5 when loaded (`verify`), and what is parsed is checked for
shape and label range. The MD5 check is also what refuses files that are not the official
release (a re-packed archive, a smaller copy made for testing): to read such files, set the task
option `verify = false` (in `[task_options.cifar10]` etc., or `--set task_options.svhn.verify=false`);
they are then checked for shape and label range only.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import fetch as fetching
from ..errors import UserError
from .base import Split, Task, TaskData, data_root

# ---------------------------------------------------------------------------------------------
# The images as tensors


class Images:
    """uint8 images (N, C, H, W), normalised per channel when indexed.

    Satisfies what a `Split` needs of `x`: `len`, `x[indices] -> float batch`, `.to(device)`.
    Keeping the bytes and normalising per batch costs one fused operation per batch and a quarter
    of the memory of float32.
    """

    def __init__(self, data: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.data, self.mean, self.std = data, mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def device(self):
        return self.data.device

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.to(self.data.device)
        return (self.data[index].float() - self.mean) / self.std

    def to(self, device) -> "Images":
        return Images(self.data.to(device), self.mean.to(device), self.std.to(device))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images. Sums are exact
    integers taken a chunk at a time, so SVHN with its extra images needs no float copy."""
    total = torch.zeros(images.shape[1], dtype=torch.int64)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk].to(torch.int64)
        total += part.sum((0, 2, 3))
        squares += (part * part).sum((0, 2, 3))
    n = images[:, 0].numel()
    mean = total.double() / n
    var = (squares.double() - n * mean ** 2) / max(n - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-3)


def make_splits(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                val_size: int, split_seed: int, where: str) -> TaskData:
    """Hold `val_size` training images out by `split_seed`; normalise all three splits by the
    statistics of what is left for training."""
    n = len(train_y)
    if not 0 < val_size < n:
        raise UserError(f"val_size must be between 1 and {n - 1} (the training images in {where}); got {val_size}")
    order = torch.as_tensor(np.random.default_rng(split_seed).permutation(n))
    val_idx, train_idx = order[:val_size], order[val_size:]
    x = torch.as_tensor(train_x)
    y = torch.as_tensor(train_y, dtype=torch.long)
    mean, std = channel_stats(x[train_idx])
    split = lambda xs, ys: Split(Images(xs, mean, std), ys)  # noqa: E731
    return TaskData(split(x[train_idx], y[train_idx]), split(x[val_idx], y[val_idx]),
                    split(torch.as_tensor(test_x), torch.as_tensor(test_y, dtype=torch.long)))


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of the batch shifted by up to `pad` pixels each way (zero fill) and flipped
    left-right with probability 1/2: one gather for the whole batch.

    Zero is the mean colour here, since batches are normalised before they are augmented (as in
    fb.resnet.torch, the code the DenseNet paper trained with)."""
    b, _, h, w = x.shape
    # Random numbers are drawn where the generator lives, so a CPU generator drives a GPU batch.
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=generator.device).to(x.device)
    flips = torch.rand(b, generator=generator, device=generator.device).to(x.device) < 0.5
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + shifts[1][:, None]
    rows = torch.arange(h, device=x.device)[None] + shifts[0][:, None]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# The official files


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Everything a CIFAR batch may name: numpy's array and dtype constructors (under numpy 1's and
# numpy 2's module names) and, for batches written by Python 3 at protocol 2, bytes decoding.
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class SafeUnpickler(pickle.Unpickler):
    """Pickle is CIFAR's official format, so it has to be read; but a plain unpickler runs
    whatever callable a file names. This one resolves only the names in `ALLOWED`, so a
    tampered or unofficial file fails to load instead of running code."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return ALLOWED[(module, name)]()


def unpickle(raw: bytes) -> Dict[str, object]:
    """One CIFAR batch, keys as str. The official batches are Python 2 pickles: latin1 is how
    numpy's arrays from Python 2 are read, and keys written as bytes are decoded too."""
    batch = SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(batch, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(batch).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def corrupt(path: Path, fetch_name: str, root: Optional[str], why: str) -> UserError:
    return UserError(f"{path} is corrupt or truncated ({why}). Delete it and run "
                     f"`{fetching.fetch_command(fetch_name, root)}` to fetch it again")


def read_cifar_batches(path: Path, folder: str, members: List[str], label_key: str,
                       fetch_name: str, root: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of the named batches, from the .tar.gz archive
    `path` or, if `path` is a directory, from the unpacked batch files in it."""
    raws = []
    try:
        if path.is_dir():
            raws = [(path / m).read_bytes() for m in members]
        else:
            with tarfile.open(path, "r:gz") as tar:
                for m in members:
                    f = tar.extractfile(f"{folder}/{m}")
                    if f is None:
                        raise KeyError(f"{folder}/{m}")
                    raws.append(f.read())
        batches = [unpickle(raw) for raw in raws]
    except KeyError as err:
        raise corrupt(path, fetch_name, root, f"no member {err}") from None
    except FileNotFoundError as err:
        raise corrupt(path, fetch_name, root, f"missing {err.filename}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise corrupt(path, fetch_name, root, f"{type(err).__name__}: {err}") from None
    images, labels = [], []
    for m, batch in zip(members, batches):
        data = np.asarray(batch.get("data"))
        ys = np.asarray(batch.get(label_key, []), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(ys) != len(data):
            raise corrupt(path, fetch_name, root, f"batch {m}: data {data.dtype} {data.shape} with "
                          f"{len(ys)} {label_key}; expected uint8 (N, 3072) with N labels")
        images.append(data.reshape(-1, 3, 32, 32))  # rows hold the R, G, B planes in turn
        labels.append(ys)
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(path: Path, root: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels 0-9 from one SVHN cropped-digit .mat file."""
    import scipy.io

    fetch_name = "svhn-extra" if path.name.startswith("extra") else "svhn"
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    except KeyError as err:
        raise corrupt(path, fetch_name, root, f"no variable {err}") from None
    except Exception as err:  # scipy raises ValueError, TypeError, OSError or MatReadError on a bad file
        raise corrupt(path, fetch_name, root, f"{type(err).__name__}: {err}") from None
    if x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3) or x.ndim != 4 or x.shape[3] != len(y):
        raise corrupt(path, fetch_name, root, f"X is {x.dtype} {x.shape} with {len(y)} labels; "
                      f"expected uint8 (32, 32, 3, N) with N labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise corrupt(path, fetch_name, root, f"labels range {y.min()}..{y.max()}; expected 1..10")
    y[y == 10] = 0  # SVHN writes the digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y  # (H, W, C, N) -> (N, C, H, W)


# ---------------------------------------------------------------------------------------------
# The tasks


@dataclass
class ImageTask(Task):
    """What the three tasks share: where the files are, fetching, verifying, splitting."""

    subdir: ClassVar[str] = ""
    root: Optional[str] = None  # directory of the files; default $LAYERWISE_DATA/<name>, else ~/.cache/layerwise/<name>
    download: bool = False  # fetch from the official source when a file is missing
    verify: bool = True  # check each file's published MD5 on load (0.2 s per CIFAR archive here)
    val_size: int = 5000  # training images held out for validation
    split_seed: int = 0  # fixes which images are held out: the same for every run of a sweep

    @property
    def input_shape(self):
        return (3, 32, 32)

    def folder(self) -> Path:
        return data_root(self.root, self.subdir)

    def corpora(self) -> List[str]:
        """The names (in `fetch.CORPORA`) of the corpora this task reads."""
        return [self.subdir]

    def remotes(self) -> List[Tuple[str, fetching.Remote]]:
        return [(c, r) for c in self.corpora() for r in fetching.corpus(c).files]

    def found(self, remote: fetching.Remote) -> Optional[Path]:
        """The file for `remote` if it is here (CIFAR accepts an unpacked folder too)."""
        path = self.folder() / remote.filename
        return path if path.is_file() else None

    def available(self) -> bool:
        return all(self.found(r) for _, r in self.remotes())

    def files(self) -> List[Path]:
        """The paths of this task's files, in `remotes()` order: fetched first when `download`
        is set, checked against their published MD5 when `verify` is set."""
        missing = [(c, r) for c, r in self.remotes() if not self.found(r)]
        names = list(dict.fromkeys(c for c, _ in missing))
        if missing and self.download:
            for c in names:
                fetching.fetch(c, str(self.folder()))
        elif missing:
            files = ", ".join(r.filename for _, r in missing)
            commands = " and ".join(f"`{fetching.fetch_command(c, str(self.folder()))}`" for c in names)
            raise UserError(f"task {self.name!r}: {files} not found in {self.folder()}. Fetch with {commands}, "
                            f"or set download = true in [task_options.{self.name}]. The directory is the task "
                            f"option root, else $LAYERWISE_DATA/{self.subdir}, else ~/.cache/layerwise/{self.subdir}")
        paths = []
        for c, r in self.remotes():
            path = self.found(r)
            if self.verify and path.is_file():
                fetching.verify(path, r, c, self.root)
            paths.append(path)
        return paths

@dataclass
class Cifar(ImageTask):
    """CIFAR-10 or CIFAR-100; subclasses name the archive's folder, members and label key."""

    archive_folder: ClassVar[str] = ""
    train_members: ClassVar[List[str]] = []
    test_members: ClassVar[List[str]] = []

    augment_train: bool = True  # zero-padded 4-pixel random crop and horizontal flip

    @property
    def deterministic(self) -> bool:
        return not self.augment_train

    def found(self, remote):
        # An archive someone has already unpacked is as good as the archive.
        unpacked = self.folder() / self.archive_folder
        return unpacked if unpacked.is_dir() else super().found(remote)

    def label_key(self) -> str:
        return "labels"

    def load(self, seed: int = 0) -> TaskData:
        """The splits; `seed` is not used (the split is fixed by `split_seed`)."""
        (path,) = self.files()
        read = lambda members: read_cifar_batches(path, self.archive_folder, members, self.label_key(),  # noqa: E731
                                                  self.subdir, self.root)
        train_x, train_y = read(self.train_members)
        test_x, test_y = read(self.test_members)
        for ys, which in ((train_y, "train"), (test_y, "test")):
            if len(ys) and (ys.min() < 0 or ys.max() >= self.num_classes):
                raise corrupt(path, self.subdir, self.root, f"{which} labels range {ys.min()}..{ys.max()}; "
                              f"expected 0..{self.num_classes - 1}")
        return make_splits(train_x, train_y, test_x, test_y, self.val_size, self.split_seed, str(path))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(x, generator) if self.augment_train else x


@dataclass
class Cifar10(Cifar):
    name = "cifar10"
    description = "CIFAR-10: 60,000 32x32 colour images in 10 classes (official python archive)"
    num_classes = 10
    subdir = "cifar10"
    archive_folder = "cifar-10-batches-py"
    train_members = [f"data_batch_{i}" for i in range(1, 6)]
    test_members = ["test_batch"]


@dataclass
class Cifar100(Cifar):
    name = "cifar100"
    description = "CIFAR-100: 60,000 32x32 colour images in 100 fine (or 20 coarse) classes"
    num_classes = 100
    subdir = "cifar100"
    archive_folder = "cifar-100-python"
    train_members = ["train"]
    test_members = ["test"]

    labels: str = "fine"  # "fine" (100 classes) or "coarse" (20 superclasses)

    def __post_init__(self):
        if self.labels not in ("fine", "coarse"):
            raise UserError(f"task cifar100: option labels must be 'fine' or 'coarse'; got {self.labels!r}")
        self.num_classes = 100 if self.labels == "fine" else 20  # shadows the class attribute

    def label_key(self) -> str:
        return f"{self.labels}_labels"


@dataclass
class Svhn(ImageTask):
    name = "svhn"
    description = "SVHN cropped digits: 32x32 colour house-number digits (73,257 train, 26,032 test)"
    num_classes = 10
    subdir = "svhn"

    val_size: int = 6000
    extra: bool = False  # add extra_32x32.mat (531,131 easier images) to the training set

    def corpora(self):
        return ["svhn", "svhn-extra"] if self.extra else ["svhn"]

    def load(self, seed: int = 0) -> TaskData:
        """The splits; `seed` is not used (the split is fixed by `split_seed`)."""
        paths = self.files()
        train_x, train_y = read_svhn(paths[0], self.root)
        test_x, test_y = read_svhn(paths[1], self.root)
        if self.extra:
            extra_x, extra_y = read_svhn(paths[2], self.root)
            train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
        return make_splits(train_x, train_y, test_x, test_y, self.val_size, self.split_seed, str(paths[0]))
