"""Hugging Face transformers cut into body layers: ViT for images, BERT-family encoders for text,
wav2vec2 and HuBERT for speech.

A transformer's forward is not a chain of submodules (a class token and position embeddings are
added between modules, an attention mask travels beside the hidden states, pooling is a
function), so `cut.py` cannot cut it by hooks. Each family here is a row of `FAMILIES`, chosen by
the `model_type` of a saved model's config.json, that says where its parts are; the pieces are
small modules around the model's own submodules (never copies):

- the **stem** (the first unit): the embeddings (tokens, patches, or the convolutional feature
  encoder with its projection and positional convolution), ending where the first encoder block
  begins; the dropout the embeddings end with starts the first block instead (the cut rule of
  `net.py`: freezing the stem must not switch off the next layer's regularisation);
- one unit per **encoder block**, passing a `Bundle` of the hidden states and the padding mask;
  layer drop (wav2vec2, HuBERT) is drawn per block while it trains, so a frozen block never drops;
- the **pooling** that ends the last block (the final layer norm and the class token, BERT's
  pooler, a speech model's projector and masked mean) and the **output layer**, one linear layer,
  which transfer replaces (a classifier dropout before it is left out, as the rule says).

The default cut makes each unit a body layer (L_H = blocks + 1); `cuts` names the units that end
each body layer ("embeddings", "blocks.0", ...; "every-2" for the stem and every other block).
Whatever the cut, the pieces are checked on an example to compute the model's own logits, unit
by unit against its hidden states, and a piece that does not is refused in one line naming it.

Adding a family is one `Family` row: its transformers class with a sequence (or image)
classification head, where its blocks and embeddings are, and how it pools.
"""

from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .bundle import Bundle
from .errors import UserError
from .net import LayeredNet

INSTALL = "pip install 'layerwise[hf]'"
STEM = "embeddings"


