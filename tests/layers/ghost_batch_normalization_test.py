"""keras_contrast.layers.GhostBatchNormalization against NumPy and Keras BN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case


def numpy_ghost_batch_norm(x, virtual_batch_size, axis, gamma, beta, epsilon):
    """Ghost BN in float64: output, and the count-weighted average of the
    groups' means and biased variances (the moving-statistics target)."""
    x = x.astype("float64")
    axis %= x.ndim
    reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    gamma, beta = np.reshape(gamma, shape), np.reshape(beta, shape)
    outputs = np.empty_like(x)
    means, variances, counts = [], [], []
    for start in range(0, len(x), virtual_batch_size):
        group = x[start : start + virtual_batch_size]
        mean = group.mean(reduce_axes, keepdims=True)
        variance = group.var(reduce_axes, keepdims=True)
        outputs[start : start + virtual_batch_size] = (
            gamma * (group - mean) / np.sqrt(variance + epsilon) + beta
        )
        means.append(mean.reshape(-1))
        variances.append(variance.reshape(-1))
        counts.append(group.size / x.shape[axis])
    counts = np.array(counts)[:, None]
    target_mean = (counts * np.array(means)).sum(0) / counts.sum()
    target_variance = (counts * np.array(variances)).sum(0) / counts.sum()
    return outputs, target_mean, target_variance


