"""Where to cut common pretrained families into body layers, as data.

Each list names, in execution order, the submodules that end a body layer (`cut.py`); what runs
after the last name is the output layer, which transfer replaces. The names are torchvision's
(and timm's, for its ResNets), so their models split as they are; the cut rule of `net.py` places
them: pooling finishes the layer that produces it (a ResNet's or VGG's last stage takes the global
pooling, and the flatten after it), and the dropout of a classifier starts the layer that consumes it.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

from ..errors import UserError, unknown

# Stem (conv, bn, relu, max pool), layer1, layer2, layer3, layer4 with the global pooling: L_H = 5.
RESNET = ["maxpool", "layer1", "layer2", "layer3", "avgpool"]
TIMM_RESNET = ["maxpool", "layer1", "layer2", "layer3", "global_pool"]

# Five convolutions (the 1st, 2nd and 5th pooled; the 5th with the adaptive pooling), then the two
# hidden classifier layers (dropout, linear, ReLU): L_H = 7, the paper's AlexNet.
ALEXNET = ["features.2", "features.5", "features.7", "features.9", "avgpool", "classifier.2", "classifier.5"]

# torchvision's VGG: convolutions per block (each block ends with a max pool); the fifth block takes
# the adaptive pooling; then classifier (linear, ReLU) and (dropout, linear, ReLU): L_H = 7.
VGG_BLOCKS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


def vgg_cuts(blocks: Sequence[int], batch_norm: bool) -> List[str]:
    """The cuts of a torchvision VGG whose `features` has `blocks` convolutions per block, each
    followed by (batch norm and) ReLU, each block by a max pool."""
    cuts, index = [], -1
    for convs in blocks[:-1]:
        index += convs * (3 if batch_norm else 2) + 1
        cuts.append(f"features.{index}")
    return cuts + ["avgpool", "classifier.1", "classifier.4"]


CUTS: Dict[str, List[str]] = {
    "resnet": RESNET,
    "timm-resnet": TIMM_RESNET,
    "alexnet": ALEXNET,
    **{name: vgg_cuts(blocks, False) for name, blocks in VGG_BLOCKS.items()},
    **{f"{name}_bn": vgg_cuts(blocks, True) for name, blocks in VGG_BLOCKS.items()},
}


def family_of(function_name: str) -> str:
    """The cut list a torchvision builder's name implies ("resnet50" -> "resnet", "vgg16_bn"), or ""."""
    if function_name in CUTS:
        return function_name
    if function_name.startswith(("resnet", "resnext", "wide_resnet")):
        return "resnet"
    return ""


def resolve_cuts(cuts: Union[str, Sequence[str]], where: str) -> List[str]:
    """A cut list: a family's name from CUTS, or the list itself."""
    if isinstance(cuts, str):
        if cuts not in CUTS:
            raise unknown("cut list", cuts, CUTS, where)
        return list(CUTS[cuts])
    if not isinstance(cuts, (list, tuple)) or not cuts or not all(isinstance(c, str) for c in cuts):
        raise UserError(f"{where}: cuts must be a family's name ({', '.join(sorted(CUTS))}) or a non-empty list of "
                        f"dotted submodule names; got {cuts!r}")
    return list(cuts)
