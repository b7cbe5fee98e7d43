"""Keras BatchNormalization that can skip its moving-statistics update."""

import contextlib
import threading

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics
from keras_contrast.layers.statistics import create_switch
from keras_contrast.layers.statistics import effective_momentum

# Ids of the layers inside a training call, per thread: MirroredStrategy
# traces its replicas in concurrent threads, so the state must not be shared.
_TRAINING_CALLS = threading.local()


def _active_layers():
    if not hasattr(_TRAINING_CALLS, "ids"):
        _TRAINING_CALLS.ids = set()
    return _TRAINING_CALLS.ids


@contextlib.contextmanager
def momentum_honouring_context(layer):
    """During a training call of `layer` (a `BatchNormalization` of this
    module) on this thread, its `momentum` and `renorm_momentum` read as
    tensors equal to 1 inside `frozen_statistics()`, which turns Keras'
    update `m ← m·momentum + batch·(1 - momentum)` into `m ← m`."""
    active = _active_layers()
    already = id(layer) in active
    active.add(id(layer))
    try:
        yield
    finally:
        if not already:
            active.discard(id(layer))


@keras_contrast_export("keras_contrast.layers.BatchNormalization")
class BatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that honours `frozen_statistics()`.

    Identical to Keras' layer (same arguments, including
    `synchronized=True` for cross-replica statistics and `renorm=True` for
    Batch Renormalization) except that
    - when called in training mode inside
      `keras_contrast.layers.frozen_statistics()`, it normalises with batch
      statistics without updating its moving statistics;
    - under a strategy without `synchronized=True`, the moving statistics
      that are read, saved and checkpointed are the mean over replicas
      (Keras' layer keeps only the first replica's; see
      `keras_contrast.layers.replica_statistics`).

    Example:
    >>> bn = keras_contrast.layers.BatchNormalization(synchronized=True)
    >>> with keras_contrast.layers.frozen_statistics():
    ...     y = bn(x, training=True)  # batch statistics, no EMA update
    """

    @property
    def momentum(self):
        if id(self) in _active_layers():
            return effective_momentum(self._momentum)
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        self._momentum = value

    @property
    def renorm_momentum(self):
        if id(self) in _active_layers():
            return effective_momentum(self._renorm_momentum)
        return self._renorm_momentum

    @renorm_momentum.setter
    def renorm_momentum(self, value):
        self._renorm_momentum = value

    def build(self, input_shape):
        create_switch()
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        with momentum_honouring_context(self):
            return super().call(inputs, training=training, mask=mask)
