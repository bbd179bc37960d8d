"""IEMOCAP: EmoEvaluation parsing, the four classes, session folds, posterior averaging, UE."""

import numpy as np
import pytest
import torch

from layerwise.errors import UserError
from layerwise.tasks import TASKS, Split, make_task
from layerwise.tasks.iemocap import LABELS, Iemocap, read_evaluation, scan, unweighted_error
from speech_corpora import evaluation_block, iemocap_labels, write_iemocap


def test_evaluation_files_give_consensus_labels_and_ignore_annotator_lines(tmp_path):
    text = ("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            + evaluation_block(6.2901, 8.2357, "Ses01F_impro01_F000", "neu")
            + evaluation_block(10.01, 11.3925, "Ses01F_impro01_M001", "xxx")
            + evaluation_block(14.8872, 18.0175, "Ses01F_script01_1_F002", "exc"))
    (tmp_path / "Ses01F_impro01.txt").write_text(text)
    assert read_evaluation(tmp_path / "Ses01F_impro01.txt") == [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M001", "xxx"), ("Ses01F_script01_1_F002", "exc")]


def test_four_classes_with_excited_merged_into_happy(tmp_path):
    write_iemocap(tmp_path)
    written = iemocap_labels(tmp_path)
    utterances = scan(tmp_path)
    kept = {u.uid: u.label for u in utterances}
    assert kept == {uid: LABELS[label] for uid, label in written.items() if label in ("neu", "hap", "exc", "sad", "ang")}
    assert {written[uid] for uid in kept} == {"neu", "hap", "exc", "sad", "ang"}
    assert {kept[uid] for uid in kept if written[uid] in ("hap", "exc")} == {1}
    assert any(u.audio.parent.name == "Ses01M_script01_1" for u in utterances)  # scripted dialog folders


def test_improvised_or_scripted_dialogs_only(tmp_path):
    write_iemocap(tmp_path)
    everything = {u.uid for u in scan(tmp_path)}
    improvised = {u.uid for u in scan(tmp_path, "improvised")}
    scripted = {u.uid for u in scan(tmp_path, "scripted")}
    assert improvised and scripted and improvised | scripted == everything and not improvised & scripted
    assert all("_impro" in uid for uid in improvised)
    with pytest.raises(UserError, match="dialogs must be one of all, improvised, scripted"):
        make_task(Iemocap, {"dialogs": "acted"}, "test")


def test_leave_one_session_out_folds(tmp_path):
    write_iemocap(tmp_path)
    utterances = scan(tmp_path)
    session = torch.tensor([u.session for u in utterances])
    data = Iemocap(root=str(tmp_path), test_session=2).load()
    assert set(session[data.test.groups].tolist()) == {2}
    assert set(session[data.val.groups].tolist()) == {1}  # the session before the test session
    assert set(session[data.train.groups].tolist()) == {3, 4, 5}
    data = Iemocap(root=str(tmp_path), test_session=1, val_session=3).load()
    assert set(session[data.val.groups].tolist()) == {3}
    assert set(session[data.train.groups].tolist()) == {2, 4, 5}
    assert Iemocap(test_session=1).validation_session() == 5
    with pytest.raises(UserError, match="val_session must differ"):
        make_task(Iemocap, {"test_session": 3, "val_session": 3}, "test")


def test_every_hop_th_frame_gives_a_window_labelled_with_its_utterance(tmp_path):
    write_iemocap(tmp_path)
    all_frames = Iemocap(root=str(tmp_path)).load().train
    every_third = Iemocap(root=str(tmp_path), hop=3, context=5).load().train
    assert every_third.x.shape[1:] == (1, 40, 5)
    for u in torch.unique(all_frames.groups):
        n = int((all_frames.groups == u).sum())
        assert int((every_third.groups == u).sum()) == -(-n // 3)
        assert len(torch.unique(all_frames.y[all_frames.groups == u])) == 1


def test_unweighted_error_on_an_unbalanced_confusion():
    truth = np.array([0] * 6 + [1] * 2 + [2] * 2)
    pred = np.array([0] * 6 + [1, 0] + [0, 3])  # recalls: neutral 1, happy 1/2, sad 0
    assert unweighted_error(pred, truth) == pytest.approx(50.0)
    assert np.mean(pred == truth) == pytest.approx(0.7)  # weighted accuracy is much kinder


def test_an_utterance_is_predicted_from_its_averaged_posteriors():
    # Utterance 7: two windows lean to class 1, one is sure of class 0; the average says 0.
    # Utterance 9: one window, class 2.
    logits = torch.tensor([[0.0, 0.3, -9, -9], [0.0, 0.3, -9, -9], [9.0, 0, -9, -9], [0, 0, 5.0, 0]])
    split = Split(torch.zeros(4, 1), torch.tensor([0, 0, 0, 3]), torch.tensor([7, 7, 7, 9]))
    scores = Iemocap().score(logits, split)
    # Right on utterance 7 (neutral), wrong on utterance 9 (angry predicted as sad).
    assert scores["wa"] == pytest.approx(50.0)
    assert scores["ue"] == pytest.approx(50.0) and scores["ua"] == pytest.approx(50.0)


def test_a_missing_or_wrong_root_names_the_path_the_layout_and_the_setting(tmp_path):
    with pytest.raises(UserError, match=r"nowhere.*Session1/ .. Session5/.*task_options\.iemocap\] root"):
        Iemocap(root=str(tmp_path / "nowhere")).load()
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match=r"other is not an IEMOCAP corpus.*EmoEvaluation.*task_options\.iemocap\] root"):
        Iemocap(root=str(tmp_path / "other")).load()
    assert not Iemocap(root=str(tmp_path / "other")).available()


def test_a_damaged_corpus_names_what_is_missing(tmp_path):
    write_iemocap(tmp_path)
    wav = tmp_path / "Session3" / "sentences" / "wav" / "Ses03F_impro01" / "Ses03F_impro01_F001.wav"
    wav.unlink()
    with pytest.raises(UserError, match=r"Ses03F_impro01_F001\.wav is missing.*Ses03F_impro01\.txt"):
        scan(tmp_path)
    (tmp_path / "Session4").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="lacks Session4"):
        scan(tmp_path)


