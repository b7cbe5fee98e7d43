"""keras_contrast.layers.BatchNormalization and frozen_statistics()."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case


def inputs(seed=0, batch=16):
    return np.random.default_rng(seed).normal(3.0, 2.0, size=(batch, 4)).astype("float32")


def numpy_batch_norm(x, gamma, beta, epsilon):
    x = x.astype("float64")
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + epsilon) + beta


@pytest.mark.parametrize("renorm", [False, True])
def test_frozen_statistics_use_batch_statistics_without_update(renorm):
    layer = layers.BatchNormalization(momentum=0.5, renorm=renorm)
    layer(inputs(0), training=True)
    saved = [keras.ops.convert_to_numpy(w).copy() for w in layer.non_trainable_weights]
    x = inputs(1) * 5
    with layers.frozen_statistics():
        outputs = layer(x, training=True)
    for before, variable in zip(saved, layer.non_trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), before, rtol=1e-6)
    if not renorm:
        test_case.assert_all_close(
            outputs, numpy_batch_norm(x, 1.0, 0.0, layer.epsilon), rtol=1e-4, atol_scale=1e-5
        )


def test_same_traced_function_inside_and_outside_the_context():
    layer = layers.BatchNormalization(momentum=0.5)
    layer.build((None, 4))
    step = tf.function(lambda x: layer(x, training=True))
    x = tf.constant(inputs(2))
    with layers.frozen_statistics():
        step(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), 0.0)
    step(x)  # traced inside the context, must update now
    test_case.assert_all_close(
        keras.ops.convert_to_numpy(layer.moving_mean), 0.5 * inputs(2).mean(0), rtol=1e-5
    )


def test_context_inside_a_replica_function():
    strategy = test_case.strategy(2)
    with strategy.scope():
        layer = layers.BatchNormalization(momentum=0.5)
        layer.build((None, 4))

    @tf.function
    def step(x, frozen):
        def replica_fn(x):
            if frozen:
                with layers.frozen_statistics():
                    return layer(x, training=True)
            return layer(x, training=True)

        return strategy.run(replica_fn, args=(x,))

    x = test_case.split_per_replica(strategy, inputs(3))
    step(x, True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), 0.0)
    step(x, False)
    assert np.all(np.abs(keras.ops.convert_to_numpy(layer.moving_mean)) > 0.5)


def test_matches_keras_layer_outside_the_context():
    x = inputs(4)
    ours = layers.BatchNormalization(momentum=0.9)
    theirs = keras.layers.BatchNormalization(momentum=0.9)
    for _ in range(2):
        test_case.assert_all_close(ours(x, training=True), theirs(x, training=True))
    test_case.assert_all_close(ours.moving_variance, theirs.moving_variance)


def test_config_round_trip():
    layer = layers.BatchNormalization(synchronized=True, renorm=True, momentum=0.9)
    restored = test_case.serialization_round_trip(layer)
    assert type(restored) is layers.BatchNormalization
    assert restored.get_config() == layer.get_config()
