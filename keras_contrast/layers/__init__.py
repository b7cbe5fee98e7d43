"""Layers for contrastive models."""

from keras_contrast.layers.temperature import ClipValue
from keras_contrast.layers.temperature import LearnableTemperature

__all__ = ["ClipValue", "LearnableTemperature"]
