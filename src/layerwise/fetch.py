"""Download the image corpora from their official sources, verified by checksum.

`fetch(name, root)` puts a corpus's files in `root` (default: `$LAYERWISE_DATA/<subdir>`, else
`~/.cache/layerwise/<subdir>`, the same place the task looks) and returns their paths. The work is
done by pooch: it downloads with a progress bar, checks the MD5 published for each file, keeps a
file that is already there and correct, and replaces one that is not. A failed download or a
checksum mismatch becomes a `UserError` naming the URL and the file.

From the command line: `layerwise fetch NAME [--root DIR]`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .errors import UserError, unknown
from .tasks.base import data_root


@dataclass(frozen=True)
class Remote:
    """One official file: where it comes from and its published MD5."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


@dataclass(frozen=True)
class Corpus:
    subdir: str  # directory under the data root, shared with the task that reads the files
    files: tuple


CIFAR10 = Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR100 = Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
SVHN_TRAIN = Remote("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373")
SVHN_TEST = Remote("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b69d2d7d66")
SVHN_EXTRA = Remote("http://ufldl.stanford.edu/housenumbers/extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7")

# `svhn-extra` is separate because it is 1.3 GB and only the `svhn` task's `extra = true` uses it.
CORPORA: Dict[str, Corpus] = {
    "cifar10": Corpus("cifar10", (CIFAR10,)),
    "cifar100": Corpus("cifar100", (CIFAR100,)),
    "svhn": Corpus("svhn", (SVHN_TRAIN, SVHN_TEST)),
    "svhn-extra": Corpus("svhn", (SVHN_EXTRA,)),
}


def corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise unknown("corpus", name, CORPORA)
    return CORPORA[name]


def fetch_command(name: str, root: Optional[str] = None) -> str:
    """The command that fetches `name` into `root`, for error messages."""
    return f"layerwise fetch {name}" + (f" --root {root}" if root else "")


def fetch(name: str, root: Optional[str] = None, progress: bool = True) -> List[Path]:
    """Download corpus `name` into `root` (unless already there and intact); return the paths."""
    import pooch  # imported here: only fetching needs it

    entry = corpus(name)
    folder = data_root(root, entry.subdir)
    paths = []
    for remote in entry.files:
        try:
            path = pooch.retrieve(remote.url, known_hash=f"md5:{remote.md5}", fname=remote.filename,
                                  path=folder, progressbar=progress)
        except ValueError as err:  # pooch's checksum mismatch
            raise UserError(f"{remote.url} downloaded to {folder / remote.filename} does not match its published "
                            f"MD5 {remote.md5} ({err}); the download is corrupt or truncated: run "
                            f"`{fetch_command(name, root)}` again") from None
        except Exception as err:  # network errors come from requests, os errors from the disk
            raise UserError(f"could not download {remote.url} to {folder / remote.filename} "
                            f"({type(err).__name__}: {err}). Run `{fetch_command(name, root)}` where the "
                            f"network is reachable, or put {remote.filename} in {folder} yourself") from None
        paths.append(Path(path))
    return paths


def md5sum(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, remote: Remote, name: str, root: Optional[str]) -> None:
    """Raise a `UserError` unless `path` has the published MD5 (a fraction of a second for CIFAR)."""
    actual = md5sum(path)
    if actual != remote.md5:
        raise UserError(f"{path} has MD5 {actual}, not the published {remote.md5} of {remote.url}: the file is "
                        f"corrupt or truncated (or not the official file). Delete it and run "
                        f"`{fetch_command(name, root)}`, or set the task option verify = false to read it anyway")
