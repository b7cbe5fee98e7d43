"""Keras callbacks for contrastive training."""

from keras_contrast.callbacks.bn_leak_monitor import BNLeakMonitor
from keras_contrast.callbacks.gradient_norm import GradientNormMonitor
from keras_contrast.callbacks.knn_monitor import KNNMonitor
from keras_contrast.callbacks.precise_bn import PreciseBN
from keras_contrast.callbacks.temperature_monitor import TemperatureMonitor

__all__ = ["BNLeakMonitor", "GradientNormMonitor", "KNNMonitor", "PreciseBN", "TemperatureMonitor"]