def numpy_inference(x, gamma, beta, mean, variance, epsilon, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda a: np.reshape(np.asarray(a, "float64"), shape)  # noqa: E731
    return r(gamma) * (x.astype("float64") - r(mean)) / np.sqrt(r(variance) + epsilon) + r(beta)


def random_affine(layer, seed):
    rng = np.random.default_rng(seed)
    channels = layer.gamma.shape[0]
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
    layer.beta.assign(rng.normal(size=channels))
    layer.moving_mean.assign(rng.normal(size=channels))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def weights_of(layer):
    return [keras.ops.convert_to_numpy(w).astype("float64") for w in
            (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize(
    "shape,virtual_batch_size,axis",
    [
        ((12, 5), 4, -1),  # (batch, features)
        ((8, 3, 3, 4), 4, -1),  # NHWC
        ((6, 4, 3, 3), 2, 1),  # NCHW
        ((10, 5), 4, -1),  # last group smaller: 4, 4, 2
        ((9, 2, 2, 3), 4, 3),  # last group of one sample
    ],
)
def test_matches_numpy_reference(shape, virtual_batch_size, axis):
    x = np.random.default_rng(0).normal(3.0, 2.0, size=shape).astype("float32")
    layer = layers.GhostBatchNormalization(virtual_batch_size, axis=axis, momentum=0.7)
    layer.build(shape)
    random_affine(layer, 1)
    gamma, beta, mean, variance = weights_of(layer)
    outputs = layer(x, training=True)
    expected, target_mean, target_variance = numpy_ghost_batch_norm(
        x, virtual_batch_size, axis, gamma, beta, layer.epsilon
    )
    test_case.assert_all_close(outputs, expected, rtol=1e-4, atol_scale=1e-5)
    test_case.assert_all_close(layer.moving_mean, 0.7 * mean + 0.3 * target_mean)
    test_case.assert_all_close(layer.moving_variance, 0.7 * variance + 0.3 * target_variance)


def test_gradients_equal_keras_batch_norm_on_each_group():
    x = np.random.default_rng(2).normal(1.0, 2.0, size=(12, 2, 3)).astype("float32")
    upstream = np.random.default_rng(3).normal(size=x.shape).astype("float32")
    ghost = layers.GhostBatchNormalization(4)
    ghost.build(x.shape)
    random_affine(ghost, 4)
    reference = keras.layers.BatchNormalization()
    reference.build(x.shape)
    reference.set_weights(ghost.get_weights())

    def gradients(layer, inputs, weights):
        inputs = tf.constant(inputs)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs, training=True) * weights)
        return tape.gradient(loss, [inputs, layer.gamma.value, layer.beta.value])

    ours = gradients(ghost, x, upstream)
    theirs = [
        gradients(reference, x[s : s + 4], upstream[s : s + 4]) for s in range(0, 12, 4)
    ]
    test_case.assert_all_close(ours[0], np.concatenate([t[0] for t in theirs]), rtol=1e-4,
                               atol_scale=1e-5)
    for k in (1, 2):
        test_case.assert_all_close(ours[k], sum(t[k] for t in theirs), rtol=1e-4)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_batch_inside_tf_function(jit_compile):
    layer = layers.GhostBatchNormalization(4, momentum=0.0, center=False, scale=False)
    layer.build((None, 3))
    step = tf.function(
        lambda x: layer(x, training=True),
        input_signature=[tf.TensorSpec((None, 3), tf.float32)],
        jit_compile=jit_compile,
    )
    for batch in (8, 10, 3):
        x = np.random.default_rng(batch).normal(size=(batch, 3)).astype("float32")
        expected, target_mean, _ = numpy_ghost_batch_norm(x, 4, -1, 1.0, 0.0, layer.epsilon)
        test_case.assert_all_close(step(x), expected, rtol=1e-4, atol_scale=1e-5)
        test_case.assert_all_close(layer.moving_mean, target_mean)


def test_empty_batch_leaves_moving_statistics_unchanged():
    """A replica can receive no rows (the last, uneven batch of an epoch)."""
    layer = layers.GhostBatchNormalization(4)
    layer.build((None, 3))
    random_affine(layer, 14)
    before = weights_of(layer)
    assert layer(np.zeros((0, 3), "float32"), training=True).shape == (0, 3)
    for a, b in zip(weights_of(layer), before):
        np.testing.assert_array_equal(a, b)


def test_inference_uses_moving_statistics_with_any_batch_size():
    layer = layers.GhostBatchNormalization(4)
    layer.build((None, 3))
    random_affine(layer, 5)
    x = np.random.default_rng(6).normal(size=(3, 3)).astype("float32")
    test_case.assert_all_close(
        layer(x, training=False), numpy_inference(x, *weights_of(layer), layer.epsilon)
    )


def test_masked_elements_do_not_count():
    x = np.random.default_rng(7).normal(size=(4, 5, 2)).astype("float32")
    mask = np.random.default_rng(8).uniform(size=(4, 5)) > 0.3
    mask[:, 0] = True
    layer = layers.GhostBatchNormalization(2, momentum=0.0, center=False, scale=False)
    outputs = keras.ops.convert_to_numpy(layer(x, training=True, mask=mask))
    for start in (0, 2):
        kept = x[start : start + 2][mask[start : start + 2]].astype("float64")  # (n, 2)
        expected = (x[start : start + 2] - kept.mean(0)) / np.sqrt(kept.var(0) + layer.epsilon)
        test_case.assert_all_close(outputs[start : start + 2], expected, rtol=1e-4,
                                   atol_scale=1e-5)


def test_frozen_statistics_normalise_ghost_batches_without_update():
    layer = layers.GhostBatchNormalization(2, momentum=0.5)
    layer.build((None, 3))
    random_affine(layer, 9)
    before = weights_of(layer)
    x = np.random.default_rng(10).normal(size=(6, 3)).astype("float32")
    with layers.frozen_statistics():
        outputs = layer(x, training=True)
    for a, b in zip(weights_of(layer), before):
        np.testing.assert_array_equal(a, b)
    expected, _, _ = numpy_ghost_batch_norm(x, 2, -1, before[0], before[1], layer.epsilon)
    test_case.assert_all_close(outputs, expected, rtol=1e-4, atol_scale=1e-5)


@pytest.mark.parametrize("num_replicas,local_batch", [(2, 8), (4, 6)])
def test_replicas_normalise_their_local_ghost_batches(num_replicas, local_batch):
    """Groups are cut per replica (4 replicas × 6 samples: groups of 4 and 2
    on each replica, not 6 global groups of 4). Each replica's copy of the
    moving statistics moves towards its own groups' statistics; reading the
    variable gives the mean of the copies (ReplicaMeanStatistics)."""
    strategy = test_case.strategy(num_replicas)
    with strategy.scope():
        layer = layers.GhostBatchNormalization(4, momentum=0.5, center=False, scale=False)
        layer.build((None, 2, 3))
    x = np.random.default_rng(11).normal(2.0, 3.0, size=(num_replicas * local_batch, 2, 3))
    x = x.astype("float32")

    @tf.function
    def step(x):
        return strategy.run(lambda local: layer(local, training=True), args=(x,))

    outputs = strategy.experimental_local_results(
        step(test_case.split_per_replica(strategy, x))
    )
    local_means = [
        keras.ops.convert_to_numpy(v)
        for v in strategy.experimental_local_results(layer.moving_mean.value)
    ]
    for replica in range(num_replicas):
        local = x[replica * local_batch : (replica + 1) * local_batch]
        expected, target_mean, _ = numpy_ghost_batch_norm(local, 4, -1, 1.0, 0.0, layer.epsilon)
        test_case.assert_all_close(outputs[replica], expected, rtol=1e-4, atol_scale=1e-5)
        test_case.assert_all_close(local_means[replica], 0.5 * target_mean)
    test_case.assert_all_close(layer.moving_mean, np.mean(local_means, axis=0))


def small_model(layer):
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3)(layer(keras.layers.Dense(4)(inputs)))
    return keras.Model(inputs, outputs)


