"""Layers for contrastive models."""

from keras_contrast.layers.batch_normalization import BatchNormalization
from keras_contrast.layers.statistics import effective_momentum
from keras_contrast.layers.statistics import frozen_statistics
from keras_contrast.layers.statistics import statistics_frozen
from keras_contrast.layers.temperature import ClipValue
from keras_contrast.layers.temperature import LearnableTemperature

__all__ = [
    "BatchNormalization",
    "ClipValue",
    "LearnableTemperature",
    "effective_momentum",
    "frozen_statistics",
    "statistics_frozen",
]
