"""Named model configurations, and presets with trained weights shipped in
the package (nothing is downloaded)."""

import inspect
import json
import os

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.data.wordnet import SEQUENCE_LENGTH
from keras_contrast.data.wordnet import VOCABULARY_SIZE
from keras_contrast.data.wordnet import check_vocabulary_size
from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.models.moco import MoCo
from keras_contrast.models import preset_files
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
    "mocov3_vit_mini": dict(
        description="MoCo v3 for CPU: a ViT of width 64, depth 6, 4 heads, MLP 256, patch 4 "
                    "(a 7x7 grid) on 28x28x1 (Fashion-MNIST), frozen random patch projection, "
                    "sin-cos positions, projector (256, 256, 64), predictor (256, 64).",
        model=MoCoV3, backbone=ViTBackbone,
        backbone_args=dict(variant="tiny", hidden_dim=64, depth=6, num_heads=4, mlp_dim=256,
                           image_size=28, patch_size=4, num_channels=1,
                           freeze_patch_projection=True, position_embedding="sincos"),
        model_args=dict(projection_dims=(256, 256, 64), prediction_dims=(256, 64),
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


def _text_tower(name, vocabulary_size=VOCABULARY_SIZE, sequence_length=SEQUENCE_LENGTH,
                width=256):
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
    """The presets `from_preset` builds, and which of them carry weights.

    Returns:
        `{name: {"description": str, "weights": bool}}`: the architecture
        presets (random weights, `"weights": False`) and the presets shipped
        with trained weights inside the package (`"weights": True`; their
        model card is `README.md` in `preset_folder(name)`).

    Example:

    >>> presets = list_presets()
    >>> presets["simclr_resnet50"]["weights"]
    False
    """
    listing = {name: {"description": preset["description"], "weights": False}
               for name, preset in PRESETS.items()}
    for name, folder in preset_files.shipped_presets().items():
        with open(os.path.join(folder, preset_files.METADATA_FILE)) as handle:
            description = json.load(handle).get("description", "")
        listing[name] = {"description": description, "weights": os.path.isfile(
            os.path.join(folder, preset_files.WEIGHTS_FILE))}
    return listing


@keras_contrast_export("keras_contrast.models.preset_folder")
def preset_folder(name):
    """The folder of a shipped preset with weights (its card is `README.md`).

    Args:
        name: a key of `list_presets()` whose `"weights"` is True.

    Returns:
        The folder's path inside the installed package.
    """
    shipped = preset_files.shipped_presets()
    if name not in shipped:
        raise ValueError(f"No shipped preset with weights is named {name!r}; these are: "
                         f"{sorted(shipped)}.")
    return shipped[name]


@keras_contrast_export("keras_contrast.models.from_preset")
def from_preset(name_or_path, load_weights=True, encoder_only=False, **overrides):
    """Builds a model from a named preset or a preset folder.

    Three kinds of source:

    - an architecture preset (`list_presets()[name]["weights"]` False): the
      configuration only, random weights (e.g. `simclr_resnet50` at 224 px);
    - a shipped preset with weights (`"weights"` True): its trained model,
      from the package's own files (no download);
    - a folder written by `save_to_preset`.

    A preset with weights is rebuilt from its Keras config
    (`keras.saving.deserialize_keras_object(..., safe_mode=True)`), then its
    `model.weights.h5` is checked against the sha256 in `metadata.json` and
    loaded. Call it inside `strategy.scope()` to create the variables
    there.

    Overrides replace arguments of the model or of its backbone. For an
    architecture preset they are backbone arguments (`norm`, `input_shape`,
    `width`, `image_size`, `patch_size`, `depth`, ...) or model arguments
    (`projection_dims`, `momentum`, `total_steps`, ...); for the dual
    encoders `vocabulary_size`, `sequence_length` and `width` shape the
    text towers. For a preset with weights an override must keep every
    weight's shape (`norm="batch"` for weights trained with `"sync"` BN;
    `momentum`, `temperature`, ...).

    Args:
        name_or_path: a key of `list_presets()`, or a preset folder.
        load_weights: bool; False builds a preset with weights with random
            weights instead (architecture presets never have weights).
        encoder_only: bool; True returns the model's `encoder` (image
            models) for fine-tuning or feature extraction.
        **overrides: arguments replacing the preset's.

    Returns:
        A `SimCLR`, `MoCo`, `MoCoV3` or `DualEncoder` (or its encoder).

    Raises:
        ValueError: an unknown name or a folder that is not a preset, an
            override no part of the model takes, weights whose sha256 does
            not match, or weights that do not fit the overrides.

    Example:

    >>> model = from_preset("simclr_resnet18_cifar", norm="batch", input_shape=(28, 28, 1))
    >>> model.encoder.output_shape
    (None, 512)
    """
    for argument, value in (("load_weights", load_weights), ("encoder_only", encoder_only)):
        if not isinstance(value, bool):
            raise TypeError(f"{argument} must be a bool, got {value!r}.")
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError("name_or_path must be a preset name or a folder, got "
                        f"{type(name_or_path).__name__}.")
    if name_or_path in PRESETS:
        model = _build_architecture(name_or_path, overrides)
    else:
        shipped = preset_files.shipped_presets()
        if name_or_path in shipped:
            folder = shipped[name_or_path]
        elif os.path.isdir(name_or_path):
            folder = name_or_path
        else:
            raise ValueError(f"Unknown preset {name_or_path!r}: neither a preset name "
                             f"(presets: {sorted(list_presets())}) nor a folder.")
        model = preset_files.load_folder(folder, name_or_path, load_weights, overrides)
    if not encoder_only:
        return model
    if not hasattr(model, "encoder"):
        raise ValueError(f"encoder_only=True: preset {name_or_path!r} builds a "
                         f"{type(model).__name__}, which has no single encoder (use "
                         "encode_a / encode_b).")
    return model.encoder


@keras_contrast_export("keras_contrast.models.save_to_preset")
def save_to_preset(model, folder, metadata=None, card=None, overwrite=False):
    """Writes a built model as a preset folder that `from_preset` loads.

    The folder receives `config.json` (the model's Keras config, with its
    build config and without its compile config), `model.weights.h5` (the
    model's variables; a compiled model's optimizer state is left out),
    `metadata.json` (`metadata` plus the
    preset format version, the minimum library version, the Keras version
    and the sha256 and size of the weights) and `README.md` (`card`, or one
    listing the metadata).

    Args:
        model: a built `keras.Model` whose classes are registered
            serializable (every keras_contrast model is).
        folder: where to write; created if absent.
        metadata: a JSON-serialisable dict: what the model is and how it
            was made (`description`, `task`, `data`, `metrics`, `command`,
            `compute`, ...).
        card: the model card, Markdown.
        overwrite: bool; False refuses a folder that already holds a preset.

    Returns:
        `folder`.

    Example:

    >>> import tempfile
    >>> model = from_preset("simclr_resnet_tiny", width=4)
    >>> model.build((None, 2, 28, 28, 1))
    >>> folder = save_to_preset(model, tempfile.mkdtemp(), metadata={"task": "demo"})
    >>> restored = from_preset(folder)
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}.")
    return preset_files.save_folder(model, folder, metadata=metadata, card=card,
                                    overwrite=overwrite)


def _build_architecture(name, overrides):
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