def test_trains_in_fit_and_round_trips_through_a_keras_file():
    model = small_model(layers.GhostBatchNormalization(4, momentum=0.9))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(22, 6)).astype("float32"), rng.normal(size=(22, 3)).astype("float32")
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)  # batches of 10, 10, 2
    ghost = model.layers[2]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(ghost.moving_variance)))
    assert not np.allclose(keras.ops.convert_to_numpy(ghost.moving_mean), 0.0)
    restored = test_case.keras_file_round_trip(model)
    assert type(restored.layers[2]) is layers.GhostBatchNormalization
    assert restored.layers[2].virtual_batch_size == 4
    test_case.assert_all_close(restored(x, training=False), model(x, training=False))
    test_case.assert_all_close(restored(x, training=True), model(x, training=True), rtol=1e-4)


def test_config_round_trip():
    layer = layers.GhostBatchNormalization(
        8, axis=1, momentum=0.9, epsilon=1e-5, center=False, gamma_regularizer="l2"
    )
    restored = test_case.serialization_round_trip(layer)
    assert type(restored) is layers.GhostBatchNormalization
    assert restored.get_config() == layer.get_config()
    assert isinstance(restored, keras.layers.BatchNormalization)


def test_float16_inputs_under_mixed_precision_are_finite():
    layer = layers.GhostBatchNormalization(4, dtype="mixed_float16")
    # Squares of these values overflow float16: statistics must be float32.
    x = np.random.default_rng(13).normal(1000.0, 300.0, size=(8, 3)).astype("float16")
    outputs = layer(x, training=True)
    assert outputs.dtype == tf.float16
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(layer.moving_variance)))
    assert layer.moving_variance.dtype == "float32"


def test_rejects_bad_arguments():
    for value in (0, -2, 2.5, True, None):
        with pytest.raises(ValueError, match="virtual_batch_size"):
            layers.GhostBatchNormalization(value)
    with pytest.raises(ValueError, match="`axis`"):
        layers.GhostBatchNormalization(4, axis=[1, 2])
    with pytest.raises(ValueError, match="`axis`.*batch axis"):
        layers.GhostBatchNormalization(4, axis=0).build((None, 3))
    with pytest.raises(ValueError, match="`axis`.*out of range"):
        layers.GhostBatchNormalization(4, axis=2).build((None, 3))
    with pytest.raises(ValueError, match="momentum"):
        layers.GhostBatchNormalization(4, momentum=1.5)
    with pytest.raises(ValueError, match="synchronized"):
        layers.GhostBatchNormalization(4, synchronized=True)
