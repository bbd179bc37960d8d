"""The registry of architectures: name -> builder(input_shape, num_outputs, **options) -> LayeredNet.

Adding an architecture is one builder function and one line here.
"""

from . import densenet, small, speech

ARCHS = {
    "alexnet-small": small.alexnet_small,
    "vgg-small": small.vgg_small,
    "model-a": speech.model_a,
    "model-b": speech.model_b,
    "densenet6": densenet.densenet6,
    "densenet-bc-100": densenet.densenet_bc_100,
}
