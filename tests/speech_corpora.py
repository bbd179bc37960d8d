"""Tiny fake TIMIT and IEMOCAP corpora in the exact on-disk layouts and formats of the releases.

Audio is written byte for byte here (NIST SPHERE headers and RIFF chunks by hand), so the readers
are tested against the formats, not against the library that reads them. The signals are tones
whose pitch depends on the phone or the emotion, so a network can learn something from them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

RATE = 16000


def write_sphere(path: Path, samples: np.ndarray, rate: int = RATE, big_endian: bool = False, coding: str = "pcm",
                 sample_count: int = None):
    """A NIST SPHERE file as TIMIT ships it: a 1024-byte ASCII header, then 16-bit samples.
    `sample_count` writes a header that disagrees with the data (a damaged file)."""
    count = len(samples) if sample_count is None else sample_count
    fields = [
        "database_id -s5 TIMIT", "database_version -s3 1.0", "utterance_id -s8 aks0_sa1",
        "channel_count -i 1", f"sample_count -i {count}", f"sample_rate -i {rate}",
        "sample_min -i -2191", "sample_max -i 2790", "sample_n_bytes -i 2",
        f"sample_byte_format -s2 {'10' if big_endian else '01'}", "sample_sig_bits -i 16",
    ]
    if coding != "pcm":
        fields.append(f"sample_coding -s{len(coding)} {coding}")
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\nend_head\n").encode("ascii")
    header += b" " * (1024 - len(header))
    Path(path).write_bytes(header + np.asarray(samples, dtype=">i2" if big_endian else "<i2").tobytes())


def write_riff(path: Path, samples: np.ndarray, rate: int = RATE):
    """A canonical 44-byte-header RIFF WAVE file of 16-bit mono PCM."""
    data = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def tone(rng: np.random.Generator, freq: float, n: int) -> np.ndarray:
    t = np.arange(n) / RATE
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(n)
    return np.round(wave * 32767).astype(np.int16)


# --- TIMIT ---------------------------------------------------------------------------------------

# (part, region, speaker): two training speakers, a development speaker (faks0), two core test
# speakers (mdab0, fpas0), and a TEST speaker in neither list (mzzz0), which must go unused.
TIMIT_SPEAKERS = [("train", "dr1", "fcjf0"), ("train", "dr2", "maeb0"), ("test", "dr1", "faks0"),
                  ("test", "dr1", "mdab0"), ("test", "dr2", "fpas0"), ("test", "dr1", "mzzz0")]
TIMIT_SENTENCES = ["sa1", "si1027", "sx37"]
PHONE_SET = ["h#", "sh", "iy", "hh", "ae", "dcl", "d", "q", "aa", "r", "ix", "pau", "s"]


def timit_sentence(rng: np.random.Generator):
    """(samples, .PHN lines) of one sentence: h#, a few phones (with a q and a closure), h#.

    As in TIMIT, a stop's release can be shorter than the 10 ms frame hop (so it may cover no
    frame centre), and the audio may run a little past the end of the last h#."""
    middle = list(rng.choice(PHONE_SET[1:], size=6))
    phones = ["h#"] + middle[:3] + ["q", "dcl", "d"] + middle[3:] + ["h#"]
    pieces, lines, start = [], [], 0
    for p in phones:
        n = int(rng.integers(40, 150) if p == "d" else rng.integers(700, 2200))
        pieces.append(tone(rng, 150 + 90 * PHONE_SET.index(p), n))
        lines.append(f"{start} {start + n} {p}")
        start += n
    pieces.append(tone(rng, 150, int(rng.integers(0, 300))))
    return np.concatenate(pieces), "\n".join(lines) + "\n"


def write_timit(root: Path, upper: bool = True, audio: str = "sphere", seed: int = 0) -> Path:
    """A TIMIT-layout corpus under `root` with upper- or lower-case names and SPHERE or RIFF audio."""
    rng = np.random.default_rng(seed)
    case = str.upper if upper else str.lower
    for part, region, speaker in TIMIT_SPEAKERS:
        folder = Path(root) / case(part) / case(region) / case(speaker)
        folder.mkdir(parents=True, exist_ok=True)
        for sentence in TIMIT_SENTENCES:
            samples, phn = timit_sentence(rng)
            (folder / case(f"{sentence}.phn")).write_text(phn)
            (folder / case(f"{sentence}.txt")).write_text(f"0 {len(samples)} Some words.\n")
            writer = write_sphere if audio == "sphere" else write_riff
            writer(folder / case(f"{sentence}.wav"), samples)
    return Path(root)


# --- IEMOCAP -------------------------------------------------------------------------------------

IEMOCAP_LABELS = ["neu", "exc", "sad", "ang", "hap", "fru", "xxx", "sur"]
EMOTION_PITCH = {"neu": 200, "hap": 400, "exc": 400, "sad": 120, "ang": 600, "fru": 500, "xxx": 300, "sur": 700}
ANNOTATION = {"neu": "Neutral state", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
              "ang": "Anger", "fru": "Frustration", "xxx": "Other", "sur": "Surprise"}


def evaluation_block(start: float, end: float, uid: str, label: str) -> str:
    """One utterance of an EmoEvaluation file: the consensus line, then the annotators' lines."""
    name = ANNOTATION[label]
    return (f"[{start:.4f} - {end:.4f}]\t{uid}\t{label}\t[2.5000, 3.0000, 3.5000]\n"
            f"C-E2:\t{name};\t()\n"
            f"C-E3:\t{name}; Frustration;\t()\n"
            f"C-E4:\tNeutral state;\t(curious)\n"
            f"C-F1:\t{name};\t()\n"
            f"A-E3:\tval 3; act 2; dom  2;\t()\n"
            f"A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated)\n"
            f"A-F1:\tval 3; act 3; dom  4;\t()\n\n")


def write_iemocap(root: Path, seed: int = 0) -> Path:
    """An IEMOCAP-layout corpus: five sessions, each with an improvised and a scripted dialog whose
    utterances cycle through `IEMOCAP_LABELS`. Returns `root`."""
    rng = np.random.default_rng(seed)
    for s in range(1, 6):
        session = Path(root) / f"Session{s}"
        evaluation = session / "dialog" / "EmoEvaluation"
        (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)
        for dialog, speaker, count in [(f"Ses0{s}F_impro01", "F", 5), (f"Ses0{s}M_script01_1", "M", 4)]:
            wavs = session / "sentences" / "wav" / dialog
            wavs.mkdir(parents=True, exist_ok=True)
            text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            t = 1.0
            for i in range(count):
                label = IEMOCAP_LABELS[(i + s + (speaker == "M") * 5) % len(IEMOCAP_LABELS)]
                uid = f"{dialog}_{speaker}{i:03d}"
                samples = tone(rng, EMOTION_PITCH[label], int(rng.integers(3000, 8000)))
                write_riff(wavs / f"{uid}.wav", samples)
                text += evaluation_block(t, t + len(samples) / RATE, uid, label)
                t += len(samples) / RATE + 0.5
            (evaluation / f"{dialog}.txt").write_text(text)
            # The per-annotator category files have another format and must be ignored.
            (evaluation / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{dialog}_{speaker}000 :Anger; ()\n")
    return Path(root)


def iemocap_labels(root: Path):
    """{utterance: label} as written by `write_iemocap`, read back from the consensus lines."""
    labels = {}
    for txt in Path(root).glob("Session*/dialog/EmoEvaluation/*.txt"):
        for line in txt.read_text().splitlines():
            if line.startswith("["):
                parts = line.split("\t")
                labels[parts[1]] = parts[2]
    return labels
