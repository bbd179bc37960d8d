"""Tiny CIFAR and SVHN files in the exact official formats, for tests.

- CIFAR: a .tar.gz holding `cifar-10-batches-py/` (`data_batch_1..5`, `test_batch`,
  `batches.meta`, `readme.html`) or `cifar-100-python/` (`train`, `test`, `meta`). Each batch is
  a protocol-2 pickle of a dict as Python 2 wrote it: keys and raw array bytes as Python 2 `str`
  (pickle's BINSTRING opcodes, which Python 3 reads back only with an `encoding`), numpy arrays
  referring to `numpy.core.multiarray._reconstruct`.
- SVHN: MATLAB 5 files `train_32x32.mat` etc. with `X` uint8 (32, 32, 3, N) and `y` uint8
  (N, 1), the digit 0 written as 10.

Every writer returns what it wrote, as (images (N, 3, 32, 32) uint8, labels) in the library's
terms, so tests can compare what is read with what was meant.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 `str` and numpy's module as Python 2 numpy named it."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + struct.pack("<B", len(data)) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def random_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_tar_gz(path: Path, members: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20, seed: int = 0):
    """`root/cifar-10-python.tar.gz`; returns (train_x, train_y), (test_x, test_y)."""
    rng = np.random.default_rng(seed)
    members, parts = {}, []
    for i in range(1, 7):
        n = per_batch if i < 6 else test
        x, y = random_images(rng, n), rng.integers(0, 10, size=n)
        parts.append((x, y))
        name = f"data_batch_{i}" if i < 6 else "test_batch"
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": [int(v) for v in y],
                 b"data": x.reshape(n, 3072), b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]}
        members[f"cifar-10-batches-py/{name}"] = py2_pickle(batch)
    members["cifar-10-batches-py/batches.meta"] = py2_pickle(
        {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"],
         b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    members["cifar-10-batches-py/readme.html"] = b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0\">"
    write_tar_gz(Path(root) / "cifar-10-python.tar.gz", members)
    train_x = np.concatenate([x for x, _ in parts[:5]])
    train_y = np.concatenate([y for _, y in parts[:5]])
    return (train_x, train_y), parts[5]


def write_cifar100(root: Path, train: int = 60, test: int = 20, seed: int = 0):
    """`root/cifar-100-python.tar.gz`; returns (train_x, fine, coarse), (test_x, fine, coarse)."""
    rng = np.random.default_rng(seed)
    members, out = {}, []
    for name, n in (("train", train), ("test", test)):
        x, fine = random_images(rng, n), rng.integers(0, 100, size=n)
        coarse = fine // 5  # any fixed map to 0..19 will do for a test
        members[f"cifar-100-python/{name}"] = py2_pickle(
            {b"filenames": [f"{name}_{j}.png".encode() for j in range(n)], b"batch_label": f"{name} batch".encode(),
             b"fine_labels": [int(v) for v in fine], b"coarse_labels": [int(v) for v in coarse],
             b"data": x.reshape(n, 3072)})
        out.append((x, fine, coarse))
    members["cifar-100-python/meta"] = py2_pickle(
        {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
         b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    write_tar_gz(Path(root) / "cifar-100-python.tar.gz", members)
    return out[0], out[1]


def write_svhn_mat(path: Path, n: int, rng) -> tuple:
    """One cropped-digit file; returns (images (N, 3, 32, 32), digits 0-9)."""
    import scipy.io

    x, digits = random_images(rng, n), rng.integers(0, 10, size=n)
    digits[:2] = 0  # make sure a 0 (written as 10) is there
    mat_y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": mat_y}, format="5")
    return x, digits


def write_svhn(root: Path, train: int = 80, test: int = 20, extra: int = 0, seed: int = 0):
    """`root/train_32x32.mat`, `test_32x32.mat` (and `extra_32x32.mat`); returns their contents."""
    rng = np.random.default_rng(seed)
    out = [write_svhn_mat(Path(root) / "train_32x32.mat", train, rng),
           write_svhn_mat(Path(root) / "test_32x32.mat", test, rng)]
    if extra:
        out.append(write_svhn_mat(Path(root) / "extra_32x32.mat", extra, rng))
    return out


def write_all(base: Path) -> Path:
    """All three corpora under `base/<task>`, as `$LAYERWISE_DATA` expects them."""
    write_cifar10(base / "cifar10")
    write_cifar100(base / "cifar100")
    write_svhn(base / "svhn")
    return base
