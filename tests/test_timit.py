"""TIMIT: the LDC layout in both letter cases and both audio formats, splits, labels, folding, PER."""

import numpy as np
import pytest
import torch

from layerwise.audio import LogMel, read_audio
from layerwise.errors import UserError
from layerwise.tasks import TASKS, Split, make_task
from layerwise.tasks.timit import (CORE_TEST, DEV_SPEAKERS, FOLD_INDEX, PHONES, PHONES39, Q, Timit, edit_distance,
                                   frame_labels, merge_repeats, read_phn, scan)
from speech_corpora import write_timit


def fold(phone):
    i = int(FOLD_INDEX[PHONES.index(phone)])
    return None if i < 0 else PHONES39[i]


def test_the_61_phones_fold_to_the_39_of_lee_and_hon():
    assert len(PHONES) == 61 and len(set(PHONES)) == 61 and Timit.num_classes == 61
    assert len(PHONES39) == 39
    assert fold("q") is None
    assert [fold(p) for p in ["ao", "ax", "ax-h", "axr", "el", "em", "en", "eng", "nx", "hv", "ix", "ux", "zh"]] == \
        ["aa", "ah", "ah", "er", "l", "m", "n", "ng", "n", "hh", "ih", "uw", "sh"]
    assert sorted(p for p in PHONES if fold(p) == "sil") == sorted(["bcl", "dcl", "gcl", "kcl", "pcl", "tcl", "epi", "h#", "pau"])
    assert all(fold(p) == p for p in ["aa", "b", "dx", "er", "iy", "s", "sh", "z"])


def test_core_test_and_development_speakers_are_the_standard_sets():
    assert sorted(CORE_TEST) == [f"dr{i}" for i in range(1, 9)]
    for speakers in CORE_TEST.values():  # two men and one woman per dialect region
        assert sorted(s[0] for s in speakers) == ["f", "m", "m"]
    core = {s for v in CORE_TEST.values() for s in v}
    assert len(core) == 24 and len(DEV_SPEAKERS) == 50 and not core & DEV_SPEAKERS


def test_phn_lines_give_the_phone_at_each_frame_centre(tmp_path):
    (tmp_path / "x.phn").write_text("0 300 h#\n300 520 sh\n520 530 q\n530 900 iy\n")
    segments = read_phn(tmp_path / "x.phn")
    centres = LogMel().frame_centres(5)  # 200, 360, 520, 680, 840
    labels = frame_labels(segments, centres)
    assert [PHONES[i] for i in labels] == ["h#", "sh", "q", "iy", "iy"]
    assert list(frame_labels(segments, np.array([900, 5000]))) == [-1, -1]  # past the last phone
    assert [PHONES39[i] for i in merge_repeats(FOLD_INDEX.numpy()[labels])] == ["sil", "sh", "iy"]  # q removed


def test_a_bad_phn_line_names_the_file_and_line(tmp_path):
    (tmp_path / "x.phn").write_text("0 300 h#\n300 520 zz\n")
    with pytest.raises(UserError, match=r"x\.phn, line 2.*'300 520 zz'"):
        read_phn(tmp_path / "x.phn")


@pytest.mark.parametrize("upper,audio", [(True, "sphere"), (False, "riff")])
def test_layout_is_read_in_either_case_into_the_standard_splits(tmp_path, upper, audio):
    write_timit(tmp_path, upper=upper, audio=audio)
    utterances = scan(tmp_path)
    by_split = {s: sorted({u.uid.split("_")[0] for u in utterances if u.split == s}) for s in ("train", "val", "test")}
    assert by_split == {"train": ["fcjf0", "maeb0"], "val": ["faks0"], "test": ["fpas0", "mdab0"]}
    assert all(u.uid.split("_")[1] in ("si1027", "sx37") for u in utterances)  # SA sentences dropped
    assert len(utterances) == 2 * 5
    assert {u.audio.name for u in utterances} == {"SI1027.WAV", "SX37.WAV"} if upper else {"si1027.wav", "sx37.wav"}


def test_sphere_and_riff_corpora_give_the_same_examples(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path / "data"))
    write_timit(tmp_path / "data" / "timit", upper=True, audio="sphere", seed=3)
    write_timit(tmp_path / "b", upper=False, audio="riff", seed=3)
    a = Timit().load()  # found through $LAYERWISE_DATA/timit
    b = Timit(root=str(tmp_path / "b")).load()
    for sa, sb in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        index = torch.arange(len(sa))
        assert torch.equal(sa.x[index], sb.x[index]) and torch.equal(sa.y, sb.y) and torch.equal(sa.groups, sb.groups)


