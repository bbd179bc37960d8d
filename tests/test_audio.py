"""Log-mel features, audio readers, the feature cache and the lazy window view."""

import os
import time

import numpy as np
import pytest
import torch

from layerwise.audio import (FeatureMatrix, FrameWindows, LogMel, cached_features, log_mel, mel_filterbank,
                             read_audio)
from layerwise.errors import UserError
from speech_corpora import write_riff, write_sphere


def slow_log_mel(signal, rate=16000, n_mels=40):
    """The pipeline written out frame by frame, from the definitions, sharing no code with audio.py."""
    x = [signal[0]] + [signal[n] - 0.97 * signal[n - 1] for n in range(1, len(signal))]
    win, hop, nfft = 400, 160, 512
    hamming = [0.54 - 0.46 * np.cos(2 * np.pi * n / (win - 1)) for n in range(win)]
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731  (HTK)
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    points = [inv(mel(rate / 2) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    rows = []
    for start in range(0, len(x) - win + 1, hop):
        frame = np.zeros(nfft)
        frame[:win] = [x[start + n] * hamming[n] for n in range(win)]
        spectrum = [abs(sum(frame * np.exp(-2j * np.pi * k * np.arange(nfft) / nfft))) ** 2 for k in range(nfft // 2 + 1)]
        bands = []
        for m in range(1, n_mels + 1):
            total = 0.0
            for k, power in enumerate(spectrum):
                f = k * rate / nfft
                if points[m - 1] < f <= points[m]:
                    total += power * (f - points[m - 1]) / (points[m] - points[m - 1])
                elif points[m] < f < points[m + 1]:
                    total += power * (points[m + 1] - f) / (points[m + 1] - points[m])
            bands.append(np.log(max(total, 1e-10)))
        rows.append(bands)
    rows = np.array(rows)
    return rows - rows.mean(axis=0)


def test_log_mel_matches_a_direct_per_frame_computation():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(400 + 160 * 5 + 37) * 0.1
    fast = log_mel(signal)
    slow = slow_log_mel(signal)
    assert fast.shape == (6, 40) == slow.shape
    assert np.allclose(fast, slow, atol=1e-3)


def test_a_tone_lights_up_the_mel_band_of_its_frequency():
    t = np.arange(16000) / 16000
    signal = np.where(t < 0.5, 0.0, np.sin(2 * np.pi * 1000 * t)) + 1e-3 * np.random.default_rng(0).standard_normal(len(t))
    feats = log_mel(signal)
    rise = feats[-10:].mean(0) - feats[:10].mean(0)
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)[1:-1] / 2595) - 1)
    assert abs(centres[rise.argmax()] - 1000) < 60


def test_filters_peak_at_one_and_cover_the_band():
    bank = mel_filterbank(LogMel())
    assert bank.shape == (40, 257)
    assert np.all(bank >= 0) and np.all(bank.max(axis=1) <= 1)
    assert np.all(bank.sum(axis=0)[2:-2] > 0)  # no gaps between neighbouring filters


def test_frames_every_10ms_with_their_centre_samples():
    s = LogMel()
    assert (s.win, s.hop) == (400, 160)
    assert s.num_frames(400) == 1 and s.num_frames(559) == 1 and s.num_frames(560) == 2
    assert s.num_frames(100) == 1  # a short signal is padded to one window
    assert list(s.frame_centres(3)) == [200, 360, 520]
    assert log_mel(np.ones(100)).shape == (1, 40)


@pytest.mark.parametrize("big_endian", [False, True])
def test_sphere_and_riff_files_give_the_same_samples(tmp_path, big_endian):
    samples = np.array([0, 1, -1, 32767, -32768, 1234, -4321] * 50, dtype=np.int16)
    write_sphere(tmp_path / "a.wav", samples, big_endian=big_endian)
    write_riff(tmp_path / "b.wav", samples)
    (sph, rate_a), (wav, rate_b) = read_audio(tmp_path / "a.wav"), read_audio(tmp_path / "b.wav")
    assert rate_a == rate_b == 16000
    assert np.array_equal(sph, samples / 32768.0) and np.array_equal(wav, samples / 32768.0)


def test_compressed_sphere_is_refused_naming_the_file(tmp_path):
    write_sphere(tmp_path / "x.wav", np.zeros(10, np.int16), coding="pcm,embedded-shorten-v2.00")
    with pytest.raises(UserError, match=r"x\.wav.*shorten.*sph2pipe"):
        read_audio(tmp_path / "x.wav")


def test_a_truncated_sphere_file_is_refused_naming_the_file(tmp_path):
    write_sphere(tmp_path / "x.wav", np.zeros(100, np.int16))
    data = (tmp_path / "x.wav").read_bytes()
    (tmp_path / "x.wav").write_bytes(data[:-20])
    with pytest.raises(UserError, match=r"x\.wav: truncated.*100 samples.*90"):
        read_audio(tmp_path / "x.wav")


def test_feature_cache_is_computed_once_and_keyed_by_settings(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(1)
    files = []
    for i, n in enumerate([1000, 2000]):
        write_riff(corpus / f"{i}.wav", (rng.standard_normal(n) * 3000).astype(np.int16))
        files.append(corpus / f"{i}.wav")
    feats, offsets, samples = cached_features(files, LogMel(), tmp_path / "cache", "x", "SETTING")
    assert list(offsets) == [0, 4, 15] and feats.shape == (15, 40) and list(samples) == [1000, 2000]
    assert np.allclose(feats[4:], log_mel(read_audio(files[1])[0]))
    assert sorted(p.name for p in corpus.iterdir()) == ["0.wav", "1.wav"]  # nothing written in the corpus

    import layerwise.audio as audio

    def recompute(*args):
        raise RuntimeError("recomputed")

    monkeypatch.setattr(audio, "log_mel", recompute)
    again = cached_features(files, LogMel(), tmp_path / "cache", "x", "SETTING").feats
    assert np.array_equal(again, feats)
    with pytest.raises(RuntimeError, match="recomputed"):
        cached_features(files, LogMel(n_mels=20), tmp_path / "cache", "x", "SETTING")


def test_unwritable_cache_names_the_setting(tmp_path):
    write_riff(tmp_path / "a.wav", np.zeros(800, np.int16))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"file.*\[task_options.t\] cache"):
        cached_features([tmp_path / "a.wav"], LogMel(), tmp_path / "file" / "cache", "t", "[task_options.t] cache")


HOUR_AGO = time.time_ns() - 3600 * 10**9


def noise_wavs(folder, seeds, n=3000, mtime_ns=None):
    """RIFF files of noise, one per seed, all of `n` samples (so all of one size)."""
    folder.mkdir(exist_ok=True)
    files = []
    for i, seed in enumerate(seeds):
        path = folder / f"{i}.wav"
        write_riff(path, (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16))
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        files.append(path)
    return files


def counting_log_mel(monkeypatch):
    """Patch the feature computation to count the files it is run on."""
    import layerwise.audio as audio

    calls = []
    real = audio.log_mel
    monkeypatch.setattr(audio, "log_mel", lambda signal, s: calls.append(1) or real(signal, s))
    return calls


def test_a_wav_replaced_by_other_audio_of_the_same_size_gets_fresh_features(tmp_path, monkeypatch):
    files = noise_wavs(tmp_path / "corpus", [1, 2], mtime_ns=HOUR_AGO)
    before = cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats
    size = files[1].stat().st_size
    noise_wavs(tmp_path / "corpus", [1, 3])  # file 1 rewritten: other audio, same size, new time
    assert files[1].stat().st_size == size
    calls = counting_log_mel(monkeypatch)
    after = cached_features(files, LogMel(), tmp_path / "cache", "x", "S")
    assert np.allclose(after.feats[after.offsets[1]:], log_mel(read_audio(files[1])[0]))
    assert not np.allclose(after.feats[after.offsets[1]:], before[after.offsets[1]:])
    assert np.array_equal(after.feats[:after.offsets[1]], before[:after.offsets[1]])
    assert len(calls) == 1  # file 1 only: file 0 was rewritten with the same audio, and is hashed


def test_a_rewrite_that_keeps_size_and_time_is_caught_by_the_hash_while_the_time_is_recent(tmp_path):
    # A clock that ticks coarsely can give a file rewritten within one tick its old time.
    files = noise_wavs(tmp_path / "corpus", [1])
    stamp = files[0].stat().st_mtime_ns
    cached_features(files, LogMel(), tmp_path / "cache", "x", "S")
    noise_wavs(tmp_path / "corpus", [2])
    os.utime(files[0], ns=(stamp, stamp))
    again = cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats
    assert np.allclose(again, log_mel(read_audio(files[0])[0]))


@pytest.mark.parametrize("how", ["in place", "renamed over"])  # cp -p; rsync -a and tar x
def test_other_audio_given_the_old_size_and_time_gets_fresh_features(tmp_path, monkeypatch, how):
    files = noise_wavs(tmp_path / "corpus", [1, 2], mtime_ns=HOUR_AGO)
    cached_features(files, LogMel(), tmp_path / "cache", "x", "S")
    other = noise_wavs(tmp_path / "other", [3, 4], mtime_ns=HOUR_AGO)  # same size, and the same time below
    if how == "in place":
        files[1].write_bytes(other[1].read_bytes())
    else:
        os.replace(other[1], files[1])
    os.utime(files[1], ns=(HOUR_AGO, HOUR_AGO))
    calls = counting_log_mel(monkeypatch)
    after = cached_features(files, LogMel(), tmp_path / "cache", "x", "S")
    assert np.allclose(after.feats[after.offsets[1]:], log_mel(read_audio(files[1])[0]))
    assert len(calls) == 1  # that file only


def test_a_touched_file_is_hashed_once_and_not_recomputed(tmp_path, monkeypatch):
    import layerwise.audio as audio

    files = noise_wavs(tmp_path / "corpus", [1, 2], mtime_ns=HOUR_AGO)
    first = cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats
    os.utime(files[0], ns=(HOUR_AGO + 10**9, HOUR_AGO + 10**9))  # same content, new time
    calls = counting_log_mel(monkeypatch)
    assert np.array_equal(cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats, first)
    assert calls == []

    def no_hashing(path):
        raise AssertionError(f"hashed {path} again")

    monkeypatch.setattr(audio, "file_hash", no_hashing)  # the new time was recorded
    assert np.array_equal(cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats, first)


def test_a_damaged_cache_entry_is_computed_again(tmp_path):
    files = noise_wavs(tmp_path / "corpus", [1])
    first = cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats
    (entry,) = (tmp_path / "cache").glob("x-features-*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    assert np.array_equal(cached_features(files, LogMel(), tmp_path / "cache", "x", "S").feats, first)


def windows(half=2):
    # Frame t of the matrix holds the value t in every band: windows show which frames they took.
    feats = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, 3)
    bounds = torch.tensor([[0, 3], [3, 7]])
    centres = torch.tensor([0, 2, 3, 4, 6])
    utts = torch.tensor([0, 0, 1, 1, 1])
    return FrameWindows(FeatureMatrix(feats), bounds, centres, utts, half)


def test_windows_repeat_edge_frames_and_never_cross_utterances():
    x = windows()
    assert len(x) == 5 and x.shape == (5, 1, 3, 5)
    batch = x[torch.tensor([0, 1, 2, 3, 4])]
    assert batch.shape == (5, 1, 3, 5)
    frames = batch[:, 0, 0, :].long().tolist()
    assert frames == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [3, 3, 3, 4, 5], [3, 3, 4, 5, 6], [4, 5, 6, 6, 6]]
    assert torch.equal(batch[:, 0, 1], batch[:, 0, 2])  # bands stay bands
    assert torch.equal(x[3], batch[3]) and torch.equal(x[1:3], batch[1:3])


def test_windows_move_to_a_device_sharing_one_matrix():
    x = windows()
    moved = x.to("cpu")
    assert torch.equal(moved[torch.tensor([4, 0])], x[torch.tensor([4, 0])])
    matrix = FeatureMatrix(torch.zeros(2, 2))
    assert matrix.on("meta") is matrix.on("meta") and matrix.on("meta").device.type == "meta"


def test_a_sphere_header_that_undercounts_its_samples_names_the_file_and_both_counts(tmp_path):
    write_sphere(tmp_path / "x.wav", np.zeros(100, np.int16), sample_count=60)
    with pytest.raises(UserError, match=r"x\.wav: the NIST SPHERE header says sample_count 60, but the file "
                                        r"holds 100 samples"):
        read_audio(tmp_path / "x.wav")
    write_sphere(tmp_path / "y.wav", np.zeros(100, np.int16))
    (tmp_path / "y.wav").write_bytes((tmp_path / "y.wav").read_bytes() + b"\0")  # half a sample more
    with pytest.raises(UserError, match=r"y\.wav: .*sample_count 100, but the file holds 100\.5 samples"):
        read_audio(tmp_path / "y.wav")
