"""Text classification from your own files: `kind = "text"` in a `[data.NAME]` table.

    [data.reviews]
    kind = "text"
    path = "reviews.csv"        # a .csv, .tsv or .jsonl file, or a folder of train.*, val.*, test.*
    text = "text"               # the column (or JSON key) holding the text
    label = "label"             # the column holding the class
    tokenizer = "my-bert"       # a saved tokenizer (default with a Hugging Face primary: its directory)
    max_length = 128            # every text is padded or truncated to this many tokens

One file is split in `fractions` by `split_seed`, each class apart; a folder's train and test
files are taken as they are (a missing val file is held out of train). Texts are tokenised once,
padded to `max_length` with an attention mask, and travel as a `Bundle` of token ids and mask.
A file without the named columns, or a split holding a label the training split lacks, stops the
run before any training, naming the file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, Iterator, List, Tuple

import numpy as np
import torch

from .. import hf
from ..bundle import Bundle
from ..errors import UserError
from ..hashing import directory_digest, file_hash
from .base import Split, TaskData
from .files import KINDS, SPLITS, TEXT_SUFFIXES, FileTask


def text_files(path: Path) -> Dict[str, Path]:
    """The files of a text data set: {"all": file}, or a folder's {"train", "test"[, "val"]}."""
    if path.is_file():
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise UserError(f"{path} is not a .csv, .tsv or .jsonl file")
        return {"all": path}
    found = {p.stem: p for p in sorted(path.iterdir()) if p.suffix.lower() in TEXT_SUFFIXES and p.stem in SPLITS}
    if "train" not in found or "test" not in found:
        raise UserError(f"{path} holds no train and test files; expected train.csv|tsv|jsonl and test.csv|tsv|jsonl "
                        "(and optionally val.*), or give a single file")
    return found


def read_rows(path: Path, text: str, label: str) -> Tuple[List[str], List[str]]:
    """The texts and labels (as strings) of one file, or one line naming what is missing."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            if path.suffix.lower() == ".jsonl":
                rows = [json.loads(line) for line in f if line.strip()]
                columns = sorted({k for r in rows if isinstance(r, dict) for k in r})
            else:
                reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
                rows, columns = list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    missing = [c for c in (text, label) if c not in columns]
    if missing or not all(isinstance(r, dict) and r.get(text) is not None and r.get(label) is not None for r in rows):
        raise UserError(f"{path} has no column {(missing or [text, label])[0]!r} (in every row); its columns are "
                        f"{', '.join(columns) or 'none'}; name yours with the options text and label")
    if not rows:
        raise UserError(f"{path} holds no rows")
    return [str(r[text]) for r in rows], [str(r[label]) for r in rows]


@dataclass
class TextFiles(FileTask):
    kind = "text"
    INCIDENTAL: ClassVar[Tuple[str, ...]] = ("path", "cache", "tokenizer")
    text: str = "text"
    label: str = "label"
    tokenizer: str = ""  # a directory written by save_pretrained (a model's, or a tokenizer's own)
    max_length: int = 128

    def __post_init__(self):
        super().__post_init__()
        if not self.tokenizer:
            raise ValueError("tokenizer must name a saved tokenizer's directory (with a Hugging Face primary it is "
                             "that model's directory by default)")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"max_length must be an integer of at least 2 tokens; got {self.max_length!r}")
        self.files = text_files(Path(self.path))
        self.rows = {part: read_rows(f, self.text, self.label) for part, f in self.files.items()}
        first = "train" if "train" in self.rows else "all"
        classes = sorted(set(self.rows[first][1]))
        for part, (_, labels) in self.rows.items():
            strange = sorted(set(labels) - set(classes))
            if strange:
                raise UserError(f"{self.files[part]} holds the label {strange[0]!r}, which the training split "
                                f"({self.files[first]}) never has; every split's labels must occur in training")
        self.found(classes, "text")
        self.description += f", {sum(len(t) for t, _ in self.rows.values())} texts"

    def vocabulary_size(self) -> int:
        return len(hf.load_tokenizer(self.tokenizer, f"[data.{self.name}] tokenizer"))

    @property
    def input_shape(self):
        return (self.max_length,)

    def example(self) -> Bundle:
        """One input of the task's shape, for checking a network takes it before training."""
        ones = torch.ones(1, self.max_length, dtype=torch.long)
        return Bundle(input_ids=ones, attention_mask=ones)

    def content(self) -> Iterator[bytes]:
        for part, f in self.files.items():
            yield part.encode() + b"\0" + file_hash(f)
        yield directory_digest(Path(self.tokenizer)).encode()  # another tokenizer gives other inputs

    def read(self) -> TaskData:
        tokenizer = hf.load_tokenizer(self.tokenizer, f"[data.{self.name}] tokenizer")
        index = {c: i for i, c in enumerate(self.classes)}
        labels = {part: np.array([index[c] for c in ls], dtype=np.int64) for part, (_, ls) in self.rows.items()}
        splits = []
        for part, rows in self.three_way(labels, "texts"):
            texts = [self.rows[part][0][i] for i in rows]
            tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
            x = Bundle(input_ids=tokens["input_ids"].long(), attention_mask=tokens["attention_mask"].long())
            splits.append(Split(x, torch.from_numpy(labels[part][rows])))
        return TaskData(*splits)


KINDS[TextFiles.kind] = TextFiles  # `kind = "text"` in a [data.NAME] table (files.py reads the tables)
