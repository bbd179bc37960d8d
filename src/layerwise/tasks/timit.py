"""TIMIT phone recognition (`timit`), read from the LDC release where the user keeps it.

Layout: `TRAIN|TEST/DR1..DR8/<speaker>/<utterance>.WAV|.PHN`, in upper or lower case, audio as
NIST SPHERE or RIFF WAV (told apart by content). The SA sentences (read by every speaker) are
dropped. Splits, as is standard: the 462 training speakers; the 50-speaker development set of
Halberstadt (1998) for validation; the 24-speaker core test set. Other TEST speakers are unused.

Every 10 ms frame is one example: the window of `context` frames centred on it, labelled with
the phone that covers the frame's centre sample in the `.PHN` file (a `.PHN` that cannot describe
its audio is an error naming both files: see `check_alignment`). The network is trained on the
61 TIMIT phones (`num_classes = 61`, indexed as in `PHONES`); frames labelled `q` (the glottal
stop, which the 39-phone folding removes) are left out of every split, so the `q` output is never
trained. Scoring folds the 61 phones to the 39 of Lee and Hon (1989):

- phone error rate (`per`, the metric): per utterance, the predicted frame labels are folded,
  consecutive repeats are merged into one phone sequence, and it is aligned by edit distance to
  the reference, which is the utterance's `.PHN` transcription folded to 39 phones, `q` removed
  and repeats merged (the standard); `per` = 100 * (substitutions + deletions + insertions) /
  reference phones, summed over the split. A phone shorter than the 10 ms hop may cover no frame
  centre: no frame classifier can output it, and it counts as a deletion (a reference built from
  the frames would drop it, and the PER would be optimistic);
- frame error rate (`fer`): the share of frames whose folded prediction is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
import torch

from ..audio import LogMel, child
from ..errors import UserError
from .base import Split, TaskData
from .speech import SpeechTask, window_split

PHONES = ("aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# "
          "hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh").split()

# Lee and Hon's folding of the 61 phones to 39: phones not listed keep their name; q goes.
FOLD = {"ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "el": "l", "em": "m", "en": "n",
        "eng": "ng", "nx": "n", "hv": "hh", "ix": "ih", "ux": "uw", "zh": "sh",
        "bcl": "sil", "dcl": "sil", "gcl": "sil", "kcl": "sil", "pcl": "sil", "tcl": "sil",
        "epi": "sil", "h#": "sil", "pau": "sil", "q": None}
PHONES39 = sorted({FOLD.get(p, p) for p in PHONES} - {None})
# FOLD_INDEX[i] is the 39-phone index of 61-phone class i (-1 for q).
FOLD_INDEX = torch.tensor([-1 if FOLD.get(p, p) is None else PHONES39.index(FOLD.get(p, p)) for p in PHONES])
Q = PHONES.index("q")

# The core test set: two male and one female speaker of each dialect region DR1..DR8.
CORE_TEST = {
    "dr1": ["mdab0", "mwbt0", "felc0"], "dr2": ["mtas1", "mwew0", "fpas0"],
    "dr3": ["mjmp0", "mlnt0", "fpkt0"], "dr4": ["mlll0", "mtls0", "fjlm0"],
    "dr5": ["mbpm0", "mklt0", "fnlp0"], "dr6": ["mcmj0", "mjdh0", "fmgd0"],
    "dr7": ["mgrt0", "mnjm0", "fdhc0"], "dr8": ["mjln0", "mpam0", "fmld0"],
}
CORE_SPEAKERS = {s for speakers in CORE_TEST.values() for s in speakers}
# Halberstadt's 50-speaker development set, drawn from the TEST speakers outside the core set.
DEV_SPEAKERS = set(
    "faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 "
    "fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 "
    "mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 "
    "mteb0 mjfc0 mrjr0 fmml0 mrws1".split())

SETTING = "[task_options.timit] root = \"...\" (or --set task_options.timit.root=..., or $LAYERWISE_DATA/timit)"
LAYOUT = "the LDC TIMIT layout: TRAIN/ and TEST/ holding DR1..DR8/<speaker>/<utterance>.WAV and .PHN"


@dataclass
class Utterance:
    uid: str  # speaker_sentence, e.g. "fcjf0_si1027"
    split: str  # "train", "val" or "test"
    audio: Path
    phn: Path


def find_corpus(root: Path) -> Path:
    """The folder holding TRAIN/ and TEST/: `root` itself or its TIMIT/ or data/ subfolder."""
    if not root.is_dir():
        raise UserError(f"TIMIT corpus not found: {root} is not a folder; expected {LAYOUT}. Set {SETTING}")
    for candidate in [root] + [c for c in (child(root, "timit"), child(root, "data")) if c]:
        if child(candidate, "train") and child(candidate, "test"):
            return candidate
    raise UserError(f"{root} is not a TIMIT corpus: no TRAIN/ and TEST/ folders in it; expected {LAYOUT}. "
                    f"Set {SETTING}")


def scan(root: Path) -> List[Utterance]:
    """The utterances of the three splits, in a fixed order (split, dialect region, speaker,
    sentence), SA sentences dropped."""
    corpus = find_corpus(root)
    found = []
    for part in ("train", "test"):
        for region in sorted(p for p in child(corpus, part).iterdir() if p.name.lower().startswith("dr")):
            for speaker in sorted(p for p in region.iterdir() if p.is_dir()):
                spk = speaker.name.lower()
                split = "train" if part == "train" else "test" if spk in CORE_SPEAKERS else \
                    "val" if spk in DEV_SPEAKERS else None
                if split is None:
                    continue
                files = {f.name.lower(): f for f in speaker.iterdir()}
                for name in sorted(files):
                    if not name.endswith(".phn") or name.startswith("sa"):
                        continue
                    stem = name[:-4]
                    audio = files.get(stem + ".wav") or files.get(stem + ".wav.wav")
                    if audio is None:
                        raise UserError(f"{files[name]}: no audio beside it; expected {stem.upper()}.WAV")
                    found.append(Utterance(f"{spk}_{stem}", split, audio, files[name]))
    order = {"train": 0, "val": 1, "test": 2}
    found.sort(key=lambda u: order[u.split])
    for split in order:
        if not any(u.split == split for u in found):
            raise UserError(f"the TIMIT corpus at {corpus} has no {split} utterances (.PHN files of "
                            f"{'TRAIN speakers' if split == 'train' else 'the standard TEST speakers'}); "
                            f"expected {LAYOUT}. Set {SETTING}")
    return found


class Segments(NamedTuple):
    """The lines of a `.PHN` file: sample offsets at 16 kHz, 61-phone indices, line numbers."""

    starts: np.ndarray
    ends: np.ndarray
    phones: np.ndarray
    lines: np.ndarray


def read_phn(path: Path) -> Segments:
    """The segments of a `.PHN` file: lines `start_sample end_sample phone`."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()) or parts[2].lower() not in PHONES:
            raise UserError(f"{path}, line {number}: {line!r}; expected 'start_sample end_sample phone' "
                            "with one of the 61 TIMIT phones")
        rows.append((int(parts[0]), int(parts[1]), PHONES.index(parts[2].lower()), number))
    if not rows:
        raise UserError(f"{path}: no segments; expected lines 'start_sample end_sample phone'")
    starts, ends, phones, lines = (np.array(column, dtype=np.int64) for column in zip(*rows))
    return Segments(starts, ends, phones, lines)


