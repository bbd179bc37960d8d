"""Hugging Face transformers cut into body layers: tiny models built from configs (random
weights, save_pretrained into temporary folders, a tokenizer trained here with `tokenizers`),
never downloaded."""

import copy
import csv
import json
import random
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'layerwise[hf]')")

from conftest import assert_same_runs, records  # noqa: E402
from layerwise import hf  # noqa: E402
from layerwise.cli import main  # noqa: E402
from layerwise.errors import UserError  # noqa: E402
from layerwise.freeze import freeze_config  # noqa: E402
from layerwise.prefix import PrefixCache  # noqa: E402
from layerwise.sweep import Sweep  # noqa: E402
from layerwise.tasks.files import task_from_path, waveform_pieces  # noqa: E402
from layerwise.train import TrainConfig, fit  # noqa: E402
from layerwise.transfer import transfer  # noqa: E402

WORDS = {"pos": "good great fine nice happy lovely".split(), "neg": "bad awful poor sad ugly terrible".split()}
SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
SPEECH = dict(conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=2, classifier_proj_size=16, mask_time_prob=0.0)


def sentences(n, seed):
    """Short texts whose label shows in their words, of varying length (so they are padded)."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        label = ["pos", "neg"][i % 2]
        words = [r.choice(WORDS[label] + ["the", "a", "movie"]) for _ in range(r.randint(2, 7))]
        out.append((" ".join(words), label))
    return out


def save_tokenizer(folder, extra=0):
    """A word-level tokenizer trained on the generated sentences (plus `extra` made-up words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [s for s, _ in sentences(60, 0)] + [f"word{i}" for i in range(extra)]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(folder)
    return len(fast)


def save_model(folder, model_type, **options):
    """A tiny classification model of the family, with random weights, as save_pretrained writes it."""
    torch.manual_seed(0)
    if model_type == "vit":
        config = transformers.ViTConfig(image_size=16, patch_size=4, num_labels=5, **SMALL, **options)
        model = transformers.ViTForImageClassification(config)
    elif model_type in ("bert", "roberta", "distilbert"):
        vocab = save_tokenizer(folder)
        if model_type == "distilbert":
            config = transformers.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=3, n_heads=2, hidden_dim=64,
                                                   max_position_embeddings=64, num_labels=3, pad_token_id=0, **options)
        else:
            cls = transformers.BertConfig if model_type == "bert" else transformers.RobertaConfig
            config = cls(vocab_size=vocab, max_position_embeddings=64, num_labels=3, pad_token_id=0, **SMALL, **options)
        model = getattr(transformers, hf.FAMILIES[model_type].model_class)(config)
    else:
        cls = transformers.Wav2Vec2Config if model_type == "wav2vec2" else transformers.HubertConfig
        config = cls(num_labels=3, **SMALL, **{**SPEECH, **options})
        model = getattr(transformers, hf.FAMILIES[model_type].model_class)(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {t: save_model(root / t, t) for t in hf.FAMILIES}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An image folder, a CSV of texts and a folder of tones (some at 8 kHz), two classes each."""
    from PIL import Image
    import soundfile

    root = tmp_path_factory.mktemp("hfdata")
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / "images" / f"c{c}").mkdir(parents=True)
        (root / "tones" / f"tone{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray((rng.random((20, 20, 3)) * 120 + c * 100).astype("uint8")).save(root / "images" / f"c{c}" / f"{i}.png")
            rate = (16000, 8000)[i % 2]
            t = np.arange(rate // 4) / rate
            wave = 0.5 * np.sin(2 * np.pi * (300, 1200)[c] * t) + 0.05 * rng.standard_normal(len(t))
            soundfile.write(root / "tones" / f"tone{c}" / f"{i}.wav", wave, rate)
    with open(root / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(sentences(40, 1))
    return {"image": root / "images", "text": root / "reviews.csv", "audio": root / "tones"}


def own_logits(folder):
    """The saved model's own logits on the check's example batch (the second example padded)."""
    model = hf.load_model(folder)
    keywords, x = hf.example(model, hf.FAMILIES[model.config.model_type])
    with torch.no_grad():
        return model(**keywords).logits, x


# --- the cut --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", sorted(hf.FAMILIES))
def test_each_family_cut_into_layers_computes_the_models_own_logits(models, model_type):
    want, x = own_logits(models[model_type])
    net = hf.layered(models[model_type])
    assert net.num_layers == 1 + 3  # the stem, then each block
    with torch.no_grad():
        got = net.eval()(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got[0], got[1])  # a padded example is not the other one


def test_every_other_block_is_a_cut_of_fewer_layers_that_computes_the_same(models):
    want, x = own_logits(models["bert"])
    net = hf.layered(models["bert"], "every-2")
    assert net.num_layers == 3  # embeddings | blocks 0 and 1 | block 2
    assert [list(layer._modules) for layer in net.layers] == [["embeddings"], ["blocks_0", "blocks_1"], ["blocks_2", "pool"]]
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cuts, message", [
    (["embeddings", "blocks.1"], "the last cut must be its last block, 'blocks.2'"),
    (["blocks.1", "embeddings", "blocks.2"], "must be units in order"),
    (["embeddings", "blocks.1.attention", "blocks.2"], "'blocks.1.attention': it is not one of its units"),
    ("every-0", "expected a list of its units"),
])
def test_a_cut_that_cannot_be_honest_is_refused_in_one_line(models, cuts, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        hf.layered(models["vit"], cuts)


def test_a_unit_that_computes_something_else_is_named(models, monkeypatch):
    real = hf.Block.forward

    def shifted(self, x):
        out = real(self, x)
        return out.replace(hidden=out["hidden"] + 1) if self.dropout is not None else out
    monkeypatch.setattr(hf.Block, "forward", shifted)
    with pytest.raises(UserError, match="unit 'blocks.0' does not compute what the model does"):
        hf.layered(models["bert"])


def test_a_classifier_on_every_blocks_output_is_refused(tmp_path):
    folder = save_model(tmp_path / "weighted", "wav2vec2", use_weighted_layer_sum=True)
    with pytest.raises(UserError, match="weighted sum of every block's output"):
        hf.layered(folder)


# --- freezing -------------------------------------------------------------------------------------

def text_task(models, data, **options):
    task = task_from_path(data["text"], tokenizer=str(models["bert"]), max_length=12, **options)
    return task, task.load()


@pytest.mark.parametrize("model_type", ["vit", "bert", "wav2vec2"])
def test_frozen_blocks_are_bit_identical_after_fine_tuning_and_the_rest_train(models, data, model_type):
    folder = models[model_type]
    table = hf.data_options(folder, "d", {"kind": {"vit": "image-folder", "bert": "text", "wav2vec2": "audio-folder"}[model_type]}, "test")
    options = {k: v for k, v in table.items() if k != "kind"}
    if model_type == "wav2vec2":
        options["seconds"] = 0.1
    task = task_from_path(data[hf.FAMILIES[model_type].kind], **options)
    primary = hf.layered(folder)
    net = transfer(primary, task.num_classes, 2)
    before = copy.deepcopy(net.state_dict())
    fit(net, task, task.load(), TrainConfig(epochs=2, batch_size=8, lr=1e-2), seed=0)
    after = net.state_dict()
    frozen = [k for k in before if k.startswith(("layers.0.", "layers.1."))]
    norms = [k for k in frozen if "norm" in k.lower()]
    assert frozen and norms  # layer norms are among them: they freeze with their block
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    trained = [k for k in before if k.startswith(("layers.2.", "layers.3.")) and not torch.equal(before[k], after[k])]
    assert trained


def test_dropout_is_off_in_frozen_layers_and_the_stems_dropout_starts_the_first_block(tmp_path):
    folder = save_model(tmp_path / "vit", "vit", hidden_dropout_prob=0.5)
    x = torch.randn(4, 3, 16, 16)
    net = hf.layered(folder)
    with torch.no_grad():
        eval_out = [net.eval().features(x, upto=k) for k in (1, 2)]
        net.freeze(1).train()  # the stem frozen, block 0 trains
        assert torch.equal(net.features(x, upto=1)["hidden"], eval_out[0]["hidden"])
        # the embeddings' dropout acts on block 0's input, so it still regularises the layer that trains
        assert not torch.equal(net.features(x, upto=2)["hidden"], eval_out[1]["hidden"])
        net.freeze(2).train()
        assert torch.equal(net.features(x, upto=2)["hidden"], eval_out[1]["hidden"])


def test_layer_drop_never_skips_a_frozen_block(tmp_path):
    folder = save_model(tmp_path / "w2v", "wav2vec2", layerdrop=1.0, hidden_dropout=0.0)  # every block skipped in training
    net = hf.layered(folder)
    _, x = hf.example(hf.load_model(folder), hf.FAMILIES["wav2vec2"])
    with torch.no_grad():
        want = net.eval().features(x, upto=3)["hidden"]
        stem = net.features(x, upto=1)["hidden"]
        net.freeze(3).train()
        assert torch.equal(net.features(x, upto=3)["hidden"], want)
        net.freeze(1).train()
        assert torch.equal(net.features(x, upto=3)["hidden"], stem)  # training blocks do drop


def test_the_prefix_cache_of_padded_texts_trains_exactly_as_the_plain_run(models, data):
    task, split_data = text_task(models, data)
    assert (split_data.train.x["attention_mask"] == 0).any()  # padded
    primary = hf.layered(models["bert"])
    cfg = TrainConfig(epochs=2, batch_size=8, eval_batch_size=16)
    cached = PrefixCache(primary, split_data, cfg).at(2)
    assert cached is not None and set(cached.train.x.parts) == {"hidden", "mask"}
    torch.manual_seed(0)
    plain = transfer(primary, task.num_classes, 2)
    torch.manual_seed(0)
    fast = transfer(primary, task.num_classes, 2)
    a = fit(plain, task, split_data, cfg, seed=0)
    b = fit(fast, task, cached, cfg, seed=0, start=2)
    assert a.history == b.history and a.test == b.test
    assert all(torch.equal(v, fast.state_dict()[k]) for k, v in plain.state_dict().items())


# --- data -----------------------------------------------------------------------------------------

def test_images_take_the_models_resolution_and_normalisation(tmp_path, data):
    folder = save_model(tmp_path / "vit", "vit")
    transformers.ViTImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.5]).save_pretrained(folder)
    table = hf.data_options(folder, "images", {"kind": "image-folder"}, "test")
    assert table["shape"] == [3, 16, 16] and table["mean"] == [0.5, 0.4, 0.3]
    task = task_from_path(data["image"], **{k: v for k, v in table.items() if k != "kind"})
    split = task.load().train
    pixels = split.x.data[:1].float() / 255
    want = (pixels - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(3, 1, 1)
    assert torch.allclose(split.x[torch.tensor([0])], want, atol=1e-5)


def test_a_file_at_another_rate_is_resampled_and_its_last_piece_padded_with_a_mask(tmp_path):
    import soundfile

    t = np.arange(8000) / 8000  # one second at 8 kHz
    soundfile.write(tmp_path / "a.wav", np.sin(2 * np.pi * 440 * t), 8000)
    waves, masks = waveform_pieces(tmp_path / "a.wav", 16000, 6000, normalize=False)
    assert waves.shape == (3, 6000) and masks.sum() == 16000  # 16000 samples at 16 kHz, in 6000-sample pieces
    assert masks[2, :4000].all() and not masks[2, 4000:].any() and not waves[2, 4000:].any()
    spectrum = np.abs(np.fft.rfft(waves[0].numpy()))
    assert abs(np.argmax(spectrum) * 16000 / 6000 - 440) < 5  # the tone kept its pitch


# --- the command line -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["vit", "bert", "wav2vec2"])
def test_freeze_a_saved_model_on_files_end_to_end(models, data, model_type, tmp_path, capsys):
    kind = hf.FAMILIES[model_type].kind
    name = data[kind].stem
    extra = ["--set", f"data.{name}.seconds=0.1"] if kind == "audio" else []
    code = main(["freeze", "--model", str(models[model_type]), "--data", str(data[kind]), "--seeds", "1",
                 "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "workers=1", *extra,
                 "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"({'hf-' + model_type}, L_H = 4)" in out
    found = records(tmp_path / "run")
    assert len(found) == 1 + 1 + 5  # the given primary, the baseline, l_c = 0..4
    assert all(r["status"] == "ok" for r in found.values())
    assert sum(bool(r.get("cached_prefix")) for r in found.values()) == 4


def freeze_sweep(models, data, out, **settings):
    cfg = freeze_config(str(models["vit"]), None, str(data["image"]), None, None, None, 1,
                        ["train.epochs=1", "train.batch_size=8", "threads=1", "frozen=[0,2,4]"]
                        + [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    return Sweep(cfg, out, progress=False)


@pytest.mark.slow
def test_worker_processes_carry_a_saved_model_and_give_the_records_of_one_process(models, data, tmp_path):
    freeze_sweep(models, data, tmp_path / "one", workers=1).run()
    sweep = freeze_sweep(models, data, tmp_path / "two", workers=2)
    assert sweep.run() == sweep.jobs
    assert_same_runs(tmp_path / "one", tmp_path / "two", len(sweep.jobs))


@pytest.mark.slow
def test_ray_carries_a_saved_model_and_gives_the_records_of_one_process(models, data, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'layerwise[ray]')")
    from layerwise.executors import connect

    freeze_sweep(models, data, tmp_path / "one", workers=1).run()
    connect(ray, None, num_cpus=2, include_dashboard=False)
    try:
        sweep = freeze_sweep(models, data, tmp_path / "ray", executor="ray")
        sweep.run()
    finally:
        ray.shutdown()
    assert_same_runs(tmp_path / "one", tmp_path / "ray", len(sweep.jobs))


def write_rows(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def bad_inputs(models, data, tmp_path):
    """(--model, --data, extra arguments, what the one line must say) for each mistake."""
    (tmp_path / "empty").mkdir()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    split = tmp_path / "split"
    split.mkdir()
    write_rows(split / "train.csv", sentences(10, 2))
    write_rows(split / "test.csv", sentences(4, 3) + [("the movie", "meh")])
    other = tmp_path / "tokenizer"
    size = save_tokenizer(other, extra=5)
    return {
        "no config.json": (tmp_path / "empty", data["image"], [], "has no config.json"),
        "unknown model_type": (odd, data["image"], [], "model_type 'gpt2' has no family here; known: bert, distilbert, hubert, roberta, vit, wav2vec2"),
        "missing column": (models["bert"], write_rows(tmp_path / "cols.csv", sentences(10, 2), ("review", "label")), [],
                           "has no column 'text'"),
        "label missing from train": (models["bert"], split, [], "holds the label 'meh', which the training split"),
        "tokenizer of another size": (models["bert"], data["text"], ["--set", f"data.reviews.tokenizer={other}"],
                                      f"its tokenizer has {size} tokens but the model"),
        "images for a text model": (models["bert"], data["image"], [], "takes text data"),
    }


CASES = ["no config.json", "unknown model_type", "missing column", "label missing from train", "tokenizer of another size",
         "images for a text model"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2_before_training(models, data, tmp_path, capsys, case):
    model, path, extra, message = bad_inputs(models, data, tmp_path)[case]
    code = main(["freeze", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "run"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "jobs").exists() or not list((tmp_path / "run" / "jobs").iterdir())


def test_without_transformers_the_line_says_how_to_install_it(models, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    code = main(["freeze", "--model", str(models["vit"]), "--data", str(data["image"]), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "pip install 'layerwise[hf]'" in capsys.readouterr().err


def test_freeze_cuts_every_other_block_when_asked(models, data):
    from layerwise.plan import plan

    cfg = freeze_config(str(models["bert"]), None, str(data["text"]), ["every-2"], None, None, 1, [])
    jobs = plan(cfg)
    assert sorted(j.frozen for j in jobs if j.kind == "transfer") == [0, 1, 2, 3]  # embeddings | blocks 0-1 | block 2
    assert cfg.primary.arch == "hf-bert" and cfg.data["reviews"]["tokenizer"] == str(models["bert"])


def test_a_configs_primary_takes_the_directory_relative_to_the_config(models, data, tmp_path):
    import shutil

    from layerwise.config import config_from_dict
    from layerwise.plan import plan

    shutil.copytree(models["vit"], tmp_path / "my-vit")
    raw = {"tasks": ["colours"], "seeds": [0], "primary": {"checkpoint": "my-vit"},
           "data": {"colours": {"kind": "image-folder", "path": str(data["image"])}}}
    cfg = config_from_dict(raw, str(tmp_path / "exp.toml"))
    assert cfg.primary.arch == "hf-vit" and cfg.primary.name == "my-vit"
    assert cfg.data["colours"]["shape"] == [3, 16, 16]  # the model's resolution
    assert sorted(j.frozen for j in plan(cfg) if j.kind == "transfer") == [0, 1, 2, 3, 4]


def test_only_a_saved_directory_goes_without_arch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.safetensors").write_bytes(b"")
    assert main(["freeze", "--model", "m.safetensors", "--data", "printed-digits", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--arch is required" in err and len(err.splitlines()) == 1
