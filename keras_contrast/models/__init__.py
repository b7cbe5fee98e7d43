"""Backbones with pluggable normalization and ready contrastive models."""

from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.models.moco import MoCo
from keras_contrast.models.mocov3 import MoCoV3
from keras_contrast.models.presets import from_preset
from keras_contrast.models.presets import list_presets
from keras_contrast.models.resnet import ResNetBackbone
from keras_contrast.models.simclr import SimCLR
from keras_contrast.models.vit import ViTBackbone
from keras_contrast.models.vit import ViTTokens
from keras_contrast.models.vit import sincos_position_embedding

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
    "sincos_position_embedding",
]
