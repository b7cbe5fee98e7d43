"""Named model configurations (no weights are downloaded)."""

import inspect

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.data.wordnet import check_vocabulary_size
from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.models.moco import MoCo
from keras_contrast.models.mocov3 import MoCoV3
from keras_contrast.models.resnet import ResNetBackbone
from keras_contrast.models.simclr import SimCLR
from keras_contrast.models.vit import ViTBackbone

_VIT_MOCO = dict(patch_size=16, image_size=224, freeze_patch_projection=True,
                 position_embedding="sincos")
PRESETS = {
    "simclr_resnet18_cifar": dict(
        description="SimCLR, ResNet-18 with the CIFAR stem on 32x32x3, synchronised BN, "
                    "projection (2048, 128).",
        model=SimCLR, backbone=ResNetBackbone,
        backbone_args=dict(depth=18, stem="cifar", norm="sync", input_shape=(32, 32, 3)),
        model_args=dict(projection_dims=(2048, 128), projection_norm="sync"),
    ),
    "simclr_resnet50": dict(
        description="SimCLR, ResNet-50 (ImageNet stem, 224x224x3), synchronised BN, "
                    "projection (2048, 128).",
        model=SimCLR, backbone=ResNetBackbone,
        backbone_args=dict(depth=50, stem="imagenet", norm="sync", input_shape=(224, 224, 3)),
        model_args=dict(projection_dims=(2048, 128), projection_norm="sync"),
    ),
    "simclr_resnet_tiny": dict(
        description="SimCLR for CPU demos: ResNet-18 of width 16 with the CIFAR stem on "
                    "28x28x1 (Fashion-MNIST), synchronised BN, projection (256, 64).",
        model=SimCLR, backbone=ResNetBackbone,
        backbone_args=dict(depth=18, stem="cifar", norm="sync", width=16,
                           input_shape=(28, 28, 1)),
        model_args=dict(projection_dims=(256, 64), projection_norm="sync"),
    ),
    "moco_resnet50": dict(
        description="MoCo v2, ResNet-50 (ImageNet stem, 224x224x3) with per-replica BN, "
                    "projection (2048, 128), queue 65536, momentum 0.999.",
        model=MoCo, backbone=ResNetBackbone,
        backbone_args=dict(depth=50, stem="imagenet", norm="batch", input_shape=(224, 224, 3)),
        model_args=dict(projection_dims=(2048, 128), queue_size=65536, momentum=0.999),
    ),
    "moco_resnet_tiny": dict(
        description="MoCo v2 for CPU demos: ResNet-18 of width 16 with the CIFAR stem on "
                    "28x28x1 (Fashion-MNIST), per-replica BN, projection (256, 64), "
                    "queue 4096, momentum 0.99.",
        model=MoCo, backbone=ResNetBackbone,
        backbone_args=dict(depth=18, stem="cifar", norm="batch", width=16,
                           input_shape=(28, 28, 1)),
        model_args=dict(projection_dims=(256, 64), queue_size=4096, momentum=0.99),
    ),
    "mocov3_vit_small": dict(
        description="MoCo v3, ViT-Small/16 on 224x224x3 with frozen random patch "
                    "projection, projector (4096, 4096, 256), predictor (4096, 256).",
        model=MoCoV3, backbone=ViTBackbone,
        backbone_args=dict(variant="small", **_VIT_MOCO),
        model_args=dict(projection_dims=(4096, 4096, 256), prediction_dims=(4096, 256),
                        momentum=0.99, projection_norm="sync"),
    ),
    "mocov3_vit_tiny": dict(
        description="MoCo v3, ViT-Tiny/16 on 224x224x3 with frozen random patch "
                    "projection, projector (4096, 4096, 256), predictor (4096, 256).",
        model=MoCoV3, backbone=ViTBackbone,
        backbone_args=dict(variant="tiny", **_VIT_MOCO),
        model_args=dict(projection_dims=(4096, 4096, 256), prediction_dims=(4096, 256),
                        momentum=0.99, projection_norm="sync"),
    ),
    "dual_encoder_small": dict(
        description="Dual encoder for text pairs (e.g. WordNet gloss <-> words): two "
                    "towers of hashed-token embeddings (vocabulary 32768, 32 tokens, "
                    "mean pooling, 2 x Dense 256), projection 128, learnable temperature.",
        model=DualEncoder,
        model_args=dict(projection_dim=128, learnable_temperature=True),
    ),
    "siglip_dual_encoder_small": dict(
        description="The dual_encoder_small towers for the sigmoid loss (SigLIP): projection "
                    "128, learnable temperature from 0.1 (logit scale 10) and learnable "
                    "logit bias from -10; compile with keras_contrast.losses.SigLIPLoss.",
        model=DualEncoder,
        model_args=dict(projection_dim=128, learnable_temperature=True, temperature=0.1,
                        learnable_bias=True, bias=-10.0),
    ),
}