def test_examples_are_windows_labelled_from_the_phn_files_without_q(tmp_path):
    write_timit(tmp_path, seed=1)
    task = Timit(root=str(tmp_path), context=11)
    data = task.load()
    assert data.train.x.shape[1:] == task.input_shape == (1, 40, 11)
    first = scan(tmp_path)[0]
    signal, _ = read_audio(first.audio)
    n = LogMel().num_frames(len(signal))
    labels = frame_labels(read_phn(first.phn), LogMel().frame_centres(n))
    expected = labels[(labels >= 0) & (labels != PHONES.index("q"))]
    mine = data.train.y[data.train.groups == 0]
    assert len(expected) < n and torch.equal(mine, torch.as_tensor(expected))
    for split in (data.train, data.val, data.test):
        assert not (split.y == PHONES.index("q")).any()
        assert torch.all(torch.diff(split.groups) >= 0)  # each utterance's frames together, in order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TEST", "TRAIN"]  # the cache lives elsewhere


def test_phones_shorter_than_a_hop_are_in_the_reference_so_perfect_frames_score_their_deletions(tmp_path):
    write_timit(tmp_path, seed=2)
    task = Timit(root=str(tmp_path))
    data = task.load()
    # The corpus has phones no frame centre falls in (short releases): no frame classifier can
    # output them, and the reference, the .PHN transcription, holds them: they are deletions.
    centres = LogMel().frame_centres
    test = [u for u in scan(tmp_path) if u.split == "test"]
    deletions, reference = 0, 0
    for utt in test:
        segments = read_phn(utt.phn)
        n = LogMel().num_frames(len(read_audio(utt.audio)[0]))
        frames = frame_labels(segments, centres(n))
        folded = merge_repeats(FOLD_INDEX[torch.from_numpy(segments.phones)].numpy())
        heard = merge_repeats(FOLD_INDEX[torch.from_numpy(frames[(frames >= 0) & (frames != Q)])].numpy())
        deletions += edit_distance(heard, folded)
        reference += len(folded)
    assert deletions > 0
    perfect = torch.nn.functional.one_hot(data.test.y, 61).float()
    scores = Timit(root=str(tmp_path)).score(perfect, data.test)  # a fresh task reads the references too
    assert scores["fer"] == 0 and scores["per"] == pytest.approx(100 * deletions / reference) and scores["per"] > 0
    wrong = perfect.roll(1, dims=1)  # every frame one phone off
    assert Timit(root=str(tmp_path)).score(wrong, data.test)["per"] > 50


class Transcribed(Timit):
    """Timit with the references given, not read from a corpus."""

    def __init__(self, *transcriptions):
        super().__init__()
        self.given = [merge_repeats(FOLD_INDEX[phones(*t.split())].numpy()) for t in transcriptions]

    def references(self, utterances):
        return [self.given[u] for u in utterances]


def test_a_phone_that_covers_no_frame_is_a_deletion():
    # The transcription "h# aa b aa h#": b is shorter than a hop, so no frame is labelled b.
    frames = phones("h#", "aa", "aa", "aa", "h#")
    logits = torch.nn.functional.one_hot(frames, 61).float()
    scores = Transcribed("h# aa b aa h#").score(logits, Split(torch.zeros(5, 1), frames, torch.zeros(5, dtype=torch.long)))
    assert scores["fer"] == 0 and scores["per"] == pytest.approx(100 * 2 / 5)  # sil aa sil: b and an aa deleted


def test_edit_distance_counts_substitutions_deletions_and_insertions():
    ref = [1, 2, 3, 4]
    assert edit_distance([1, 2, 3, 4], ref) == 0
    assert edit_distance([1, 9, 3, 4], ref) == 1  # one substitution
    assert edit_distance([1, 3, 4], ref) == 1  # one deletion
    assert edit_distance([1, 2, 7, 3, 4], ref) == 1  # one insertion
    assert edit_distance([9, 2, 4, 5, 6], ref) == 4  # sub 1->9, del 3, ins 5, ins 6
    assert edit_distance([], ref) == 4 and edit_distance([5, 6], []) == 2
    assert list(merge_repeats([3, 3, -1, 3, 5, 5, 3])) == [3, 5, 3]


