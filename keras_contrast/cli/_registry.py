"""The command's one registry of models, losses and presets.

`train --model NAME` builds `MODELS[NAME]`: which `--loss` it takes, its
default loss and preset (per loss where a loss needs its own, e.g. SigLIP's
learnable bias), the `keras_contrast.models` class its presets must
build, the options of the command line it accepts. Presets themselves are
`keras_contrast.models.presets.PRESETS`; a model's presets are those that
build its class.
"""

import dataclasses
import inspect

from keras_contrast import losses as kc_losses
from keras_contrast import models as kc_models
from keras_contrast.models.presets import PRESETS

# --loss NAME: the keras_contrast.losses class it builds (its first argument
# is the temperature).
LOSSES = {"infonce": "InfoNCE", "dcl": "DCL", "dclw": "DCLW", "clip": "CLIPLoss",
          "mocov3": "MoCoV3Loss", "siglip": "SigLIPLoss"}
LOSS_NAMES = tuple(LOSSES)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What `train --model NAME` trains.

    Attributes:
        model_class: name of the `keras_contrast.models` class its presets build.
        losses: the `--loss` names it takes.
        default_loss: `--loss` when none is given.
        default_preset: `--preset` when none is given.
        backbone: `"resnet"` (`--preset` takes `input_shape`), `"vit"` (it takes
            `image_size`, `num_channels`, `patch_size`, `total_steps`) or `"text"`.
        options: the model options of the command line it takes, by argument
            name (`queue_size`, `momentum`, `shuffle_bn`).
        dataset: the only `--dataset` it trains on, and that no other model
            trains on; `None`: the image datasets.
        requirements: modules `train` needs beyond the library (what for is in
            `REQUIREMENTS`).
        loss_presets: `{loss: preset}`, the preset a `--loss` trains in place
            of `default_preset` (`--model dual --loss siglip`: the preset
            with SigLIP's learnable bias). A preset named here trains only
            with its loss, and that loss only with a preset named here.
    """

    model_class: str
    losses: tuple
    default_loss: str
    default_preset: str
    backbone: str
    options: tuple = ()
    dataset: str = None
    requirements: tuple = ("matplotlib", "tensorboard")
    loss_presets: dict = dataclasses.field(default_factory=dict)


MODELS = {
    "simclr": ModelSpec("SimCLR", ("infonce", "dcl", "dclw"), "dclw", "simclr_resnet_tiny",
                        "resnet", options=("shuffle_bn",)),
    "moco": ModelSpec("MoCo", ("infonce", "dcl"), "infonce", "moco_resnet_tiny", "resnet",
                      options=("queue_size", "momentum", "shuffle_bn")),
    "mocov3": ModelSpec("MoCoV3", ("mocov3",), "mocov3", "mocov3_vit_tiny", "vit",
                        options=("momentum", "patch_size")),
    # No TensorBoard callback: its training loop logs only the CSV.
    # --loss siglip: the dual encoder with SigLIP's learnable bias and
    # initialisation (τ = 0.1, b = -10).
    "dual": ModelSpec("DualEncoder", ("clip", "siglip"), "clip", "dual_encoder_small", "text",
                      dataset="wordnet", requirements=("matplotlib",), options=("vocabulary_size",),
                      loss_presets={"siglip": "siglip_dual_encoder_small"}),
}
# What `train` imports beyond the library: the `cli` extra of setup.cfg.
REQUIREMENTS = {"matplotlib": "the plots", "tensorboard": "the TensorBoard logs"}
IMAGE_DATASETS = ("fashion_mnist", "digits")
DATASETS = IMAGE_DATASETS + tuple(m.dataset for m in MODELS.values() if m.dataset)
OPTIMIZERS = ("adamw", "lars", "sgd")
# --optimizer: default --learning-rate, --weight-decay, --lr-scaling. LARS
# follows SimCLR (base 0.075 x sqrt(batch), weight decay 1e-6), SGD MoCo
# (0.03, 1e-4; both with momentum 0.9).
OPTIMIZER_DEFAULTS = {"adamw": (2e-3, 1e-4, "none"), "lars": (0.075, 1e-6, "sqrt"),
                      "sgd": (0.03, 1e-4, "none")}


def model_class(model):
    """The `keras_contrast.models` class `--model model` builds."""
    return getattr(kc_models, MODELS[model].model_class)


def loss_class(loss):
    """The `keras_contrast.losses` class `--loss loss` builds."""
    return getattr(kc_losses, LOSSES[loss])


def preset_for(model, loss, preset):
    """The preset `train --model model --loss loss` trains: `preset`, except
    that the model's `default_preset` (what `--preset` defaults to) gives
    way to the loss's own preset (`loss_presets`)."""
    spec = MODELS[model]
    if preset == spec.default_preset and loss in spec.loss_presets:
        return spec.loss_presets[loss]
    return preset


def check_preset_fits_loss(model, loss, preset):
    """A message saying why `preset` cannot train with `loss` under `--model
    model` (a preset of `loss_presets` needs its loss and the reverse), or
    None when it can."""
    loss_presets = MODELS[model].loss_presets
    if loss in loss_presets and preset != loss_presets[loss]:
        return (f"--loss {loss} trains --preset {loss_presets[loss]} (the default with "
                f"--loss {loss}), not {preset}")
    owner = next((name for name, other in loss_presets.items() if other == preset), None)
    if owner is not None and owner != loss:
        return f"--preset {preset} trains with --loss {owner}, not {loss}"
    return None


def presets_of(model):
    """The names of the presets that build `--model model`'s class."""
    name = MODELS[model].model_class
    return [preset for preset, spec in PRESETS.items() if spec["model"].__name__ == name]


def models_taking(option):
    """The `--model` names whose models take the command-line `option`."""
    return [name for name, spec in MODELS.items() if option in spec.options]


def init_arguments(model):
    """The argument names of `--model model`'s class constructor (a MoCo of an
    older keras_contrast has no `shuffle_bn`)."""
    return inspect.signature(model_class(model).__init__).parameters


def accepts(model, option):
    """Whether `--model model` takes `option` and its class has that argument."""
    return option in MODELS[model].options and option in init_arguments(model)