def require_transformers():
    """The transformers module, offline (a saved directory never needs the network), or one line
    saying how to install it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise UserError(f"a Hugging Face model needs the transformers library, which is not installed; install it "
                        f"with: {INSTALL}") from None
    transformers.utils.logging.set_verbosity_error()  # "some weights were newly initialised": the head is replaced
    transformers.utils.logging.disable_progress_bar()  # a bar per model loaded, in every worker
    return transformers


def _get(module: nn.Module, dotted: str) -> nn.Module:
    """The submodule at a dotted path, or one line saying the family's row does not fit the model
    (another transformers version may lay a model out otherwise: ViT's blocks moved in 5.0)."""
    found = module
    for part in dotted.split("."):
        found = getattr(found, part, None)
        if found is None:
            import transformers

            raise UserError(f"{type(module).__name__} has no {dotted!r}, where layerwise.hf.FAMILIES expects it; "
                            f"transformers {transformers.__version__} lays it out otherwise (tested with 5.24)")
    return found


# --- the pieces ----------------------------------------------------------------------------------

class ImageStem(nn.Module):
    """Patches, class token and position embeddings: pixel values in, hidden states out."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, pixels: torch.Tensor) -> Bundle:
        return Bundle(hidden=self.embeddings(pixels))


class TextStem(nn.Module):
    """Token, position (and segment) embeddings: token ids and their mask in, hidden states and
    the mask out."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, x: Bundle) -> Bundle:
        return Bundle(hidden=self.embeddings(x["input_ids"]), mask=x["attention_mask"])


class AudioStem(nn.Module):
    """The convolutional feature encoder, its projection and the positional convolution (with the
    layer norm of a post-norm encoder): a padded waveform and its mask in, frames and their mask
    out. Padded frames are zeroed, as the model's encoder does. The model's SpecAugment masking of
    the projected features is not applied (see README)."""

    def __init__(self, base: nn.Module, config):
        super().__init__()
        self.feature_extractor = base.feature_extractor
        self.feature_projection = base.feature_projection
        self.pos_conv_embed = base.encoder.pos_conv_embed
        self.layer_norm = None if config.do_stable_layer_norm else base.encoder.layer_norm
        self.kernels, self.strides = list(config.conv_kernel), list(config.conv_stride)

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames the feature encoder makes of `lengths` samples (its convolutions, unpadded)."""
        for kernel, stride in zip(self.kernels, self.strides):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def forward(self, x: Bundle) -> Bundle:
        features = self.feature_extractor(x["input_values"]).transpose(1, 2)
        lengths = self.frames(x["attention_mask"].sum(-1))
        mask = torch.arange(features.shape[1], device=features.device)[None] < lengths[:, None]
        projected = self.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        hidden = hidden.masked_fill(~mask[..., None], 0.0)
        hidden = hidden + self.pos_conv_embed(hidden)
        if self.layer_norm is not None:
            hidden = self.layer_norm(hidden)
        return Bundle(hidden=hidden, mask=mask.long())


class Block(nn.Module):
    """One encoder block. The attention mask is built from the padding mask the bundle carries,
    the way the model builds it. `layerdrop`: the chance, while it trains, that the block is
    skipped (off in evaluation mode, so off in a frozen block)."""

    def __init__(self, block: nn.Module, config, layerdrop: float = 0.0, first: Optional[nn.Module] = None):
        super().__init__()
        self.block, self.config, self.layerdrop = block, config, layerdrop
        self.dropout = first  # the dropout the stem ended with: it starts the first block

    def forward(self, x: Bundle) -> Bundle:
        from transformers.masking_utils import create_bidirectional_mask

        hidden = x["hidden"] if self.dropout is None else self.dropout(x["hidden"])
        if self.training and self.layerdrop > 0 and bool(torch.rand([]) < self.layerdrop):
            return x.replace(hidden=hidden)
        mask = x.get("mask")
        if mask is not None:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        return x.replace(hidden=self.block(hidden, attention_mask=mask))


class ClassPool(nn.Module):
    """The class token's hidden state as the features: after the final layer norm (ViT), through
    a pooler's dense layer and activation (BERT, DistilBERT, RoBERTa's head's first layer)."""

    def __init__(self, norm: Optional[nn.Module] = None, dense: Optional[nn.Module] = None,
                 activation: Optional[nn.Module] = None, dropout: Optional[nn.Module] = None):
        super().__init__()
        self.norm, self.dropout, self.dense, self.activation = norm, dropout, dense, activation

    def forward(self, x: Bundle) -> torch.Tensor:
        hidden = x["hidden"] if self.norm is None else self.norm(x["hidden"])
        hidden = hidden[:, 0]
        for part in (self.dropout, self.dense, self.activation):
            if part is not None:
                hidden = part(hidden)
        return hidden


class MeanPool(nn.Module):
    """A speech model's features: the final layer norm (pre-norm encoders), the projector, and
    the mean over the frames that are not padding."""

    def __init__(self, projector: nn.Module, norm: Optional[nn.Module] = None):
        super().__init__()
        self.norm, self.projector = norm, projector

    def forward(self, x: Bundle) -> torch.Tensor:
        hidden = x["hidden"] if self.norm is None else self.norm(x["hidden"])
        hidden = self.projector(hidden)
        mask = x["mask"].to(hidden.dtype)[..., None]
        return (hidden * mask).sum(1) / mask.sum(1)


# --- the families, as data -----------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """Where a transformers classification model keeps its parts."""

    kind: str  # the data it takes: "image", "text" or "audio"
    model_class: str  # the transformers class with the classification head
    embeddings: str  # dotted path of the embeddings (the stem), or of the base model for audio
    blocks: str  # dotted path of the ModuleList of encoder blocks
    dropout: str  # dotted path of the dropout that ends the stem (moved to the first block)
    head: str  # dotted path of the output layer (one linear layer)
    pool: Callable[[nn.Module], nn.Module]  # the model -> the pooling that ends the last block
    layerdrop: str = ""  # the config key of the chance of skipping a block while training


def _audio(base: str, model_class: str) -> Family:
    return Family("audio", model_class, base, f"{base}.encoder.layers", f"{base}.encoder.dropout", "classifier",
                  lambda m: MeanPool(m.projector, _get(m, base).encoder.layer_norm if m.config.do_stable_layer_norm
                                     else None), layerdrop="layerdrop")


FAMILIES: Dict[str, Family] = {
    "vit": Family("image", "ViTForImageClassification", "vit.embeddings", "vit.layers", "vit.embeddings.dropout",
                  "classifier", lambda m: ClassPool(norm=m.vit.layernorm)),
    "bert": Family("text", "BertForSequenceClassification", "bert.embeddings", "bert.encoder.layer",
                   "bert.embeddings.dropout", "classifier",
                   lambda m: ClassPool(dense=m.bert.pooler.dense, activation=m.bert.pooler.activation)),
    "roberta": Family("text", "RobertaForSequenceClassification", "roberta.embeddings", "roberta.encoder.layer",
                      "roberta.embeddings.dropout", "classifier.out_proj",
                      lambda m: ClassPool(dropout=m.classifier.dropout, dense=m.classifier.dense, activation=nn.Tanh())),
    "distilbert": Family("text", "DistilBertForSequenceClassification", "distilbert.embeddings",
                         "distilbert.transformer.layer", "distilbert.embeddings.dropout", "classifier",
                         lambda m: ClassPool(dense=m.pre_classifier, activation=nn.ReLU())),
    "wav2vec2": _audio("wav2vec2", "Wav2Vec2ForSequenceClassification"),
    "hubert": _audio("hubert", "HubertForSequenceClassification"),
}


# --- reading a saved model -----------------------------------------------------------------------

def read_config(directory: Union[str, Path]) -> dict:
    """A save_pretrained directory's config.json, with a model_type that has a family."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise UserError(f"{directory} is not a saved Hugging Face model: it has no config.json (a directory "
                        "written by model.save_pretrained holds config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} as JSON: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in FAMILIES:
        raise UserError(f"{path}: model_type {model_type!r} has no family here; known: {', '.join(sorted(FAMILIES))} "
                        "(adding one is a row of layerwise.hf.FAMILIES)")
    return config


def family(directory: Union[str, Path]) -> Family:
    return FAMILIES[read_config(directory)["model_type"]]


def preprocessor(directory: Union[str, Path]) -> dict:
    """preprocessor_config.json of a saved model (its image processor or feature extractor), or {}."""
    path = Path(directory) / "preprocessor_config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} as JSON: {err}") from None


def load_model(directory: Union[str, Path], weights: bool = True) -> nn.Module:
    """The saved model with its classification head, in float32: its weights (a base model's
    saved without a head gets a fresh one), or freshly initialised (`weights=False`: the same
    architecture trained from scratch, seeded by the caller)."""
    transformers = require_transformers()
    config = read_config(directory)
    fam = FAMILIES[config["model_type"]]
    cls = getattr(transformers, fam.model_class)
    try:
        if weights:
            model = cls.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32)
        else:
            model = cls(transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the model saved in {directory} with transformers: "
                        f"{str(err).splitlines()[0]}") from None
    return model.float().eval()


# --- cutting ------------------------------------------------------------------------------------

def unit_names(num_blocks: int) -> List[str]:
    return [STEM] + [f"blocks.{i}" for i in range(num_blocks)]


def resolve_cuts(cuts: Optional[Union[str, Sequence[str]]], num_blocks: int, what: str) -> List[str]:
    """The units that end each body layer: all of them by default; "every-K" (the stem and every
    K-th block, the last always); or a list of unit names in order ending with the last block."""
    units = unit_names(num_blocks)
    if isinstance(cuts, (list, tuple)) and len(cuts) == 1 and str(cuts[0]).startswith("every-"):
        cuts = cuts[0]
    if cuts is None:
        return units
    if isinstance(cuts, str):
        step = cuts[len("every-"):]
        if not cuts.startswith("every-") or not step.isdigit() or int(step) < 1:
            raise UserError(f"cannot cut {what} at {cuts!r}: expected a list of its units ({units[0]}, {units[1]} .. "
                            f"{units[-1]}) or \"every-K\" (the stem and every K-th block)")
        k = int(step)
        return [STEM] + [u for i, u in enumerate(units[1:]) if (i + 1) % k == 0 or i == num_blocks - 1]
    cuts = list(cuts)
    for cut in cuts:
        if cut not in units:
            raise UserError(f"cannot cut {what} at {cut!r}: it is not one of its units; they are {units[0]}, "
                            f"{units[1]} .. {units[-1]} (a body layer may end after any of them)")
    if cuts != sorted(set(cuts), key=units.index):
        raise UserError(f"cannot cut {what}: the cuts must be units in order, each once; got {cuts}")
    if cuts[-1] != units[-1]:
        raise UserError(f"cannot cut {what}: the last cut must be its last block, {units[-1]!r} (the blocks after "
                        f"{cuts[-1]!r} would be dropped with the output layer); got {cuts}")
    return cuts


def _refuse_unchained(model: nn.Module, what: str) -> None:
    """Options that make the output depend on more than the last block: no cut is honest then."""
    config = model.config
    if getattr(config, "use_weighted_layer_sum", False):
        raise UserError(f"cannot cut {what}: its classifier reads a weighted sum of every block's output "
                        "(use_weighted_layer_sum = true in config.json), so its blocks are not a chain")
    if getattr(config, "add_adapter", False):
        raise UserError(f"cannot cut {what}: it has an adapter after its encoder (add_adapter = true in config.json), "
                        "which no family here places")


def units(model: nn.Module, fam: Family) -> Tuple[List[nn.Module], nn.Module, nn.Module]:
    """The model's units (stem, then one per block), its pooling and its output layer."""
    config = model.config
    if fam.kind == "audio":
        stem = AudioStem(_get(model, fam.embeddings), config)
    else:
        stem = (ImageStem if fam.kind == "image" else TextStem)(_get(model, fam.embeddings))
    # The stem's trailing dropout moves to the first block: the embeddings run with an identity there.
    owner, _, name = fam.dropout.rpartition(".")
    dropout = _get(model, fam.dropout)
    setattr(_get(model, owner), name, nn.Identity())
    layerdrop = float(getattr(config, fam.layerdrop, 0.0) or 0.0) if fam.layerdrop else 0.0
    blocks = [Block(b, config, layerdrop, dropout if i == 0 else None) for i, b in enumerate(_get(model, fam.blocks))]
    return [stem, *blocks], fam.pool(model), _get(model, fam.head)


def example(model: nn.Module, fam: Family) -> Tuple[dict, Union[torch.Tensor, Bundle]]:
    """A fixed random batch of two to check a cut on, as the model's keywords and as the cut
    net's input; the second example is padded where the inputs can be."""
    config = model.config
    g = torch.Generator().manual_seed(0)
    if fam.kind == "image":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        pixels = torch.randn(2, config.num_channels, size, size, generator=g)
        return {"pixel_values": pixels}, pixels
    if fam.kind == "text":
        ids = torch.randint(0, config.vocab_size, (2, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0
        ids[1, 8:] = config.pad_token_id or 0
        return {"input_ids": ids, "attention_mask": mask}, Bundle(input_ids=ids, attention_mask=mask)
    samples = 4000  # a quarter second at 16 kHz: a dozen frames through wav2vec2's convolutions
    wave = torch.randn(2, samples, generator=g)
    mask = torch.ones(2, samples, dtype=torch.long)
    mask[1, 2800:] = 0
    wave[1, 2800:] = 0
    return {"input_values": wave, "attention_mask": mask}, Bundle(input_values=wave, attention_mask=mask)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def check_units(model: nn.Module, fam: Family, pieces: List[nn.Module], pool: nn.Module, head: nn.Module,
                what: str) -> None:
    """The units compute what the model computes: each block's output against the model's own
    hidden states, the logits against its logits. The first that differs is named."""
    keywords, x = example(model, fam)
    for piece in (*pieces, pool, head):
        piece.eval()  # the wrappers are new modules: a block in training mode could drop itself
    out = model(**keywords, output_hidden_states=True)
    states = out.hidden_states
    names = unit_names(len(pieces) - 1)
    for i, piece in enumerate(pieces):
        x = piece(x)
        mask = x.get("mask")
        expected = states[i] if states is not None and len(states) == len(pieces) else None
        if expected is None or (i == len(pieces) - 1 and not _close(x["hidden"], expected)):
            continue  # the last hidden state may be normalised already (a pre-norm encoder): the logits decide
        got = x["hidden"] if mask is None else x["hidden"] * mask[..., None]
        want = expected if mask is None else expected * mask[..., None]
        if not _close(got, want):
            raise UserError(f"cannot cut {what}: unit {names[i]!r} does not compute what the model does (largest "
                            f"difference {float((got - want).abs().max()):.3g} in its hidden states); its family's "
                            "row in layerwise.hf.FAMILIES does not fit this model or this transformers version")
    logits = head(pool(x))
    if not _close(logits, out.logits):
        raise UserError(f"cannot cut {what}: the pooling and output layer after {names[-1]!r} do not compute the "
                        f"model's logits (largest difference {float((logits - out.logits).abs().max()):.3g}); its "
                        "family's pooling in layerwise.hf.FAMILIES does not fit this model")


def layered(directory: Union[str, Path], cuts=None, weights: bool = True, model: Optional[nn.Module] = None) -> LayeredNet:
    """The saved model as a LayeredNet: its units grouped into body layers at `cuts`, its own
    output layer as the head (so the net computes the model's logits, checked), and a head
    builder of fresh linear layers for transfer."""
    model = load_model(directory, weights) if model is None else model
    model_type = model.config.model_type
    fam = FAMILIES[model_type]
    what = f"{fam.model_class} ({model_type}) from {directory}"
    _refuse_unchained(model, what)
    model.eval()
    pieces, pool, head = units(model, fam)
    check_units(model, fam, pieces, pool, head, what)
    names = unit_names(len(pieces) - 1)
    ends = resolve_cuts(cuts, len(pieces) - 1, what)
    layers, current = [], []
    for name, piece in zip(names, pieces):
        current.append((name.replace(".", "_"), piece))
        if name in ends:
            layers.append(current)
            current = []
    layers[-1].append(("pool", pool))
    body = [nn.Sequential(OrderedDict(parts)) for parts in layers]
    make_head = functools.partial(nn.Linear, head.in_features)
    return LayeredNet(body, head, make_head).eval()


def vocabulary_size(directory: Union[str, Path]) -> Optional[int]:
    return read_config(directory).get("vocab_size")


# --- the data a saved model takes ------------------------------------------------------------------

DATA_KINDS = {"image": ("image-folder",), "text": ("text",), "audio": ("audio-folder",)}


def data_options(directory: Union[str, Path], name: str, table: dict, where: str) -> dict:
    """A `[data.NAME]` table with what the saved model fixes filled in where the table leaves it
    out: images at the model's resolution and normalisation (its preprocessor_config.json), text
    tokenised by its tokenizer, audio as raw waveforms at its sampling rate."""
    if not isinstance(table, dict):
        return table
    config = read_config(directory)
    fam = FAMILIES[config["model_type"]]
    kind = table.get("kind")
    if kind not in DATA_KINDS[fam.kind]:
        raise UserError(f"{where} [data.{name}]: the model in {directory} ({config['model_type']}) takes {fam.kind} "
                        f"data (kind {' or '.join(DATA_KINDS[fam.kind])}); got kind {kind!r}")
    pre = preprocessor(directory)
    if fam.kind == "image":
        size = config.get("image_size", 224)
        size = size if isinstance(size, int) else size[0]
        found = {"shape": [config.get("num_channels", 3), size, size]}
        if pre.get("do_normalize", True) and "image_mean" in pre and "image_std" in pre:
            found.update(mean=list(pre["image_mean"]), std=list(pre["image_std"]))
    elif fam.kind == "text":
        positions = config.get("max_position_embeddings", 512) - (2 if config["model_type"] == "roberta" else 0)
        found = {"tokenizer": str(directory), "max_length": min(128, positions)}
    else:
        found = {"input": "waveform", "sample_rate": pre.get("sampling_rate", 16000),
                 "normalize": bool(pre.get("do_normalize", True))}
    return {**found, **table}


def load_tokenizer(path: Union[str, Path], where: str):
    """A tokenizer saved in `path` (a model's directory, or one of its own), read offline."""
    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{where}: cannot load a tokenizer from {path} ({str(err).splitlines()[0]}); expected a "
                        "directory written by tokenizer.save_pretrained") from None
    if tokenizer.pad_token is None:
        raise UserError(f"{where}: the tokenizer in {path} has no padding token, so texts cannot be padded to "
                        "max_length; give it one (tokenizer.pad_token = ...) and save it again")
    return tokenizer


def check_vocabulary(directory: Union[str, Path], tokens: int, where: str) -> None:
    """A tokenizer whose ids reach past the model's embeddings would fail mid-training (or, worse,
    another tokenizer of the same size would feed it other words): the sizes must match."""
    size = vocabulary_size(directory)
    if size is not None and tokens != size:
        raise UserError(f"{where}: its tokenizer has {tokens} tokens but the model in {directory} has a vocabulary of "
                        f"{size} (vocab_size in config.json); use the model's own tokenizer")
