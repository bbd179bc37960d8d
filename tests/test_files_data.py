"""Tasks from your own files (tasks/files.py): image folders, arrays and audio folders written here
in their on-disk formats (PNG and JPEG by Pillow, WAV by soundfile, .npz/.npy by numpy), read
back with exact labels and splits, and every bad input named with its path."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from conftest import cli_env
from layerwise.cli import main
from layerwise.config import config_from_dict
from layerwise.errors import UserError
from layerwise.sweep import plan
from layerwise.tasks.files import AudioFolder, ImageFolder, stratified_split, task_from_path

RATE = 16000


def write_image(path: Path, value: int, size=(6, 5), mode="L"):
    """A flat image of one grey level (`value`), so every pixel read back is known exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, value // 2, 255 - value)
    Image.new(mode, size, colour).save(path)  # size is (width, height)


def image_folder(root: Path, counts, suffix=".png", mode="L", size=(6, 5)):
    """root/<class>/<i>.png for each (class, count), the grey level naming the class and file:
    40 * class index + i."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{i}{suffix}", 40 * c + i, size, mode)
    return root


def write_wav(path: Path, freq: float, seconds: float = 0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(RATE * seconds)) / RATE
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), RATE, subtype="PCM_16")


def grey_levels(split):
    """The grey level of each example of a split (images are flat, so one pixel says it)."""
    return split.x.data[:, 0, 0, 0].tolist()


# --- image folders -------------------------------------------------------------------------------

def test_image_folder_with_split_folders_gives_exact_labels_pixels_and_splits(tmp_path):
    root = tmp_path / "pics"
    image_folder(root / "train", {"cat": 3, "dog": 2})
    image_folder(root / "val", {"cat": 1, "dog": 1}, suffix=".jpg")
    image_folder(root / "test", {"cat": 1, "dog": 2}, suffix=".jpeg")
    task = task_from_path(root)
    assert isinstance(task, ImageFolder) and task.name == "pics"
    assert task.classes == ["cat", "dog"] and task.num_classes == 2 and task.input_shape == (1, 5, 6)
    data = task.load()
    assert data.train.y.tolist() == [0, 0, 0, 1, 1] and grey_levels(data.train) == [0, 1, 2, 40, 41]
    assert data.val.y.tolist() == [0, 1] and data.test.y.tolist() == [0, 1, 1]
    # JPEG is lossy, but a flat grey survives within a level or two
    assert np.allclose(grey_levels(data.val), [0, 40], atol=2) and np.allclose(grey_levels(data.test), [0, 40, 41], atol=2)
    x = data.train.x[torch.arange(5)]  # standardised by the training split's statistics
    assert abs(x.mean().item()) < 1e-5


def test_bmp_gif_webp_and_tiff_images_are_read_not_ignored(tmp_path):
    root = tmp_path / "pics"
    for i, suffix in enumerate((".bmp", ".gif", ".webp", ".tif", ".tiff", ".png")):
        write_image(root / "train" / "a" / f"{i}{suffix}", 10)
        write_image(root / "train" / "b" / f"{i}{suffix}", 200)
    for split in ("val", "test"):
        image_folder(root / split, {"a": 1, "b": 1})
    data = task_from_path(root, shape=[1, 5, 6]).load()  # a GIF opens as a palette image: read as colour unset
    assert data.train.y.tolist() == [0] * 6 + [1] * 6
    assert np.allclose(grey_levels(data.train), [10] * 6 + [200] * 6, atol=3)  # WebP is lossy


def test_a_class_with_no_val_or_test_examples_is_named_in_a_warning(tmp_path, capsys):
    root = image_folder(tmp_path / "pics", {"common": 10, "rare": 1})
    task_from_path(root).load()
    err = capsys.readouterr().err
    assert f"{root}: class rare has no examples in the val split" in err
    assert f"{root}: class rare has no examples in the test split" in err and "common" not in err


def test_image_folder_is_resized_and_converted_to_the_given_shape(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 4, "b": 4}, mode="RGB", size=(9, 7))
    grey = task_from_path(root, shape=[1, 4, 3])
    assert grey.input_shape == (1, 4, 3) and grey.load().train.x.data.shape[1:] == (1, 4, 3)
    colour = task_from_path(root, shape=[4, 3])  # channels as the files have them
    assert colour.input_shape == (3, 4, 3)
    pixels = colour.load().train.x.data[0]
    assert pixels[:, 0, 0].tolist() == [0, 0, 255]  # (value, value // 2, 255 - value) for the first image of a
    assert task_from_path(root, mode="L").input_shape == (1, 7, 9)


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 4, "b": 4}, size=(6, 5))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: rotate 90 degrees clockwise to view
    for name in ("a", "b"):
        for i in range(4):
            path = root / name / f"{i}.png"
            Image.open(path).rotate(90, expand=True).save(path.with_suffix(".jpg"), exif=exif)
            path.unlink()
    assert task_from_path(root).load().train.x.data.shape[1:] == (1, 5, 6)


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 4, "b": 4})
    deep = root / "a" / "0.png"
    Image.fromarray(np.full((5, 6), 257 * 100, dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    data = task_from_path(root).load()
    assert 100 in sum((grey_levels(s) for s in (data.train, data.val, data.test)), [])


def test_seeded_splits_are_stratified_stable_and_differ_between_seeds(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 10, "b": 5})
    first, again = task_from_path(root).load(), task_from_path(root).load()
    assert [s.y.tolist() for s in (first.train, first.val, first.test)] == \
        [[0] * 6 + [1] * 3, [0, 0, 1], [0, 0, 1]]  # 60/20/20 of each class
    levels = [sorted(grey_levels(s)) for s in (first.train, first.val, first.test)]
    assert sorted(sum(levels, [])) == list(range(10)) + list(range(40, 45))  # every image once
    assert levels == [sorted(grey_levels(s)) for s in (again.train, again.val, again.test)]
    other = task_from_path(root, split_seed=1).load()
    assert levels != [sorted(grey_levels(s)) for s in (other.train, other.val, other.test)]
    custom = task_from_path(root, fractions=[0.8, 0.1, 0.1]).load()
    assert [len(s) for s in (custom.train, custom.val, custom.test)] == [12, 1, 2]


def test_without_a_val_folder_validation_is_held_out_of_train(tmp_path):
    root = tmp_path / "pics"
    image_folder(root / "train", {"a": 8, "b": 4})
    image_folder(root / "test", {"a": 1, "b": 1})
    data = task_from_path(root).load()
    assert data.train.y.tolist() == [0] * 6 + [1] * 3 and data.val.y.tolist() == [0, 0, 1]  # 3:1 as 0.6:0.2
    assert data.test.y.tolist() == [0, 1] and grey_levels(data.test) == [0, 40]


def test_stratified_split_cuts_each_class_in_the_fractions():
    labels = np.array([0] * 20 + [1] * 10)
    parts = stratified_split(labels, [0.5, 0.3, 0.2], seed=3)
    assert [np.bincount(labels[p], minlength=2).tolist() for p in parts] == [[10, 5], [6, 3], [4, 2]]
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))


# --- arrays --------------------------------------------------------------------------------------

def test_npz_with_string_labels_gives_sorted_class_names(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array(["zebra", "ant"] * 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    task = task_from_path(tmp_path / "d.npz")
    assert task.kind == "arrays" and task.classes == ["ant", "zebra"] and task.input_shape == (2,)
    data = task.load()
    for split in (data.train, data.val, data.test):  # each row's label is the one saved with it
        rows = (split.x[:, 0] / 2).long().numpy()
        assert split.y.tolist() == [1 if r % 2 == 0 else 0 for r in rows]
    assert [len(s) for s in (data.train, data.val, data.test)] == [12, 4, 4]


def test_npz_splits_and_a_folder_of_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"x_{s}": rng.standard_normal((n, 3, 2)).astype(np.float32) for s, n in (("train", 5), ("val", 2), ("test", 3))}
    labels = {"y_train": np.array([7, 3, 7, 3, 3]), "y_val": np.array([3, 7]), "y_test": np.array([7, 7, 3])}
    np.savez(tmp_path / "splits.npz", **arrays, **labels)
    folder = tmp_path / "npy"
    folder.mkdir()
    for key, value in {**arrays, **labels}.items():
        np.save(folder / f"{key}.npy", value)
    for task in (task_from_path(tmp_path / "splits.npz"), task_from_path(folder)):
        assert task.classes == ["3", "7"] and task.input_shape == (3, 2)
        data = task.load()
        assert data.train.y.tolist() == [1, 0, 1, 0, 0] and data.val.y.tolist() == [0, 1] and data.test.y.tolist() == [1, 1, 0]
        assert torch.equal(data.test.x, torch.from_numpy(arrays["x_test"]))
    assert task_from_path(tmp_path / "splits.npz").identity()["data"] == task_from_path(folder).identity()["data"]


# --- audio folders -------------------------------------------------------------------------------

def test_audio_folder_gives_windows_labelled_by_file_and_scores_per_file(tmp_path):
    root = tmp_path / "calls"
    for c, (name, freq) in enumerate({"high": 3000.0, "low": 300.0}.items()):
        for i in range(5):
            write_wav(root / name / f"{i}.wav", freq + 10 * i, seconds=0.05 + 0.01 * i)
    task = task_from_path(root, context=5, hop=2)
    assert isinstance(task, AudioFolder) and task.classes == ["high", "low"] and task.input_shape == (1, 40, 5)
    data = task.load()
    frames = lambda seconds: 1 + (int(RATE * seconds) - 400) // 160  # noqa: E731  (25 ms windows, 10 ms hop)
    for split in (data.train, data.val, data.test):
        files = split.groups.unique().tolist()
        for u in files:  # every other frame of each file, labelled with the file's class
            members = split.groups == u
            assert members.sum().item() == (frames(0.05 + 0.01 * (u % 5)) + 1) // 2
            assert set(split.y[members].tolist()) == {u // 5}
    assert [sorted(s.groups.unique().tolist()) for s in (data.train, data.val, data.test)] == \
        [sorted(p.tolist()) for p in stratified_split(np.repeat([0, 1], 5), [0.6, 0.2, 0.2], 0)]
    # a file is right when its windows' mean posterior is: one file of two right is 50%
    split = data.test
    logits = torch.zeros(len(split), 2)
    logits[:, 0] = 5.0  # every window says "high"
    assert task.score(logits, split) == {"accuracy": 50.0, "error": 50.0}


# --- identity ------------------------------------------------------------------------------------

def test_identity_follows_content_not_place(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 3, "b": 3})
    before = task_from_path(root).identity()
    moved = tmp_path / "elsewhere" / "pics"
    shutil.copytree(root, moved)
    assert task_from_path(moved).identity() == before
    write_image(moved / "a" / "0.png", 200)  # same name, other pixels
    assert task_from_path(moved).identity()["data"] != before["data"]
    (moved / "b" / "2.png").rename(moved / "a" / "9.png")  # same bytes, other class
    assert task_from_path(moved).identity()["data"] != before["data"]


# --- bad input, each named -----------------------------------------------------------------------

def error(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_unreadable_or_truncated_image_is_named(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 3, "b": 3})
    (root / "b" / "1.png").write_bytes(b"not a png at all")
    assert f"{root / 'b' / '1.png'}: cannot read image" in error(lambda: task_from_path(root).load())
    data = (root / "a" / "2.png")
    Image.new("L", (64, 64), 9).save(data)
    data.write_bytes(data.read_bytes()[:60])
    (root / "b" / "1.png").unlink()
    assert f"{data}: cannot read image" in error(lambda: task_from_path(root).load())
    assert not task_from_path(root).available()


def test_an_unreadable_wav_is_named(tmp_path):
    root = tmp_path / "calls"
    for name in ("x", "y"):
        for i in range(3):
            write_wav(root / name / f"{i}.wav", 500.0)
    (root / "y" / "2.wav").write_bytes(b"RIFF????WAVEjunk")
    assert f"{root / 'y' / '2.wav'}: cannot read audio" in error(lambda: task_from_path(root, cache=str(tmp_path / "c")).load())


def test_classes_that_differ_between_splits_are_named(tmp_path):
    root = tmp_path / "pics"
    image_folder(root / "train", {"cat": 2, "dog": 2})
    image_folder(root / "val", {"cat": 1, "dog": 1})
    image_folder(root / "test", {"cat": 1, "fish": 1})
    message = error(lambda: task_from_path(root))
    assert str(root) in message and "test lacks dog" in message and "test has fish, which train lacks" in message
    np.savez(tmp_path / "a.npz", x_train=np.zeros((3, 2)), y_train=np.array([0, 1, 2]),
             x_test=np.zeros((2, 2)), y_test=np.array([0, 1]))
    assert "test lacks 2" in error(lambda: task_from_path(tmp_path / "a.npz"))


def test_folder_layout_mistakes_are_named(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 2, "b": 2})
    (root / "c").mkdir()
    message = error(lambda: task_from_path(root))
    assert f"class folder {root / 'c'} holds no" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty} holds no class folders" in error(lambda: ImageFolder(path=str(empty)))
    assert f"{empty} holds no data this tool reads" in error(lambda: task_from_path(empty))
    (root / "c").rmdir()
    write_image(root / "stray.png", 1)
    assert f"{root / 'stray.png'} lies directly in {root}" in error(lambda: task_from_path(root))


def test_mixed_sizes_without_a_shape_are_an_error_naming_both_files(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 5, "b": 5})
    write_image(root / "b" / "1.png", 3, size=(8, 8))
    message = error(lambda: task_from_path(root).load())
    assert str(root / "b" / "1.png") in message and str(root / "a" / "0.png") in message and "shape" in message
    assert task_from_path(root, shape=[1, 8, 8]).load().train.x.data.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((3, 2))}, "lacks y"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "has 3 examples but"),
    ({"x": np.zeros((3, 2)), "y": np.array([0.5, 1, 2])}, "expected class labels"),
    ({"x": np.zeros((3, 2)), "y": np.array([{}, 1, 2], dtype=object)}, "not Python objects"),
    ({"x": np.zeros(3), "y": np.array([0, 1, 2])}, "one row per example"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2]), "x_train": np.zeros((3, 2))}, "both x and x_train"),
])
def test_bad_arrays_are_named(tmp_path, arrays, words):
    np.savez(tmp_path / "d.npz", **arrays)
    message = error(lambda: task_from_path(tmp_path / "d.npz"))
    assert str(tmp_path / "d.npz") in message and words in message


@pytest.mark.parametrize("split, value", [("train", np.nan), ("val", np.inf), ("test", np.nan), ("test", 1e300)])
def test_nan_or_inf_in_arrays_stops_the_run_naming_the_file_and_split(tmp_path, capsys, split, value):
    """In training data they would read as "diverged, try a lower lr"; in val or test as errors."""
    rng = np.random.default_rng(0)
    arrays = {f"{k}_{s}": v for s in ("train", "val", "test")
              for k, v in (("x", rng.normal(size=(8, 1, 16, 16))), ("y", np.arange(8) % 2))}
    arrays[f"x_{split}"][5, 0, 3, 3] = value
    np.savez(tmp_path / "d.npz", **arrays)
    (tmp_path / "mine.toml").write_text("\n".join([
        'tasks = ["mine"]', 'archs = ["alexnet-small"]', "[train]", "epochs = 1", '[arch_options."alexnet-small"]',
        "width = 4", "hidden = 16", "[data.mine]", 'kind = "arrays"', 'path = "d.npz"']) + "\n")
    assert main(["run", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'd.npz'} [x_{split}] holds NaN, inf" in err[0] and "row 5" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("shape", [(16, 16), (64,), (1, 2, 2), (1, 16)])
def test_arrays_of_a_shape_the_network_cannot_take_stop_the_run_naming_the_file_and_shapes(tmp_path, capsys, shape):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, *shape)), y=np.arange(20) % 2)
    (tmp_path / "mine.toml").write_text("\n".join([
        'tasks = ["mine"]', 'archs = ["alexnet-small"]', "[train]", "epochs = 1", '[arch_options."alexnet-small"]',
        "width = 4", "hidden = 16", "[data.mine]", 'kind = "arrays"', 'path = "d.npz"']) + "\n")
    assert main(["run", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"{tmp_path / 'd.npz'} holds examples of shape {shape}, which alexnet-small" in err[0]
    assert "cannot take" in err[0]
    assert not list((tmp_path / "run").glob("jobs/*.json"))


def test_arrays_an_architecture_builds_on_but_cannot_run_are_named_with_the_shape_it_expects(tmp_path, capsys):
    """densenet builds on any shape; only a forward pass meets the conv2d error."""
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 16, 16)), y=np.arange(20) % 2)
    (tmp_path / "mine.toml").write_text("\n".join([
        'tasks = ["mine"]', 'archs = ["densenet6"]', "[train]", "epochs = 1",
        "[data.mine]", 'kind = "arrays"', 'path = "d.npz"']) + "\n")
    assert main(["run", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"{tmp_path / 'd.npz'} holds examples of shape (16, 16), which densenet6 cannot take (it expects images (C, H, W)" in err[0]
    assert not list((tmp_path / "run").glob("jobs/*.json"))


def test_a_file_that_is_not_npz_and_a_missing_path_say_what_was_expected(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    assert "not a .npz file" in error(lambda: task_from_path(tmp_path / "d.npz"))
    (tmp_path / "notes.txt").write_text("hello")
    assert "an image folder" in error(lambda: task_from_path(tmp_path / "notes.txt"))
    assert "does not exist" in error(lambda: task_from_path(tmp_path / "nowhere"))


def test_classes_option_is_checked_against_the_files(tmp_path):
    root = image_folder(tmp_path / "pics", {"a": 2, "b": 2})
    assert task_from_path(root, classes=["a", "b"]).classes == ["a", "b"]
    assert "holds the classes a, b; the config expects a, c" in error(lambda: task_from_path(root, classes=["a", "c"]))
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.array([3, 7] * 5))
    assert task_from_path(tmp_path / "d.npz", classes=[3, 7]).classes == ["3", "7"]  # integer labels, as written in TOML


# --- from a config -------------------------------------------------------------------------------

def shapes(tmp_path) -> Path:
    """Three classes of 20x20 images under tmp_path/data/shapes, for a config beside them."""
    return image_folder(tmp_path / "data" / "shapes", {"ring": 12, "square": 12, "line": 12}, size=(20, 20))


def data_config(tmp_path):
    shapes(tmp_path)
    return {"name": "mine", "tasks": ["digits", "shapes"], "archs": ["alexnet-small"], "frozen": [0, 6],
            "train": {"epochs": 1, "batch_size": 16}, "arch_options": {"alexnet-small": {"width": 4, "hidden": 16}},
            "data": {"shapes": {"kind": "image-folder", "path": "data/shapes", "shape": [1, 16, 16]}}}


def test_a_data_table_makes_a_task_with_its_path_relative_to_the_config(tmp_path):
    cfg = config_from_dict(data_config(tmp_path), str(tmp_path / "mine.toml"))
    task = cfg.task("shapes")
    assert task.path == str(tmp_path / "data" / "shapes") and task.classes == ["line", "ring", "square"]
    assert task.input_shape == (1, 16, 16)
    assert cfg.to_dict()["data"]["shapes"]["path"] == str(tmp_path / "data" / "shapes")
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())), str(tmp_path / "run" / "config.json"))
    assert again.to_dict() == cfg.to_dict() and [j.key for j in plan(again)] == [j.key for j in plan(cfg)]


@pytest.mark.parametrize("change, words", [
    ({"kind": "pictures"}, "kind must be one of image-folder, arrays, audio-folder, text; got 'pictures'"),
    ({"colour": True}, "unknown key for kind 'image-folder': 'colour'"),
    ({"shape": [2, 16, 16]}, "C = 1 (grey) or 3 (colour)"),
    ({"fractions": [0.5, 0.5]}, "fractions must be three positive numbers"),
    ({"path": "data/nothing"}, "data/nothing is not a folder"),
])
def test_data_table_mistakes_name_the_table(tmp_path, change, words):
    raw = data_config(tmp_path)
    raw["data"]["shapes"].update(change)
    with pytest.raises(UserError) as caught:
        config_from_dict(raw, "mine.toml")
    assert "mine.toml [data.shapes]" in str(caught.value) or "data/nothing" in str(caught.value)
    assert words in str(caught.value)


def test_data_may_not_take_a_registered_tasks_name(tmp_path):
    raw = data_config(tmp_path)
    raw["data"]["digits"] = raw["data"].pop("shapes")
    with pytest.raises(UserError, match=r"\[data.digits\]: 'digits' is a registered task"):
        config_from_dict(raw, str(tmp_path / "mine.toml"))


def test_options_of_a_data_task_belong_in_its_data_table(tmp_path):
    raw = data_config(tmp_path)
    raw["task_options"] = {"shapes": {"shape": [1, 8, 8]}}
    with pytest.raises(UserError, match=r"\[task_options.shapes\]: 'shapes' is read from files; its options go in \[data.shapes\]"):
        config_from_dict(raw, str(tmp_path / "mine.toml"))


def test_an_empty_class_folder_stops_the_command_with_one_line(tmp_path, capsys):
    config = write_toml(tmp_path)
    (tmp_path / "data" / "shapes" / "oval").mkdir()
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the class folder {tmp_path / 'data' / 'shapes' / 'oval'} holds no" in err[0]
    assert not (tmp_path / "run").exists()


def write_toml(tmp_path) -> Path:
    """data_config as a TOML file."""
    shapes(tmp_path)
    path = tmp_path / "mine.toml"
    path.write_text("\n".join([
        'name = "mine"', 'tasks = ["digits", "shapes"]', 'archs = ["alexnet-small"]', "frozen = [0, 6]",
        "[train]", "epochs = 1", "batch_size = 16", '[arch_options."alexnet-small"]', "width = 4", "hidden = 16",
        "[data.shapes]", 'kind = "image-folder"', 'path = "data/shapes"', "shape = [1, 16, 16]"]) + "\n")
    return path


def layerwise(*args, cwd):
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, cwd=cwd,
                          env=cli_env())


def test_a_config_with_an_image_folder_runs_a_sweep_from_the_command_line(tmp_path):
    config = write_toml(tmp_path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = layerwise("run", str(config), "--out", "run", "--quiet", cwd=elsewhere)  # path is relative to the config
    assert done.returncode == 0, done.stderr
    out = elsewhere / "run"
    records = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")]
    assert sorted((r.get("source") or "", r["target"], r.get("frozen")) for r in records if r["status"] == "ok") == \
        sorted([("", "digits", None), ("", "shapes", None)] + [(a, b, k) for a, b in (("digits", "shapes"), ("shapes", "digits"))
                                                                 for k in (0, 6)])
    assert "Task shapes: image-folder " + str(tmp_path / "data" / "shapes") + "; classes: line, ring, square." in \
        (out / "report.html").read_text()
    again = layerwise("run", str(config), "--out", "run", "--quiet", cwd=elsewhere)
    assert again.returncode == 0 and "6 already finished" in again.stderr


def test_a_bad_image_stops_the_run_before_any_training_naming_the_file(tmp_path):
    config = write_toml(tmp_path)
    bad = tmp_path / "data" / "shapes" / "ring" / "3.png"
    bad.write_bytes(b"\x89PNG broken")
    done = layerwise("run", str(config), "--out", str(tmp_path / "run"), "--quiet", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"layerwise: error: {bad}: cannot read image")
    assert not list((tmp_path / "run").glob("jobs/*.json"))
    assert os.path.exists(bad)