def test_a_session_without_labelled_utterances_is_named(tmp_path):
    write_iemocap(tmp_path)
    for txt in (tmp_path / "Session2" / "dialog" / "EmoEvaluation").glob("*.txt"):
        txt.write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")
    with pytest.raises(UserError, match=r"no utterances of the four classes for the test split \(test_session=2"):
        Iemocap(root=str(tmp_path), test_session=2).load()


def test_task_is_registered():
    assert TASKS["iemocap"] is Iemocap and Iemocap.num_classes == 4 and Iemocap.lower_is_better


@pytest.mark.parametrize("damage,line", [
    (lambda line: line.replace("]", "", 1), "missing ]"),
    (lambda line: line.rsplit("\t", 1)[0], "missing [V, A, D]"),
    (lambda line: line.replace(", 3.5000]", "]"), "two of V, A, D"),
    (lambda line: line.replace("\tneu\t", "\t"), "missing label"),
    (lambda line: line.replace("[", "", 1), "missing ["),
])
def test_a_consensus_line_that_does_not_parse_names_the_file_and_line(tmp_path, damage, line):
    blocks = [evaluation_block(1.0 + 3 * i, 3.0 + 3 * i, f"Ses01F_impro01_F00{i}", "neu") for i in range(3)]
    text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + "".join(blocks)
    lines = text.splitlines()
    number = lines.index(blocks[1].splitlines()[0])
    lines[number] = damage(lines[number])
    (tmp_path / "Ses01F_impro01.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"Ses01F_impro01\.txt, line {number + 1}: .*Ses01F_impro01_F001.*"
                                        r"expected an utterance line '\[start - end\]<TAB>utterance<TAB>label"):
        read_evaluation(tmp_path / "Ses01F_impro01.txt")


def test_a_label_outside_the_release_names_the_file_and_line(tmp_path):
    text = evaluation_block(1.0, 2.0, "Ses01F_impro01_F000", "neu").replace("\tneu\t", "\tneutral\t")
    (tmp_path / "Ses01F_impro01.txt").write_text(text)
    with pytest.raises(UserError, match=r"Ses01F_impro01\.txt, line 1: label 'neutral'; expected one of .*xxx"):
        read_evaluation(tmp_path / "Ses01F_impro01.txt")


def test_comments_blank_and_annotator_lines_anywhere_are_skipped(tmp_path):
    text = ("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            + evaluation_block(1.0, 2.0, "Ses01F_impro01_F000", "sad")
            + "% a comment between utterances\n   \n\t\n"
            + evaluation_block(3.0, 4.0, "Ses01F_impro01_M001", "fru")).replace("\n", "\r\n")
    (tmp_path / "Ses01F_impro01.txt").write_text(text)
    assert read_evaluation(tmp_path / "Ses01F_impro01.txt") == [("Ses01F_impro01_F000", "sad"),
                                                               ("Ses01F_impro01_M001", "fru")]


def test_a_list_of_test_sessions_is_one_single_session_task_per_fold(tmp_path):
    write_iemocap(tmp_path)
    task = Iemocap(root=str(tmp_path), test_session=[1, 3], hop=2)
    folds = task.folds()
    assert [f.test_session for f in folds] == [1, 3] and [f.fold for f in folds] == [1, 3]
    assert [f.validation_session() for f in folds] == [5, 2]  # the session before each test session
    assert all(f.hop == 2 and f.identity() == {**task.identity(), "test_session": f.test_session} for f in folds)
    assert task.fold is None and Iemocap(test_session=4).folds()[0].fold == 4
    with pytest.raises(UserError, match="several folds"):
        task.load()
    with pytest.raises(UserError, match=r"val_session must differ from test_session \(3\)"):
        make_task(Iemocap, {"test_session": [1, 3], "val_session": 3}, "test")
