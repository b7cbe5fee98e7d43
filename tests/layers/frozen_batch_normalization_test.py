"""keras_contrast.layers.FrozenBatchNormalization: moving statistics always."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case


def numpy_frozen(x, gamma, beta, mean, variance, epsilon, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda a: np.reshape(np.asarray(a, "float64"), shape)  # noqa: E731
    return r(gamma) * (x.astype("float64") - r(mean)) / np.sqrt(r(variance) + epsilon) + r(beta)


def set_statistics(layer, seed):
    rng = np.random.default_rng(seed)
    channels = layer.moving_mean.shape[0]
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
    layer.beta.assign(rng.normal(size=channels))
    layer.moving_mean.assign(rng.normal(size=channels))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def numpy_weights(layer):
    return [
        keras.ops.convert_to_numpy(w).astype("float64").copy()
        for w in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
    ]


@pytest.mark.parametrize("shape,axis", [((6, 4), -1), ((3, 4, 2, 2), 1)])
def test_training_output_matches_numpy_with_moving_statistics(shape, axis):
    layer = layers.FrozenBatchNormalization(axis=axis)
    layer.build(shape)
    set_statistics(layer, 0)
    x = np.random.default_rng(1).normal(3.0, 2.0, size=shape).astype("float32")
    before = numpy_weights(layer)
    expected = numpy_frozen(x, *before, layer.epsilon, axis=axis)
    test_case.assert_all_close(layer(x, training=True), expected)
    test_case.assert_all_close(layer(x, training=False), expected)
    for a, b in zip(numpy_weights(layer), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("affine_trainable", [True, False])
def test_fit_keeps_statistics_and_trains_affine_iff_affine_trainable(affine_trainable):
    inputs = keras.Input((5,))
    frozen = layers.FrozenBatchNormalization(momentum=0.5, affine_trainable=affine_trainable)
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(frozen(inputs)))
    set_statistics(frozen, 2)
    model.trainable = True  # must not unfreeze gamma/beta
    assert frozen.trainable
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(3)
    x, y = rng.normal(2.0, 3.0, size=(16, 5)).astype("float32"), np.ones((16, 2), "float32")
    gamma, beta, mean, variance = numpy_weights(frozen)
    dense_before = keras.ops.convert_to_numpy(dense.kernel).copy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = numpy_weights(frozen)
    np.testing.assert_array_equal(after[2], mean)
    np.testing.assert_array_equal(after[3], variance)
    for new, old in zip(after[:2], (gamma, beta)):
        assert np.any(new != old) == affine_trainable
    assert np.any(keras.ops.convert_to_numpy(dense.kernel) != dense_before)
    test_case.assert_all_close(frozen(x, training=True), numpy_frozen(x, *after, frozen.epsilon))


def test_affine_trainable_false_makes_gamma_and_beta_non_trainable_weights():
    layer = layers.FrozenBatchNormalization(affine_trainable=False)
    layer.build((None, 3))
    assert layer.trainable_weights == []
    assert len(layer.non_trainable_weights) == 4
    trainable = layers.FrozenBatchNormalization()
    trainable.build((None, 3))
    assert {w.name for w in trainable.trainable_weights} == {"gamma", "beta"}


def test_statistics_do_not_depend_on_layer_trainable():
    layer = layers.FrozenBatchNormalization()
    layer.build((None, 3))
    set_statistics(layer, 4)
    x = np.random.default_rng(5).normal(size=(4, 3)).astype("float32")
    trained = keras.ops.convert_to_numpy(layer(x, training=True))
    layer.trainable = False
    test_case.assert_all_close(layer(x, training=True), trained)


def test_keras_file_round_trip_in_a_functional_model():
    inputs = keras.Input((4,))
    frozen = layers.FrozenBatchNormalization(affine_trainable=False, epsilon=1e-4)
    model = keras.Model(inputs, keras.layers.Dense(2)(frozen(inputs)))
    set_statistics(frozen, 6)
    restored = test_case.keras_file_round_trip(model)
    assert type(restored.layers[1]) is layers.FrozenBatchNormalization
    assert restored.layers[1].affine_trainable is False
    assert restored.layers[1].trainable_weights == []
    x = np.random.default_rng(7).normal(size=(3, 4)).astype("float32")
    test_case.assert_all_close(restored(x, training=True), model(x, training=True))


def test_config_round_trip():
    layer = layers.FrozenBatchNormalization(axis=1, center=False, affine_trainable=False)
    restored = test_case.serialization_round_trip(layer)
    assert type(restored) is layers.FrozenBatchNormalization
    assert restored.get_config() == layer.get_config()


def test_float16_inputs_under_mixed_precision_are_finite():
    layer = layers.FrozenBatchNormalization(dtype="mixed_float16")
    layer.build((None, 3))
    layer.moving_variance.assign([1e6, 1e6, 1e6])
    x = np.full((4, 3), 1000.0, "float16")
    outputs = layer(x, training=True)
    assert outputs.dtype == tf.float16
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="affine_trainable"):
        layers.FrozenBatchNormalization(affine_trainable="no")
    with pytest.raises(ValueError, match="`axis`"):
        layers.FrozenBatchNormalization(axis=0).build((None, 3))
    with pytest.raises(ValueError, match="epsilon"):
        layers.FrozenBatchNormalization(epsilon=0.0)
    with pytest.raises(ValueError, match="renorm"):
        layers.FrozenBatchNormalization(renorm=True)
