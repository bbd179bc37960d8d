"""IEMOCAP speech emotion recognition (`iemocap`), read from the release where the user keeps it.

Layout: `Session1..5/dialog/EmoEvaluation/<dialog>.txt` (the consensus label of each utterance,
on lines like `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`,
each followed by per-annotator lines such as `C-E2:<TAB>Neutral state;<TAB>()`, which are
ignored) and `Session1..5/sentences/wav/<dialog>/<utterance>.wav`. A line that opens with `[` or
names an utterance but does not parse as a consensus line is an error naming the file and line,
never skipped: skipping it would lose the utterance without a word.

Four classes, as is usual: neutral, happy (merged with excited), sad, angry; utterances with any
other label (frustration, surprise, fear, disgust, other, no agreement `xxx`) are dropped.
Folds are speaker independent: each session has its own two speakers, so one session is the test
set (`test_session`), another the validation set (`val_session`; by default the session before
the test session, cyclically), and the other three train. `test_session` may also list several
sessions (`[1, 2, 3, 4, 5]`: every leave-one-session-out fold); a sweep then runs every job of
the task once per fold (`folds()`), and records each job's fold.

`dialogs` keeps all dialogs (the default), or only the `improvised` or the `scripted` ones (the
utterance names say which: `Ses01F_impro01_F000`, `Ses01F_script01_1_F000`).

Examples are windows of `context` frames centred on every `hop`-th frame of an utterance,
labelled with the utterance's class. An utterance's prediction averages the class posteriors
(softmax) of its windows. Metrics, per utterance: unweighted error `ue` (the metric; 100 * (1 -
mean per-class recall), over the classes present in the split), weighted accuracy `wa` (the share
of utterances right) and unweighted accuracy `ua` (100 - ue).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..audio import child
from ..errors import UserError
from .base import Split, TaskData
from .speech import SpeechTask, utterance_posteriors, window_split

CLASSES = ["neutral", "happy", "sad", "angry"]
LABELS = {"neu": 0, "hap": 1, "exc": 1, "sad": 2, "ang": 3}  # every other label is dropped

SETTING = ("[task_options.iemocap] root = \"...\" (or --set task_options.iemocap.root=..., "
           "or $LAYERWISE_DATA/iemocap)")
LAYOUT = ("the IEMOCAP release layout: Session1/ .. Session5/, each with dialog/EmoEvaluation/*.txt "
          "and sentences/wav/<dialog>/<utterance>.wav")
# A consensus line: [start - end] <TAB> utterance <TAB> label <TAB> [v, a, d] (times in seconds;
# valence, activation and dominance are the annotators' mean scores).
NUMBER = r"\d+(?:\.\d*)?"
TURN = re.compile(rf"^\[\s*{NUMBER}\s*-\s*{NUMBER}\s*\]\s+(Ses\S+)\s+(\S+)\s+"
                  rf"\[\s*{NUMBER}\s*,\s*{NUMBER}\s*,\s*{NUMBER}\s*\]\s*$")
# Every consensus label of the release (`xxx`: no majority); any other word there is damage.
RELEASE_LABELS = {"neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx"}
TURN_FORMAT = ("'[start - end]<TAB>utterance<TAB>label<TAB>[V, A, D]', such as "
               "'[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]'")


def looks_like_turn(line: str) -> bool:
    """Whether a line is meant as an utterance line: it opens with `[`, or names an utterance.
    The annotators' lines (`C-E2:`, `A-F1:`, ...), `%` comments and blank lines do neither."""
    text = line.strip()
    return text.startswith("[") or re.search(r"\bSes\d\d[FM]_", text) is not None