def _text_tower(name, vocabulary_size=32768, sequence_length=32, width=256):
    """Token ids `(batch, sequence_length)` (0 = padding) → `(batch, width)`."""
    check_vocabulary_size(vocabulary_size)
    for argument, value in (("sequence_length", sequence_length), ("width", width)):
        check_positive_int(value, argument)
    tokens = keras.Input((sequence_length,), dtype="int32", name=f"{name}_tokens")
    x = keras.layers.Embedding(vocabulary_size, width, mask_zero=True)(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(width, activation="gelu")(x)
    x = keras.layers.Dense(width)(x)
    return keras.Model(tokens, x, name=name)


@keras_contrast_export("keras_contrast.models.list_presets")
def list_presets():
    """`{name: description}` of the presets `from_preset` builds."""
    return {name: preset["description"] for name, preset in PRESETS.items()}


@keras_contrast_export("keras_contrast.models.from_preset")
def from_preset(name, **overrides):
    """Builds a ready model from a named configuration (random weights).

    Overrides go to the backbone when they are backbone arguments (`norm`,
    `input_shape`, `width`, `image_size`, `patch_size`, `depth`, ...) and
    to the model otherwise (`projection_dims`, `momentum`, `total_steps`,
    ...). For the dual encoders (`dual_encoder_small`,
    `siglip_dual_encoder_small`), `vocabulary_size`, `sequence_length` and
    `width` shape the text towers.

    Args:
        name: a key of `list_presets()`.
        **overrides: arguments replacing the preset's.

    Returns:
        An unbuilt-weights `SimCLR`, `MoCo`, `MoCoV3` or `DualEncoder`.

    Example:
    >>> model = from_preset("simclr_resnet18_cifar", norm="batch", input_shape=(28, 28, 1))
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; presets: {sorted(PRESETS)}.")
    preset = PRESETS[name]
    model_args = dict(preset["model_args"])
    if preset["model"] is DualEncoder:
        tower_keys = ("vocabulary_size", "sequence_length", "width")
        tower_args = {k: overrides.pop(k) for k in tower_keys if k in overrides}
        _check_overrides(name, overrides, DualEncoder)
        model_args.update(overrides)
        return DualEncoder(_text_tower("tower_a", **tower_args),
                           _text_tower("tower_b", **tower_args), **model_args)
    backbone_cls = preset["backbone"]
    backbone_params = set(inspect.signature(backbone_cls.__init__).parameters) - {"self", "kwargs"}
    backbone_args = dict(preset["backbone_args"])
    backbone_args.update({k: v for k, v in overrides.items() if k in backbone_params})
    rest = {k: v for k, v in overrides.items() if k not in backbone_params}
    _check_overrides(name, rest, preset["model"])
    model_args.update(rest)
    return preset["model"](backbone_cls(**backbone_args), **model_args)


def _check_overrides(name, overrides, model_cls):
    allowed = set(inspect.signature(model_cls.__init__).parameters) - {"self", "kwargs"}
    allowed |= {"name"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"Preset {name!r} does not take {unknown}.")
