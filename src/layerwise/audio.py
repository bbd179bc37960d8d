"""Speech input for the networks: log-mel spectrograms, a feature cache, and a lazy window view.

The features follow the authors' pipeline: pre-emphasis (0.97), 25 ms Hamming windows every
10 ms, a 512-point FFT, the power spectrum through 40 triangular mel filters (HTK mel scale),
the natural log, and mean normalisation. Mean normalisation here means: per utterance and per mel
band, the band's mean over the utterance's frames is subtracted (cepstral-mean-style), so channel
and loudness differences between recordings do not reach the network.

Both speech tasks feed a network the same kind of input: a window of `context` consecutive frames
centred on the frame being classified, shaped `(1, n_mels, context)`. Holding every window in
memory would cost `context` times the features (TIMIT alone has about 1.1M training frames), so
`FrameWindows` keeps the concatenated feature matrix and gathers windows by index; at an
utterance's edges it repeats the edge frame, so a window never crosses into another utterance.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import UserError
from .hashing import file_hash, text_digest

FEATURE_VERSION = 1  # bump when the computation changes, so old caches are not reused


@dataclass(frozen=True)
class LogMel:
    """Feature settings; every field is part of the cache key."""

    sample_rate: int = 16000
    preemphasis: float = 0.97
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 40

    @property
    def win(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        """Frames of a signal: one per hop while a whole window fits (at least one; a shorter
        signal is zero-padded to one window)."""
        return 1 + max(0, num_samples - self.win) // self.hop

    def frame_centres(self, num_frames: int) -> np.ndarray:
        """The sample at the centre of each frame, which decides the frame's label."""
        return np.arange(num_frames) * self.hop + self.win // 2


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(s: LogMel) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the HTK mel scale from 0 Hz
    to the Nyquist frequency, each peaking at 1 on its centre frequency."""
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(s.sample_rate / 2), s.n_mels + 2))
    freqs = np.arange(s.n_fft // 2 + 1) * s.sample_rate / s.n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(signal: np.ndarray, s: LogMel = LogMel()) -> np.ndarray:
    """(frames, n_mels) float32 log-mel features of a mono signal, mean normalised per band."""
    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[:1], x[1:] - s.preemphasis * x[:-1])
    if len(x) < s.win:
        x = np.pad(x, (0, s.win - len(x)))
    n = s.num_frames(len(x))
    idx = np.arange(s.win)[None, :] + s.hop * np.arange(n)[:, None]
    frames = x[idx] * np.hamming(s.win)
    power = np.abs(np.fft.rfft(frames, n=s.n_fft, axis=1)) ** 2
    energies = power @ mel_filterbank(s).T
    logs = np.log(np.maximum(energies, 1e-10))
    return (logs - logs.mean(axis=0, keepdims=True)).astype(np.float32)


# --- reading audio -------------------------------------------------------------------------------

def read_sphere(path: Path) -> Tuple[np.ndarray, int]:
    """Samples (float64 in [-1, 1]) and rate of an uncompressed 16-bit NIST SPHERE file (TIMIT)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(b"NIST_1A"):
        raise UserError(f"{path}: not a NIST SPHERE file (it does not start with NIST_1A)")
    lines = raw[:1024].split(b"\n")
    try:
        header_size = int(lines[1])
    except (IndexError, ValueError):
        raise UserError(f"{path}: bad NIST SPHERE header (the second line must be the header size)") from None
    fields: Dict[str, str] = {}
    for line in raw[:header_size].decode("ascii", "replace").split("\n")[2:]:
        if line.strip() == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    coding = fields.get("sample_coding", "pcm")
    width, channels = header_int(path, fields, "sample_n_bytes", 2), header_int(path, fields, "channel_count", 1)
    if coding != "pcm" or width != 2 or channels != 1:
        raise UserError(f"{path}: NIST SPHERE with sample_coding={coding!r}, sample_n_bytes={width}, "
                        f"channel_count={channels}; expected uncompressed 16-bit mono pcm "
                        "(decompress shorten-coded files with sph2pipe first)")
    order = fields.get("sample_byte_format", "01")
    dtype = "<i2" if order == "01" else ">i2"
    data_bytes = len(raw) - header_size
    available = data_bytes // 2
    count = header_int(path, fields, "sample_count", available)
    # TIMIT's files hold exactly `sample_count` samples after the header. Fewer is a truncated
    # file; more (or half a sample) means the header or the data is damaged, and reading only
    # `sample_count` samples would cut the audio without a word, so the .PHN times would no
    # longer match it.
    if count > available:
        raise UserError(f"{path}: truncated NIST SPHERE file: the header says {count} samples, "
                        f"the file holds {available}")
    if data_bytes != 2 * count:
        raise UserError(f"{path}: the NIST SPHERE header says sample_count {count}, but the file holds "
                        f"{data_bytes / 2:g} samples after its {header_size}-byte header; expected exactly "
                        f"{count} (the header or the audio is damaged)")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size, count=count)
    return data.astype(np.float64) / 32768.0, header_int(path, fields, "sample_rate", 16000)


