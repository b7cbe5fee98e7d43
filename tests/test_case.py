"""Shared test helpers: tolerances, strategies, serialization round trips."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import distribute

# DESIGN.md "Exactness is the spec": float32 rtol 1e-5 with atol 1e-6·max|ref|.
RTOL = 1e-5


def assert_all_close(actual, expected, rtol=RTOL, atol_scale=1e-6, msg=""):
    """Asserts |actual - expected| <= atol + rtol·|expected| elementwise,
    with atol = atol_scale · max|expected|."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    atol = atol_scale * max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=msg)


def strategy(num_replicas):
    """A MirroredStrategy over `num_replicas` of the conftest's logical CPUs
    (the default strategy for 1)."""
    if num_replicas == 1:
        return tf.distribute.get_strategy()
    return distribute.simulated_cpu_strategy(num_replicas)


def split_per_replica(strategy_, array, sizes=None):
    """Distributes `array` row-wise over the strategy's replicas.

    Args:
        sizes: rows per replica (default: equal split).
    """
    replicas = strategy_.num_replicas_in_sync
    if sizes is None:
        sizes = [len(array) // replicas] * replicas
    bounds = np.cumsum([0] + list(sizes))
    pieces = [array[bounds[r] : bounds[r + 1]] for r in range(replicas)]
    return strategy_.experimental_distribute_values_from_function(
        lambda context: tf.constant(pieces[context.replica_id_in_sync_group])
    )


def serialization_round_trip(obj):
    """`obj` → config → new object, via Keras' registered-name machinery."""
    config = keras.saving.serialize_keras_object(obj)
    return keras.saving.deserialize_keras_object(config)


def keras_file_round_trip(model):
    """Saves `model` to a `.keras` file and loads it back."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        return keras.models.load_model(path)
