"""Keras BatchNormalization that can skip its moving-statistics update."""

import contextlib

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.statistics import effective_momentum


@contextlib.contextmanager
def momentum_honouring_context(layer):
    """During one call, replaces `layer`'s momenta by tensors that equal 1
    inside `frozen_statistics()`, which turns Keras' update
    `m ← m·momentum + batch·(1 - momentum)` into `m ← m`."""
    saved = (layer.momentum, getattr(layer, "renorm_momentum", None))
    layer.momentum = effective_momentum(saved[0])
    if getattr(layer, "renorm", False):
        layer.renorm_momentum = effective_momentum(saved[1])
    try:
        yield
    finally:
        layer.momentum = saved[0]
        if saved[1] is not None:
            layer.renorm_momentum = saved[1]


@keras_contrast_export("keras_contrast.layers.BatchNormalization")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that honours `frozen_statistics()`.

    Identical to Keras' layer (same arguments, including
    `synchronized=True` for cross-replica statistics and `renorm=True` for
    Batch Renormalization) except that, when called in training mode inside
    `keras_contrast.layers.frozen_statistics()`, it normalises with batch
    statistics without updating its moving statistics.

    Example:
    >>> bn = keras_contrast.layers.BatchNormalization(synchronized=True)
    >>> with keras_contrast.layers.frozen_statistics():
    ...     y = bn(x, training=True)  # batch statistics, no EMA update
    """

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        with momentum_honouring_context(self):
            return super().call(inputs, training=training, mask=mask)