# Real TIMIT's last h# ends at, or a few samples before, the end of its audio; a .PHN that stops
# this long before it transcribes other (shorter) audio.
UNLABELLED_TAIL = 8000  # samples: 0.5 s at 16 kHz


def check_alignment(utt: Utterance, segments: Segments, samples: int) -> None:
    """Refuse a `.PHN` file that cannot describe its audio, naming both files.

    What real TIMIT has, and is allowed: offsets in samples at 16 kHz; each segment starts where
    the previous one ends; the first `h#` starts at 0, and the last `h#` ends at or a little
    before the audio's last sample (the frames after it are unlabelled and left out). A gap
    between segments would only leave frames unlabelled, so it is allowed too.
    What cannot be right, and is refused: a segment that ends before it starts; one that starts
    before the previous one ends (out of order or overlapping, so a frame would have two phones);
    any segment ending past the audio (a transcription of other audio, or audio cut short),
    whose phones would have no frames; and a last segment ending more than UNLABELLED_TAIL
    (0.5 s) before the audio does (the transcription of a shorter utterance).
    """
    starts, ends, _, lines = segments
    where = lambda k: f"{utt.phn}, line {lines[k]} ({starts[k]} {ends[k]} {PHONES[segments.phones[k]]})"  # noqa: E731
    for k in range(len(starts)):
        if ends[k] < starts[k]:
            raise UserError(f"{where(k)}: the segment ends at sample {ends[k]}, before it starts; "
                            f"expected start_sample <= end_sample (audio: {utt.audio})")
        if k and starts[k] < ends[k - 1]:
            raise UserError(f"{where(k)}: the segment starts at sample {starts[k]}, before the previous one "
                            f"ends (sample {ends[k - 1]}); expected segments in time order, not overlapping "
                            f"(audio: {utt.audio})")
    past = np.flatnonzero(ends > samples)
    if len(past):
        k = past[0]
        raise UserError(f"{where(k)}: the segment ends at sample {ends[k]}, past the end of the audio "
                        f"{utt.audio}, which holds {samples} samples; the transcription does not match its audio")
    if len(ends) and samples - ends[-1] > UNLABELLED_TAIL:
        k = len(ends) - 1
        raise UserError(f"{where(k)}: the last segment ends at sample {ends[k]}, {(samples - ends[k]) / 16000:.2f} s "
                        f"before the end of the audio {utt.audio} ({samples} samples); expected at most "
                        f"{UNLABELLED_TAIL / 16000:g} s left unlabelled: the transcription does not match its audio")


