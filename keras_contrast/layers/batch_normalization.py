"""Keras BatchNormalization that can skip its moving-statistics update."""

import contextlib
import threading

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.ghost_batch_normalization import check_axis_in_range
from keras_contrast.layers.ghost_batch_normalization import check_axis_type
from keras_contrast.layers.ghost_batch_normalization import check_epsilon
from keras_contrast.layers.ghost_batch_normalization import check_momentum
from keras_contrast.layers.ghost_batch_normalization import float_compute_dtype
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics
from keras_contrast.layers.statistics import create_switch
from keras_contrast.layers.statistics import effective_momentum

# The layers inside a training call, per thread (MirroredStrategy traces its
# replicas in concurrent threads, so the state must not be shared): id ->
# the dtype the call computes its statistics in.
_TRAINING_CALLS = threading.local()


def _active_layers():
    if not hasattr(_TRAINING_CALLS, "dtypes"):
        _TRAINING_CALLS.dtypes = {}
    return _TRAINING_CALLS.dtypes


@contextlib.contextmanager
def momentum_honouring_context(layer, dtype=tf.float32):
    """During a training call of `layer` (a `BatchNormalization` of this
    module) on this thread, its `momentum` and `renorm_momentum` read as
    `dtype` tensors (the dtype of the statistics they multiply), equal to 1
    inside `frozen_statistics()`, which turns Keras' update
    `m ← m·momentum + batch·(1 - momentum)` into `m ← m`."""
    active = _active_layers()
    previous = active.get(id(layer))
    active[id(layer)] = tf.as_dtype(dtype)
    try:
        yield
    finally:
        if previous is None:
            active.pop(id(layer), None)
        else:
            active[id(layer)] = previous


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
      `keras_contrast.layers.replica_statistics`);
    - its arguments are checked: `momentum` and `renorm_momentum` must be
      numbers in [0, 1] and `epsilon` a finite number > 0 (Keras'
      layer takes `momentum="0.9"`, `momentum=True`, `momentum=1.5` or
      `epsilon=0`), `axis` an int within the input's rank, on a known
      dimension (checked when the layer is built);
    - in training under `keras.config.set_floatx("float64")` (or with
      float64 inputs) it computes in float64, as Keras' layer.

    Raises:
        ValueError: for the arguments above, naming the argument.

    Example:
    >>> bn = keras_contrast.layers.BatchNormalization(synchronized=True)
    >>> with keras_contrast.layers.frozen_statistics():
    ...     y = bn(x, training=True)  # batch statistics, no EMA update
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, *args, **kwargs):
        check_axis_type(axis)
        check_momentum(momentum)
        check_epsilon(epsilon)
        if "renorm_momentum" in kwargs:
            check_momentum(kwargs["renorm_momentum"], "renorm_momentum")
        super().__init__(axis, momentum, epsilon, *args, **kwargs)

    @property
    def momentum(self):
        dtype = _active_layers().get(id(self))
        if dtype is not None:
            return effective_momentum(self._momentum, dtype)
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        self._momentum = value

    @property
    def renorm_momentum(self):
        dtype = _active_layers().get(id(self))
        if dtype is not None:
            return effective_momentum(self._renorm_momentum, dtype)
        return self._renorm_momentum

    @renorm_momentum.setter
    def renorm_momentum(self, value):
        self._renorm_momentum = value

    def build(self, input_shape):
        check_axis_in_range(self.axis, input_shape)
        create_switch()
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        # Keras computes the statistics in float64 for float64 inputs, else
        # in float32: the momentum must be a tensor of that dtype.
        with momentum_honouring_context(self, float_compute_dtype(inputs)):
            return super().call(inputs, training=training, mask=mask)
