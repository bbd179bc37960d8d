"""The digests that name data, weights and jobs: what a job key is made of, so the same inputs
always give the same key and any change gives another. Every digest is SHA-256; names use its
first 16 hex digits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Tuple

import torch

SHORT = 16  # hex digits of a digest kept in a name


def file_hash(path: Path) -> bytes:
    """The SHA-256 of a file's bytes, read a block at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def file_digest(path: Path) -> str:
    return file_hash(path).hex()[:SHORT]


def directory_digest(folder: Path) -> str:
    """The digest of every file under `folder` (a saved model: config, weights, tokenizer), by
    relative path and content."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + file_hash(path))
    return h.hexdigest()[:SHORT]


def spec_digest(spec: dict) -> str:
    """The digest of a JSON-able description (a job's spec, a cache entry's key)."""
    return text_digest(json.dumps(spec, sort_keys=True))


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT]


def tensors_digest(labelled: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """The digest of tensors' bytes, each after its label (a state-dict key, or its dtype and shape)."""
    h = hashlib.sha256()
    for label, t in labelled:
        h.update(label.encode())
        t = t.detach().cpu().contiguous()
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:SHORT]
