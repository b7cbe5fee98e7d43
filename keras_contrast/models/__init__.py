"""Backbones with pluggable normalization and ready contrastive models."""

from keras_contrast.api_export import deprecated_aliases
from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.models.moco import MoCo
from keras_contrast.models.mocov3 import MoCoV3
from keras_contrast.models.presets import from_preset
from keras_contrast.models.presets import list_presets
from keras_contrast.models.presets import preset_folder
from keras_contrast.models.presets import save_to_preset
from keras_contrast.models.resnet import ResNetBackbone
from keras_contrast.models.simclr import SimCLR
from keras_contrast.models.vit import ViTBackbone
from keras_contrast.models.vit import ViTTokens

__all__ = [
    "DualEncoder",
    "MoCo",
    "MoCoV3",
    "ResNetBackbone",
    "SimCLR",
    "ViTBackbone",
    "ViTTokens",
    "from_preset",
    "list_presets",
    "preset_folder",
    "save_to_preset",
]

# Names that left the public API; each warns and still works for one release.
_DEPRECATED = {
    "sincos_position_embedding": "keras_contrast.models.vit.sincos_position_embedding",
}
__getattr__ = deprecated_aliases(__name__, _DEPRECATED)
del deprecated_aliases
