"""`layerwise run paper-speech` end to end on tiny fake corpora, on the CPU, in seconds."""

import csv
import json

import numpy as np
import pytest

from layerwise import observations
from layerwise.audio import read_audio
from layerwise.cli import main
from layerwise.config import load_config
from layerwise.sweep import plan
from layerwise.tasks.timit import scan as timit_scan
from speech_corpora import write_iemocap, write_sphere, write_timit

TINY = ["--set", "train.epochs=1", "--set", "train.device=cpu", "--set", "train.amp=false",
        "--set", "train.batch_size=64", "--set", "seeds=[0]", "--set", "workers=1", "--quiet"]  # jobs in plan order
for arch in ("model-a", "model-b"):
    TINY += ["--set", f"arch_options.{arch}.width=4", "--set", f"arch_options.{arch}.hidden=16"]


def test_paper_speech_config_is_both_directions_both_models_every_lc():
    cfg = load_config("paper-speech")
    assert cfg.tasks == ["timit", "iemocap"] and cfg.archs == ["model-a", "model-b"]
    assert sorted(map(tuple, cfg.pairs)) == [("iemocap", "timit"), ("timit", "iemocap")]
    assert cfg.frozen == "all" and cfg.report.panels == "pair-arch"
    assert cfg.task("timit").input_shape == cfg.task("iemocap").input_shape
    assert cfg.seeds == [0, 1, 2] and cfg.task("iemocap").test_session == [1, 2, 3, 4, 5]
    assert cfg.train.finetune_lr is None  # the paper's single recipe


def small(overrides=()):
    """paper-speech with narrow networks (planning builds each architecture once)."""
    sets = [f"arch_options.{arch}.{k}" for arch in ("model-a", "model-b") for k in ("width=4", "hidden=16")]
    return load_config("paper-speech", sets + list(overrides))


def test_every_iemocap_fold_is_a_task_of_its_own_in_both_directions():
    jobs = plan(small())
    scratch = {(j.arch, j.target, j.seed, j.fold): j for j in jobs if j.kind == "scratch"}
    transfers = [j for j in jobs if j.kind == "transfer"]
    assert sorted({k[3] for k in scratch if k[1] == "iemocap"}) == [1, 2, 3, 4, 5]
    assert {k[3] for k in scratch if k[1] == "timit"} == {None}
    # per seed and architecture: 1 + 5 primaries, 2 directions x 5 folds x (L_H + 1) transfers
    assert len(scratch) == 3 * 2 * 6
    assert len(transfers) == 3 * 2 * 5 * (7 + 9)
    assert len({j.key for j in jobs}) == len(jobs) == 516
    for t in transfers:
        baseline = scratch[t.arch, t.target, t.seed, t.fold]  # what the analysis compares with
        primary = scratch[t.arch, t.source, t.seed, t.source_fold]
        assert t.primary == primary.key
        if t.target == "iemocap":  # timit -> iemocap(fold k): the one TIMIT primary, the fold-k baseline
            assert t.source_fold is None and t.fold in range(1, 6) and baseline.fold == t.fold
        else:  # iemocap(fold k) -> timit: the fold-k primary, the one TIMIT baseline
            assert t.fold is None and t.source_fold in range(1, 6) and primary.fold == t.source_fold
    for arch, depth in (("model-a", 6), ("model-b", 8)):
        for fold in range(1, 6):
            into = [t for t in transfers if (t.arch, t.seed, t.target, t.fold) == (arch, 0, "iemocap", fold)]
            out = [t for t in transfers if (t.arch, t.seed, t.source, t.source_fold) == (arch, 0, "iemocap", fold)]
            assert [t.frozen for t in into] == [t.frozen for t in out] == list(range(depth + 1))


def test_a_fold_is_the_same_job_as_a_config_with_that_single_test_session():
    # A fold's identity is a single-session task: runs made with `test_session = 3` are reused.
    folded = {j.describe(): j.key for j in plan(small()) if 3 in (j.fold, j.source_fold) or j.target == "timit" and j.kind == "scratch"}
    single = {j.describe(): j.key for j in plan(small(["task_options.iemocap.test_session=3"]))}
    assert folded == single
    assert "model-a iemocap[fold 3]->timit l_c=2 seed 1" in single


@pytest.mark.parametrize("sessions, words", [("[1,1]", ["distinct sessions", "[1, 1]"]), ("[]", ["test_session"]),
                                             ("[4,6]", ["1..5"])])