def header_int(path: Path, fields: Dict[str, str], name: str, default: int) -> int:
    """An integer field of a SPHERE header, `default` when absent."""
    try:
        return int(fields.get(name, default))
    except ValueError:
        raise UserError(f"{path}: NIST SPHERE header field {name} is {fields[name]!r}; expected an integer") from None


def read_audio(path: Path) -> Tuple[np.ndarray, int]:
    """Mono samples and sample rate of a NIST SPHERE or RIFF WAV file (told apart by content,
    since TIMIT copies name both kinds .WAV)."""
    with open(path, "rb") as f:
        magic = f.read(7)
    if magic == b"NIST_1A":
        return read_sphere(path)
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except RuntimeError as err:
        raise UserError(f"{path}: cannot read audio ({err}); expected RIFF WAV or NIST SPHERE") from None
    return data.mean(axis=1), rate


# --- the feature cache ---------------------------------------------------------------------------

class Features(NamedTuple):
    """The features of a list of files, back to back: utterance u is `feats[offsets[u]:offsets[u + 1]]`
    and was computed from `samples[u]` audio samples."""

    feats: np.ndarray  # (T, n_mels) float32
    offsets: np.ndarray  # (U + 1,) int64
    samples: np.ndarray  # (U,) int64


# A file's size, modification time (ns), inode and change time stand for its content. The
# modification time alone does not: `cp -p`, `rsync -a` and `tar x` give other content the old
# file's size and time, but none of them can set the change time (every write and utime moves it)
# and rsync's and tar's new files have new inodes. Except when the modification time is this
# close to when the file was read: clocks that tick in milliseconds (or, on some filesystems,
# seconds) give a file rewritten within one tick the time it had, so such a file is checked by
# its content hash instead (the rule git uses for its index).
RACY_NS = 2_000_000_000


ENTRY_KEYS = ("feats", "offsets", "samples", "sizes", "mtimes", "hashes", "read_ns")
IDENTITY_KEYS = ("inodes", "ctimes")  # absent from entries written before them: their files are hashed once


def read_entry(path: Path) -> Optional[Dict[str, np.ndarray]]:
    """A cache entry's arrays, or None when there is none or it cannot be read (an entry is only
    ever a copy of what can be computed again, so a damaged one is simply replaced)."""
    try:
        with np.load(path) as f:
            return {**{k: f[k] for k in ENTRY_KEYS}, **{k: f[k] if k in f.files else None for k in IDENTITY_KEYS}}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


SAME, VERIFIED = "same", "verified"


def check_entry(files: Sequence[Path], stats, entry) -> Tuple[list, List[Optional[bytes]]]:
    """Per file: SAME (size, times and inode as recorded), VERIFIED (not, but the content hash is)
    or None (changed, or no entry); and the content hashes known so far.

    A file whose size differs has changed. One whose size, modification and change times and
    inode match, and whose times are not racy, has not. Any other (a file touched or restored in place has a new time; one rewritten
    with the same size has a new time, or a racy one) is hashed and compared with the entry's."""
    n = len(files)
    if entry is None or len(entry["sizes"]) != n:
        return [None] * n, [None] * n
    sizes, mtimes, hashes, read_ns = entry["sizes"], entry["mtimes"], entry["hashes"], int(entry["read_ns"])
    status, known = [None] * n, [None] * n
    for i, (p, st) in enumerate(zip(files, stats)):
        if st.st_size != sizes[i]:
            continue
        stored = hashes[i].tobytes()
        same_file = entry["inodes"] is not None and st.st_ino == entry["inodes"][i] and st.st_ctime_ns == entry["ctimes"][i]
        if same_file and st.st_mtime_ns == mtimes[i] and mtimes[i] < read_ns - RACY_NS:
            status[i], known[i] = SAME, stored
        else:
            known[i] = file_hash(p)
            status[i] = VERIFIED if known[i] == stored else None
    return status, known