def frame_labels(segments: Segments, centres: np.ndarray) -> np.ndarray:
    """The 61-phone index of the segment covering each frame centre sample, -1 where none does
    (segments in time order, as `check_alignment` ensures)."""
    starts, ends, phones, _ = segments
    i = np.searchsorted(starts, centres, side="right") - 1
    inside = (i >= 0) & (centres < ends[np.maximum(i, 0)])
    return np.where(inside, phones[np.maximum(i, 0)], -1)


def merge_repeats(seq) -> np.ndarray:
    """A phone sequence from folded labels: -1 (q) removed, consecutive repeats merged."""
    seq = np.asarray(seq)
    seq = seq[seq >= 0]
    if len(seq) == 0:
        return seq
    return seq[np.r_[True, seq[1:] != seq[:-1]]]


_TRANSCRIPTIONS: Dict[Path, Tuple[tuple, np.ndarray]] = {}  # .PHN path -> (its stat, its reference)


def transcription(phn: Path) -> np.ndarray:
    """The 39-phone reference of one utterance: its `.PHN` phones folded, `q` removed, repeats
    merged; read once per process (again when the file changes)."""
    st = Path(phn).stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _TRANSCRIPTIONS.get(phn)
    if cached is None or cached[0] != stamp:
        cached = (stamp, merge_repeats(FOLD_INDEX[torch.from_numpy(read_phn(phn).phones)].numpy()))
        _TRANSCRIPTIONS[phn] = cached
    return cached[1]


def edit_distance(hyp, ref) -> int:
    """Substitutions + deletions + insertions of the best alignment of `hyp` to `ref` (Levenshtein),
    one row of the table at a time."""
    ref = np.asarray(ref)
    cols = np.arange(len(ref) + 1)
    row = cols.copy()  # aligning nothing to ref[:j] costs j deletions
    for i, h in enumerate(hyp, 1):
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + (ref != h))  # insertion, substitution/match
        row = np.minimum.accumulate(new - cols) + cols  # deletions along the row
    return int(row[-1])


def phone_error_rate(hyps, refs) -> float:
    total = sum(len(r) for r in refs)
    return 100.0 * sum(edit_distance(h, r) for h, r in zip(hyps, refs)) / max(total, 1)


@dataclass
class Timit(SpeechTask):
    name = "timit"
    description = "TIMIT phone recognition: 61 phones, scored as 39 (PER); licensed, read from `root`"
    metric = "per"
    chance = 100.0  # a constant phone merges into one per utterance: nearly every reference phone is an error
    num_classes = len(PHONES)

    def check_corpus(self) -> None:
        find_corpus(self.corpus_root())

    def load(self, seed: int = 0) -> TaskData:
        utterances = self._utterances = scan(self.corpus_root())  # `groups` index it; score reads the references
        settings = LogMel(n_mels=self.n_mels)
        matrix, offsets, samples = self.features([u.audio for u in utterances])
        examples: Dict[str, list] = {"train": [], "val": [], "test": []}
        for u, utt in enumerate(utterances):
            segments = read_phn(utt.phn)
            check_alignment(utt, segments, int(samples[u]))
            labels = frame_labels(segments, settings.frame_centres(offsets[u + 1] - offsets[u]))
            keep = np.flatnonzero((labels >= 0) & (labels != Q))
            examples[utt.split].append((u, keep, labels[keep]))
        half = self.context // 2
        return TaskData(*(window_split(matrix, offsets, examples[s], half) for s in ("train", "val", "test")))

    def references(self, utterances: List[int]) -> List[np.ndarray]:
        """The reference phone sequences of utterances (indices into `scan`'s list, as `groups`
        holds them): their transcriptions, not their frames."""
        if getattr(self, "_utterances", None) is None:  # not a field: no option, not in the task's identity
            self._utterances = scan(self.corpus_root())
        return [transcription(self._utterances[u].phn) for u in utterances]

    def score(self, logits: torch.Tensor, split: Split) -> Dict[str, float]:
        """PER and FER of a split as `load` makes it: every labelled frame of each utterance,
        together and in order; each utterance's PER reference is its .PHN transcription."""
        if len(split) == 0:
            return {"per": 0.0, "fer": 0.0}
        pred = FOLD_INDEX[logits.argmax(1).cpu()].numpy()
        truth = FOLD_INDEX[split.y.cpu()].numpy()
        groups = split.groups.cpu().numpy()
        cuts = np.flatnonzero(np.diff(groups)) + 1
        hyps = [merge_repeats(seg) for seg in np.split(pred, cuts)]
        refs = self.references([int(groups[i]) for i in np.r_[0, cuts]])
        return {"per": phone_error_rate(hyps, refs), "fer": 100.0 * float(np.mean(pred != truth))}
