"""Backbones with pluggable normalization and ready contrastive models."""

from keras_contrast.models.resnet import ResNetBackbone
from keras_contrast.models.vit import ViTBackbone
from keras_contrast.models.vit import ViTTokens
from keras_contrast.models.vit import sincos_position_embedding

__all__ = ["ResNetBackbone", "ViTBackbone", "ViTTokens", "sincos_position_embedding"]