def cached_features(files: Sequence[Path], settings: LogMel, cache_dir: Path, prefix: str,
                    setting_name: str) -> Features:
    """Log-mel features of every file, concatenated, with each file's sample count.

    Computed once and kept in `cache_dir` (never inside the corpus, which may be read-only), under
    a key made of the settings, the feature version and the file list. The entry records each
    file's size, modification and change times, inode and SHA-256: a file replaced by other audio (even of the same
    size) is computed again, and only that file. Hashing every file on every load instead would
    read the whole corpus each time (a gigabyte or more for IEMOCAP) where a `stat` per file
    costs microseconds; the hash is read only for a file whose time changed or is racy.
    Written atomically, so an interrupted run never leaves a half-written cache.
    """
    key = json.dumps({"settings": asdict(settings), "version": FEATURE_VERSION, "files": [str(p) for p in files]})
    path = Path(cache_dir) / f"{prefix}-features-{text_digest(key)}.npz"
    read_ns = time.time_ns()  # before any file is looked at: see RACY_NS
    stats = [os.stat(p) for p in files]
    entry = read_entry(path)
    status, hashes = check_entry(files, stats, entry)
    old = None if entry is None else Features(entry["feats"], entry["offsets"], entry["samples"])
    if old is not None and all(s == SAME for s in status):
        return old
    feats: List[np.ndarray] = []
    samples: List[int] = []
    from tqdm import tqdm

    todo = status.count(None)
    computing = tqdm(total=todo, desc=f"{prefix} log-mel features (once)", unit="utt", file=sys.stderr,
                     disable=todo < 100)
    for i, p in enumerate(files):
        if status[i]:
            feats.append(old.feats[old.offsets[i]:old.offsets[i + 1]])
            samples.append(int(old.samples[i]))
            continue
        hashes[i] = hashes[i] or file_hash(p)
        signal, rate = read_audio(p)
        if rate != settings.sample_rate:
            raise UserError(f"{p}: sample rate {rate} Hz; expected {settings.sample_rate} Hz")
        feats.append(log_mel(signal, settings))
        samples.append(len(signal))
        computing.update()
    computing.close()
    result = Features(np.concatenate(feats) if feats else np.zeros((0, settings.n_mels), np.float32),
                      np.cumsum([0] + [len(f) for f in feats]).astype(np.int64), np.array(samples, dtype=np.int64))
    try:
        write_entry(path, result, stats, hashes, read_ns)
    except OSError as err:
        if todo:  # nothing recomputed: the entry only records new times, to spare the next load hashing
            raise UserError(f"cannot write the feature cache {path} ({err.strerror}); point {setting_name} "
                            "to a writable folder") from None
    return result


def write_entry(path: Path, features: Features, stats, hashes: List[bytes], read_ns: int):
    """Write a cache entry atomically: the features, and what each file looked like when read."""
    manifest = dict(sizes=np.array([st.st_size for st in stats], dtype=np.int64),
                    mtimes=np.array([st.st_mtime_ns for st in stats], dtype=np.int64),
                    inodes=np.array([st.st_ino for st in stats], dtype=np.uint64),
                    ctimes=np.array([st.st_ctime_ns for st in stats], dtype=np.int64),
                    hashes=np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), 32),
                    read_ns=np.int64(read_ns))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **features._asdict(), **manifest)
    os.replace(tmp, path)


# --- windows of frames, gathered lazily ----------------------------------------------------------

class FeatureMatrix:
    """The (T, n_mels) features of one corpus, shared by its splits; moved to a device once
    however many splits ask for it there."""

    def __init__(self, feats: torch.Tensor):
        self.copies: Dict[str, torch.Tensor] = {str(feats.device): feats}
        self.cpu = feats

    def on(self, device) -> torch.Tensor:
        key = str(torch.device(device))
        if key not in self.copies:
            self.copies[key] = self.cpu.to(device)
        return self.copies[key]


class FrameWindows:
    """`len(self)` windows of `2 * half + 1` frames, one per example, gathered on indexing.

    `matrix` holds the features of all utterances back to back; `bounds` the (U, 2) first and
    one-past-last frame of each utterance; example i is the window centred on frame `centres[i]`
    of utterance `utts[i]`. Frames outside the utterance repeat its edge frame. Indexing gives a
    float batch `(B, 1, n_mels, 2 * half + 1)`.
    """

    def __init__(self, matrix: FeatureMatrix, bounds: torch.Tensor, centres: torch.Tensor,
                 utts: torch.Tensor, half: int, device="cpu"):
        self.matrix, self.half = matrix, half
        self.feats = matrix.on(device)
        self.bounds, self.centres, self.utts = bounds.to(device), centres.to(device), utts.to(device)
        self.offsets = torch.arange(-half, half + 1, device=self.feats.device)

    def __len__(self) -> int:
        return len(self.centres)

    @property
    def shape(self) -> Tuple[int, ...]:
        return (len(self), 1, self.feats.shape[1], 2 * self.half + 1)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            index = torch.arange(len(self), device=self.centres.device)[index]
        index = torch.as_tensor(index, device=self.centres.device)
        single = index.dim() == 0
        index = index.reshape(-1)
        bounds = self.bounds[self.utts[index]]
        frames = self.centres[index, None] + self.offsets
        frames = torch.minimum(torch.maximum(frames, bounds[:, :1]), bounds[:, 1:] - 1)
        batch = self.feats[frames].transpose(1, 2).unsqueeze(1).contiguous()
        return batch[0] if single else batch

    def to(self, device) -> "FrameWindows":
        return FrameWindows(self.matrix, self.bounds, self.centres, self.utts, self.half, device)


def child(folder: Path, name: str):
    """The entry of `folder` called `name` in any letter case (corpus copies differ), or None."""
    exact = folder / name
    if exact.exists():
        return exact
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    matches = sorted(e for e in entries if e.name.lower() == name.lower())
    return matches[0] if matches else None
