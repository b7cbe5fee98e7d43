"""Model-level BatchNorm tools: conversion, freezing, Precise BN, Adaptive BN."""

from keras_contrast.api_export import deprecated_aliases
from keras_contrast.normalization.convert import DomainRoutedModel
from keras_contrast.normalization.convert import convert_batch_norm
from keras_contrast.normalization.convert import freeze_batch_norm
from keras_contrast.normalization.factory import NORMALIZATIONS
from keras_contrast.normalization.factory import normalization_layer
from keras_contrast.normalization.precise import adapt_batch_norm
from keras_contrast.normalization.precise import precise_batch_norm

__all__ = [
    "DomainRoutedModel",
    "NORMALIZATIONS",
    "adapt_batch_norm",
    "convert_batch_norm",
    "freeze_batch_norm",
    "normalization_layer",
    "precise_batch_norm",
]

# Names that left the public API; each warns and still works for one release.
_DEPRECATED = {
    # One home for the switch: keras_contrast.layers.frozen_statistics.
    "frozen_statistics": "keras_contrast.layers.frozen_statistics",
    "KINDS": "keras_contrast.normalization.convert.KINDS",
}
__getattr__ = deprecated_aliases(__name__, _DEPRECATED)
del deprecated_aliases