def read_evaluation(path: Path) -> List[Tuple[str, str]]:
    """(utterance, consensus label) pairs of one EmoEvaluation file, in file order. A line meant
    as an utterance line that does not parse is an error: skipping it would lose the utterance."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if line.lstrip().startswith("%") or not looks_like_turn(line):
            continue
        m = TURN.match(line.strip())
        if m is None:
            raise UserError(f"{path}, line {number}: {line!r} does not parse; expected an utterance line "
                            f"{TURN_FORMAT}")
        if m.group(2) not in RELEASE_LABELS:
            raise UserError(f"{path}, line {number}: label {m.group(2)!r}; expected one of the release's "
                            f"labels ({', '.join(sorted(RELEASE_LABELS))})")
        pairs.append((m.group(1), m.group(2)))
    return pairs


@dataclass
class Utterance:
    uid: str
    session: int
    label: int
    audio: Path


def session_dirs(root: Path) -> Dict[int, Path]:
    """Session number -> folder; every one of the five must be there."""
    if not root.is_dir():
        raise UserError(f"IEMOCAP corpus not found: {root} is not a folder; expected {LAYOUT}. Set {SETTING}")
    for candidate in [root] + [c for c in (child(root, "IEMOCAP_full_release"), child(root, "IEMOCAP")) if c]:
        sessions = {s: child(candidate, f"Session{s}") for s in range(1, 6)}
        if any(sessions.values()):
            missing = [f"Session{s}" for s, p in sessions.items() if p is None]
            if missing:
                raise UserError(f"the IEMOCAP corpus at {candidate} lacks {', '.join(missing)}; expected {LAYOUT}. "
                                f"Set {SETTING}")
            return sessions
    raise UserError(f"{root} is not an IEMOCAP corpus: no Session1..Session5 folders in it; "
                    f"expected {LAYOUT}. Set {SETTING}")


DIALOGS = {"all": "", "improvised": "_impro", "scripted": "_script"}


def scan(root: Path, dialogs: str = "all") -> List[Utterance]:
    """The four-class utterances of all five sessions, in session and file order."""
    found = []
    for session, folder in session_dirs(root).items():
        evaluation = child(folder, "dialog")
        evaluation = evaluation and child(evaluation, "EmoEvaluation")
        wavs = child(folder, "sentences")
        wavs = wavs and child(wavs, "wav")
        if evaluation is None or wavs is None:
            raise UserError(f"{folder} lacks dialog/EmoEvaluation/ or sentences/wav/; expected {LAYOUT}")
        # Only the dialog files themselves: not the Categorical/ etc. subfolders, not ._ files.
        for txt in sorted(p for p in evaluation.glob("*.txt") if p.name.startswith("Ses")):
            for uid, label in read_evaluation(txt):
                if label not in LABELS or DIALOGS[dialogs] not in uid:
                    continue
                dialog = uid.rsplit("_", 1)[0]
                audio = (child(wavs, dialog) or wavs / dialog) / f"{uid}.wav"
                if not audio.exists():
                    raise UserError(f"{audio} is missing, though {txt} labels utterance {uid}; expected {LAYOUT}")
                found.append(Utterance(uid, session, LABELS[label], audio))
    return found


def unweighted_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """100 * (1 - the mean over classes present in `truth` of each class's recall)."""
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    return 100.0 * (1.0 - float(np.mean(recalls))) if recalls else 0.0


@dataclass
class Iemocap(SpeechTask):
    name = "iemocap"
    description = "IEMOCAP emotion recognition: 4 classes, leave one session out (UE); licensed, read from `root`"
    metric = "ue"
    chance = 75.0  # one class for every utterance recalls 1 of 4 classes fully: unweighted error 75
    num_classes = len(CLASSES)
    test_session: Union[int, List[int]] = 5  # or a list of sessions: one fold each
    val_session: Optional[int] = None  # default: the session before test_session (5 before 1)
    hop: int = 1  # a window every `hop` frames
    dialogs: str = "all"  # "all", "improvised" or "scripted"

    def __post_init__(self):
        super().__post_init__()
        sessions = self.test_session if isinstance(self.test_session, list) else [self.test_session]
        if not sessions or len(set(sessions)) < len(sessions) or \
                not all(isinstance(s, int) and not isinstance(s, bool) for s in sessions):
            raise ValueError(f"test_session must be a session (1..5) or a list of distinct sessions; got {self.test_session!r}")
        for test in sessions:
            val = self.validation_session(test)
            if test not in range(1, 6) or val not in range(1, 6):
                raise ValueError(f"test_session and val_session must be in 1..5; got {self.test_session}, {self.val_session}")
            if val == test:
                raise ValueError(f"val_session must differ from test_session ({test})")
        if self.dialogs not in DIALOGS:
            raise ValueError(f"dialogs must be one of {', '.join(DIALOGS)}; got {self.dialogs!r}")
        if self.hop < 1:
            raise ValueError(f"hop must be at least 1; got {self.hop}")

    def validation_session(self, test: Optional[int] = None) -> int:
        """The validation session of the fold whose test session is `test` (this one's by default)."""
        test = self.test_session if test is None else test
        return self.val_session if self.val_session is not None else (test - 2) % 5 + 1

    def folds(self) -> List["Iemocap"]:
        if not isinstance(self.test_session, list):
            return [self]
        return [dataclasses.replace(self, test_session=s) for s in self.test_session]

    @property
    def fold(self) -> Optional[int]:
        return None if isinstance(self.test_session, list) else self.test_session

    def check_corpus(self) -> None:
        session_dirs(self.corpus_root())

    def load(self, seed: int = 0) -> TaskData:
        if isinstance(self.test_session, list):
            raise UserError(f"test_session = {self.test_session} names several folds; load each of folds() instead")
        utterances = scan(self.corpus_root(), self.dialogs)
        matrix, offsets, _ = self.features([u.audio for u in utterances])
        examples: Dict[str, list] = {"train": [], "val": [], "test": []}
        for u, utt in enumerate(utterances):
            split = "test" if utt.session == self.test_session else \
                "val" if utt.session == self.validation_session() else "train"
            frames = np.arange(0, offsets[u + 1] - offsets[u], self.hop)
            examples[split].append((u, frames, np.full(len(frames), utt.label)))
        for split, parts in examples.items():
            if not parts:
                which = "" if self.dialogs == "all" else f" ({self.dialogs} dialogs)"
                raise UserError(f"the IEMOCAP corpus at {self.corpus_root()} has no utterances of the four classes"
                                f"{which} for the {split} split (test_session={self.test_session}, "
                                f"val_session={self.validation_session()}); expected {LAYOUT}")
        half = self.context // 2
        return TaskData(*(window_split(matrix, offsets, examples[s], half) for s in ("train", "val", "test")))

    def score(self, logits: torch.Tensor, split: Split) -> Dict[str, float]:
        if len(split) == 0:
            return {"ue": 0.0, "ua": 0.0, "wa": 0.0}
        _, inverse, posteriors = utterance_posteriors(logits, split.groups)
        pred = posteriors.argmax(1).cpu().numpy()
        truth = np.zeros(len(pred), dtype=np.int64)
        truth[inverse.cpu().numpy()] = split.y.cpu().numpy()
        ue = unweighted_error(pred, truth)
        return {"ue": ue, "ua": 100.0 - ue, "wa": 100.0 * float(np.mean(pred == truth))}