def phones(*names):
    return torch.tensor([PHONES.index(p) for p in names])


def test_phone_error_rate_of_a_hand_worked_split():
    # Three utterances; references from their transcriptions, folded and merged:
    # sil aa b sil | s iy | m aa n (9 phones).
    task = Transcribed("h# aa ao b pau", "s iy", "m aa n")
    truth = torch.cat([phones("h#", "aa", "ao", "ao", "b", "pau"), phones("s", "iy", "iy"), phones("m", "aa", "n")])
    # sil aa ae b sil: one insertion; sh iy: one substitution; m n: one deletion.
    pred = torch.cat([phones("h#", "ao", "ae", "b", "b", "h#"), phones("sh", "sh", "iy"), phones("m", "m", "n")])
    groups = torch.tensor([0] * 6 + [1] * 3 + [2] * 3)
    logits = torch.nn.functional.one_hot(pred, 61).float()
    scores = task.score(logits, Split(torch.zeros(12, 1), truth, groups))
    assert scores["per"] == pytest.approx(100 * 3 / 9)
    # Frames wrong after folding: ao/ae, ao/b; s/sh, iy/sh; aa/m.
    assert scores["fer"] == pytest.approx(100 * 5 / 12)


def test_a_missing_or_wrong_root_names_the_path_the_layout_and_the_setting(tmp_path):
    with pytest.raises(UserError, match=r"nowhere.*TRAIN/ and TEST/.*task_options\.timit\] root"):
        Timit(root=str(tmp_path / "nowhere")).load()
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=r"other is not a TIMIT corpus.*DR1\.\.DR8.*task_options\.timit\] root"):
        Timit(root=str(tmp_path / "other")).load()
    assert not Timit(root=str(tmp_path / "other")).available()
    write_timit(tmp_path / "ok")
    assert Timit(root=str(tmp_path / "ok")).available()


def test_task_is_registered_and_checks_its_options():
    assert TASKS["timit"] is Timit
    assert make_task(Timit, {"context": 15}, "test").input_shape == (1, 40, 15)
    with pytest.raises(UserError, match="odd"):
        make_task(Timit, {"context": 20}, "test")


def first_test_utterance(root):
    return next(u for u in scan(root) if u.split == "test")


def test_audio_running_past_the_last_phone_loads(tmp_path):
    # Real TIMIT's last h# ends at or a little before the audio's last sample.
    write_timit(tmp_path, seed=4)
    utterances = scan(tmp_path)
    beyond = [len(read_audio(u.audio)[0]) - read_phn(u.phn).ends[-1] for u in utterances]
    assert min(beyond) >= 0 and max(beyond) > 0
    assert len(Timit(root=str(tmp_path)).load().test) > 0


@pytest.mark.parametrize("damage", ["past the audio", "out of order", "well before the audio ends"])
def test_a_phn_that_does_not_fit_its_audio_names_both_files_and_the_samples(tmp_path, damage):
    write_timit(tmp_path, seed=5)
    utt = first_test_utterance(tmp_path)
    samples = len(read_audio(utt.audio)[0])
    lines = utt.phn.read_text().splitlines()
    if damage == "past the audio":
        start, _, phone = lines[-1].split()
        lines[-1] = f"{start} {samples + 480} {phone}"
        expected = rf"line {len(lines)} .*ends at sample {samples + 480}, past the end of the audio .*{samples} samples"
    elif damage == "well before the audio ends":  # another, shorter utterance's labels
        while samples - int(lines[-1].split()[1]) <= 8000:
            lines.pop()
        end = int(lines[-1].split()[1])
        expected = rf"line {len(lines)} .*the last segment ends at sample {end}, .* s before the end of the audio .*at most 0.5 s"
    else:
        lines[2], lines[3] = lines[3], lines[2]  # line 4 now starts before line 3 ends
        start, end = int(lines[3].split()[0]), int(lines[2].split()[1])
        expected = rf"line 4 .*starts at sample {start}, before the previous one ends \(sample {end}\)"
    utt.phn.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=expected) as err:
        Timit(root=str(tmp_path)).load()
    assert str(utt.phn) in str(err.value) and str(utt.audio) in str(err.value)

