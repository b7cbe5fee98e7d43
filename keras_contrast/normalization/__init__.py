"""Model-level BatchNorm tools: conversion, freezing, Precise BN, Adaptive BN."""

from keras_contrast.layers.statistics import frozen_statistics
from keras_contrast.normalization.convert import KINDS
from keras_contrast.normalization.convert import DomainRoutedModel
from keras_contrast.normalization.convert import convert_batch_norm
from keras_contrast.normalization.convert import freeze_batch_norm
from keras_contrast.normalization.factory import NORMALIZATIONS
from keras_contrast.normalization.factory import normalization_layer
from keras_contrast.normalization.precise import adapt_batch_norm
from keras_contrast.normalization.precise import precise_batch_norm

__all__ = [
    "DomainRoutedModel",
    "KINDS",
    "NORMALIZATIONS",
    "adapt_batch_norm",
    "convert_batch_norm",
    "freeze_batch_norm",
    "normalization_layer",
    "frozen_statistics",
    "precise_batch_norm",
]
