"""Optimizers and schedules for large-batch contrastive training."""

from keras_contrast.optimizers.lars import LARS
from keras_contrast.optimizers.lars import is_bias_or_norm
from keras_contrast.optimizers.schedules import WarmupCosineDecay
from keras_contrast.optimizers.schedules import scaled_learning_rate

__all__ = ["LARS", "is_bias_or_norm", "WarmupCosineDecay", "scaled_learning_rate"]
