"""Keras callbacks for contrastive training."""

from keras_contrast.callbacks.precise_bn import PreciseBN

__all__ = ["PreciseBN"]