def test_bad_test_sessions_name_the_option(tmp_path, capsys, sessions, words):
    code = main(["run", "paper-speech", "--out", str(tmp_path / "run"), "--set",
                 f"task_options.iemocap.test_session={sessions}"] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "task_options.iemocap" in err
    assert all(word in err for word in words), err


def test_records_and_results_carry_the_fold_of_target_and_source(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path / "data"))
    write_timit(tmp_path / "data" / "timit")
    write_iemocap(tmp_path / "data" / "iemocap")
    out = tmp_path / "run"
    code = main(["run", "paper-speech", "--out", str(out), "--set", 'archs=["model-a"]', "--set", "frozen=[0,6]",
                 "--set", "task_options.iemocap.test_session=[4,5]"] + TINY)
    assert code == 0, capsys.readouterr().err
    records = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")]
    assert len(records) == 3 + 2 * 2 * 2
    primaries = {(r["target"], r["fold"]): r["key"] for r in records if r["kind"] == "scratch"}
    assert set(primaries) == {("timit", None), ("iemocap", 4), ("iemocap", 5)}
    for r in records:
        if r["kind"] == "transfer":
            assert r["primary"] == primaries[r["source"], r["source_fold"]]
            assert (r["fold"] is None) == (r["target"] == "timit") != (r["source_fold"] is None)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["source"], r["target"], r["fold"], r["source_fold"]) for r in rows} == {
        ("", "timit", "", ""), ("", "iemocap", "4", ""), ("", "iemocap", "5", ""),
        ("timit", "iemocap", "4", ""), ("timit", "iemocap", "5", ""),
        ("iemocap", "timit", "", "4"), ("iemocap", "timit", "", "5")}
    # The analysis compares each fold with its own fold's baseline, then averages over folds.
    ue = {(r["kind"], r["fold"], r["frozen"]): r["test"]["ue"] for r in records if r["target"] == "iemocap"}
    gains = [ue["scratch", k, None] - ue["transfer", k, 6] for k in (4, 5)]
    (point,) = [p for p in observations(out / "results.csv")["curves"]
                if (p["source"], p["target"], p["frozen"]) == ("timit", "iemocap", 6)]
    assert point["gain"]["mean"] == pytest.approx(sum(gains) / 2, abs=1e-3) and point["seeds"] == 1


def test_paper_speech_runs_through_the_command_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_timit(data / "timit")  # found through $LAYERWISE_DATA
    write_iemocap(tmp_path / "elsewhere")  # found through its root option
    monkeypatch.setenv("LAYERWISE_DATA", str(data))
    out = tmp_path / "run"
    code = main(["run", "paper-speech", "--out", str(out), "--set", "task_options.iemocap.test_session=5",
                 "--set", f"task_options.iemocap.root={tmp_path / 'elsewhere'}"] + TINY)
    assert code == 0, capsys.readouterr().err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    test = [r for r in rows if r["split"] == "test"]
    for arch, depth in (("model-a", 6), ("model-b", 8)):
        for source, target, metric in (("timit", "iemocap", "ue"), ("iemocap", "timit", "per")):
            frozen = {int(r["frozen"]) for r in test if r["arch"] == arch and r["source"] == source
                      and r["target"] == target and r["metric"] == metric}
            assert frozen == set(range(depth + 1))
    assert {r["metric"] for r in test} >= {"per", "fer", "ue", "wa"}
    assert {r["fold"] for r in test if r["target"] == "iemocap"} == {"5"}  # the one fold asked for
    assert (out / "report.html").exists() and any(out.glob("*.png"))
    assert (data / "cache").is_dir() and sorted(p.name for p in (data / "timit").iterdir()) == ["TEST", "TRAIN"]


def test_a_missing_corpus_is_one_line_naming_path_and_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    code = main(["run", "paper-speech", "--out", str(tmp_path / "run")] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert str(tmp_path / "timit") in err and "TRAIN/ and TEST/" in err and "task_options.timit" in err


def damage_sphere_header(data):
    """A TIMIT test utterance whose SPHERE header declares fewer samples than it holds."""
    utt = next(u for u in timit_scan(data / "timit") if u.split == "test")
    samples = np.round(read_audio(utt.audio)[0] * 32768).astype(np.int16)
    write_sphere(utt.audio, samples, sample_count=len(samples) - 1000)
    return [f"{utt.audio}: the NIST SPHERE header says sample_count {len(samples) - 1000}",
            f"holds {len(samples)} samples"]


def damage_phn(data):
    """A TIMIT test utterance whose last phone ends past its audio."""
    utt = next(u for u in timit_scan(data / "timit") if u.split == "test")
    samples = len(read_audio(utt.audio)[0])
    lines = utt.phn.read_text().splitlines()
    start, _, phone = lines[-1].split()
    utt.phn.write_text("\n".join(lines[:-1] + [f"{start} {samples + 200} {phone}"]) + "\n")
    return [str(utt.phn), f"ends at sample {samples + 200}, past the end of the audio {utt.audio}",
            f"{samples} samples"]


def damage_evaluation(data):
    """An IEMOCAP consensus line without its [V, A, D] (line 3 of the file: after the comment and a blank)."""
    txt = data / "iemocap" / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro01.txt"
    lines = txt.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0]
    txt.write_text("\n".join(lines) + "\n")
    return [f"{txt}, line 3", "[V, A, D]"]


@pytest.mark.parametrize("damage, workers", [(damage_sphere_header, 1), (damage_phn, 1), (damage_evaluation, 1),
                                             (damage_evaluation, 2)])
def test_a_damaged_corpus_file_stops_the_run_with_one_line_naming_it(tmp_path, monkeypatch, capsys, damage, workers):
    data = tmp_path / "data"
    write_timit(data / "timit")
    write_iemocap(data / "iemocap")
    expected = damage(data)
    monkeypatch.setenv("LAYERWISE_DATA", str(data))
    out = tmp_path / "run"
    code = main(["run", "paper-speech", "--out", str(out), *TINY, "--set", f"workers={workers}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("layerwise: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1
    assert all(part in errors[0] for part in expected), errors[0]
    # Every corpus is read before the first job trains: nothing trained, nothing recorded.
    assert not list(out.glob("jobs/*.json"))
