"""keras_contrast.layers.SplitBatchNormalization: statistics per domain."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case


def numpy_batch_norm(x, gamma, beta, epsilon, axis=-1):
    """Training-mode BN of `x` alone, float64: output, mean, variance."""
    x = x.astype("float64")
    axis %= x.ndim
    reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = x.mean(reduce_axes, keepdims=True)
    variance = x.var(reduce_axes, keepdims=True)
    outputs = np.reshape(gamma, shape) * (x - mean) / np.sqrt(variance + epsilon)
    return outputs + np.reshape(beta, shape), mean.reshape(-1), variance.reshape(-1)


def to_numpy(value):
    return keras.ops.convert_to_numpy(value).astype("float64")


def domain_statistics(layer):
    return [
        (to_numpy(d.moving_mean).copy(), to_numpy(d.moving_variance).copy())
        for d in layer.domain_layers
    ]


@pytest.mark.parametrize("separate_affine", [False, True])
def test_each_domain_trains_like_a_plain_batch_norm_on_its_samples(separate_affine):
    """Three steps; domain 2 is absent from the second batch. Outputs and
    moving statistics equal a NumPy BN run on each domain's samples alone."""
    momentum, shape = 0.6, (None, 3, 2)
    layer = layers.SplitBatchNormalization(3, momentum=momentum, separate_affine=separate_affine)
    layer.build(shape)
    rng = np.random.default_rng(0)
    if separate_affine:
        affine = [(rng.uniform(0.5, 1.5, 2), rng.normal(size=2)) for _ in range(3)]
        for domain, (gamma, beta) in zip(layer.domain_layers, affine):
            domain.gamma.assign(gamma)
            domain.beta.assign(beta)
    else:
        layer.gamma.assign(rng.uniform(0.5, 1.5, 2))
        layer.beta.assign(rng.normal(size=2))
        affine = [(to_numpy(layer.gamma), to_numpy(layer.beta))] * 3
    expected_statistics = [(np.zeros(2), np.ones(2)) for _ in range(3)]
    batches = [
        np.array([0, 1, 2, 0, 1, 2, 0, 0]),
        np.array([1, 0, 0, 1, 1, 0]),  # no domain 2
        np.array([2, 2, 1, 0, 2]),
    ]
    for step, ids in enumerate(batches):
        x = rng.normal(loc=ids[:, None, None] * 3.0, scale=1.0 + ids[:, None, None],
                       size=(len(ids), 3, 2)).astype("float32")
        outputs = to_numpy(layer(x, training=True, domain=tf.constant(ids, tf.int32)))
        for domain in range(3):
            rows = ids == domain
            if not rows.any():
                continue
            expected, mean, variance = numpy_batch_norm(x[rows], *affine[domain], layer.epsilon)
            test_case.assert_all_close(outputs[rows], expected, rtol=1e-4, atol_scale=1e-5,
                                       msg=f"step {step}, domain {domain}")
            old_mean, old_variance = expected_statistics[domain]
            expected_statistics[domain] = (
                momentum * old_mean + (1 - momentum) * mean,
                momentum * old_variance + (1 - momentum) * variance,
            )
        for domain, (mean, variance) in enumerate(domain_statistics(layer)):
            test_case.assert_all_close(mean, expected_statistics[domain][0], rtol=1e-5)
            test_case.assert_all_close(variance, expected_statistics[domain][1], rtol=1e-5)


def test_empty_domain_keeps_its_statistics_and_nothing_is_nan():
    layer = layers.SplitBatchNormalization(2, momentum=0.0)
    layer.build((None, 4))
    layer.domain_layers[1].moving_mean.assign([1.0, 2.0, 3.0, 4.0])
    before = domain_statistics(layer)[1]
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    step = tf.function(lambda x, ids: layer(x, training=True, domain=ids))
    outputs = step(x, tf.zeros(5, tf.int32))
    assert np.all(np.isfinite(to_numpy(outputs)))
    np.testing.assert_array_equal(domain_statistics(layer)[1][0], before[0])
    np.testing.assert_array_equal(domain_statistics(layer)[1][1], before[1])
    test_case.assert_all_close(layer.domain_layers[0].moving_mean, x.astype("float64").mean(0))


def test_inference_uses_each_samples_domain_statistics():
    layer = layers.SplitBatchNormalization(3, separate_affine=True)
    layer.build((None, 2))
    rng = np.random.default_rng(2)
    weights = []
    for domain in layer.domain_layers:
        values = [rng.uniform(0.5, 1.5, 2), rng.normal(size=2), rng.normal(size=2),
                  rng.uniform(0.5, 2.0, 2)]
        for variable, value in zip(
            (domain.gamma, domain.beta, domain.moving_mean, domain.moving_variance), values
        ):
            variable.assign(value)
        weights.append(values)
    ids = np.array([2, 0, 1, 1, 2])
    x = rng.normal(size=(5, 2)).astype("float32")
    expected = np.stack([
        g * (row - m) / np.sqrt(v + layer.epsilon) + b
        for row, (g, b, m, v) in zip(x.astype("float64"), (weights[i] for i in ids))
    ])
    test_case.assert_all_close(layer(x, training=False, domain=ids), expected)
    before = domain_statistics(layer)
    layer(x, domain=ids)  # training=None: inference, no update
    for (m0, v0), (m1, v1) in zip(before, domain_statistics(layer)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)


def test_scalar_domain_equals_a_vector_of_that_id():
    x = np.random.default_rng(3).normal(2.0, 1.0, size=(4, 3)).astype("float32")
    results = []
    for domain in (1, tf.constant(1), np.int64(1), tf.ones(4, tf.int64), np.ones((4, 1), "int32")):
        layer = layers.SplitBatchNormalization(2, momentum=0.5)
        outputs = layer(x, training=True, domain=domain)
        results.append((to_numpy(outputs), domain_statistics(layer)))
    for outputs, statistics in results:
        test_case.assert_all_close(outputs, results[0][0])
        test_case.assert_all_close(statistics[1][0], 0.5 * x.astype("float64").mean(0))
        np.testing.assert_array_equal(statistics[0][0], 0.0)


def test_domain_scope_supplies_ids_and_none_without_it_raises():
    layer = layers.SplitBatchNormalization(2)
    x = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match="needs `domain`"):
        layer(x, training=True)
    with layers.domain_scope(tf.constant([1, 1, 1])):
        layer(x, training=True)
    np.testing.assert_array_equal(domain_statistics(layer)[0][0], 0.0)
    assert np.all(domain_statistics(layer)[1][0] > 0.0)


def test_out_of_range_or_malformed_ids_fail_loudly():
    layer = layers.SplitBatchNormalization(3)
    x = np.ones((2, 2), "float32")
    with pytest.raises(ValueError, match="`domain` = 3 is out of range"):
        layer(x, training=True, domain=3)
    # Ids known when traced (eager, constants) are checked statically: the
    # check then holds under XLA too, which drops the run-time assertions.
    with pytest.raises(ValueError, match=r"in \[0, num_domains=3\), got 3"):
        layer(x, training=True, domain=tf.constant([0, 3]))
    xla = tf.function(lambda x: layer(x, training=True, domain=tf.constant([-1, 0])),
                      jit_compile=True)
    with pytest.raises(ValueError, match=r"got -1"):
        xla(x)
    with pytest.raises(ValueError, match="one id per sample"):
        layer(x, training=True, domain=tf.constant([0, 1, 2]))
    step = tf.function(
        lambda x, ids: layer(x, training=True, domain=ids),
        input_signature=[tf.TensorSpec((None, 2)), tf.TensorSpec((None,), tf.int32)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        step(x, tf.constant([-1, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one id per sample"):
        step(x, tf.constant([0, 1, 2]))
    with pytest.raises(ValueError, match="integer ids"):
        layer(x, training=True, domain=tf.constant([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        layer(x, training=True, domain=tf.zeros((2, 2), tf.int32))


def test_out_of_range_ids_give_nan_under_xla_where_assertions_are_dropped():
    layer = layers.SplitBatchNormalization(2, momentum=0.0)
    x = np.random.default_rng(8).normal(size=(4, 3)).astype("float32")
    step = tf.function(lambda x, ids: layer(x, training=True, domain=ids), jit_compile=True)
    outputs = to_numpy(step(x, tf.constant([0, 1, 0, 7])))
    assert np.all(np.isnan(outputs[3]))
    assert np.all(np.isfinite(outputs[:3]))
    # The valid samples' statistics ignore the bad one.
    test_case.assert_all_close(
        layer.domain_layers[0].moving_mean, x[[0, 2]].astype("float64").mean(0)
    )


def test_frozen_statistics_leave_every_domain_unchanged():
    layer = layers.SplitBatchNormalization(2, momentum=0.5)
    layer.build((None, 3))
    before = domain_statistics(layer)
    x = np.random.default_rng(4).normal(3.0, 2.0, size=(6, 3)).astype("float32")
    ids = np.array([0, 1, 0, 1, 0, 1])
    with layers.frozen_statistics():
        outputs = to_numpy(layer(x, training=True, domain=ids))
    for (m0, v0), (m1, v1) in zip(before, domain_statistics(layer)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    expected, _, _ = numpy_batch_norm(x[ids == 1], 1.0, 0.0, layer.epsilon)
    test_case.assert_all_close(outputs[ids == 1], expected, rtol=1e-4, atol_scale=1e-5)


def test_two_replicas_use_their_local_domain_samples():
    strategy = test_case.strategy(2)
    with strategy.scope():
        layer = layers.SplitBatchNormalization(2, momentum=0.5, center=False, scale=False)
        layer.build((None, 3))
    x = np.random.default_rng(5).normal(1.0, 2.0, size=(8, 3)).astype("float32")
    ids = np.array([0, 1, 0, 0, 1, 1, 0, 1], "int32")
    step = tf.function(
        lambda x, ids: strategy.run(lambda x, d: layer(x, training=True, domain=d), args=(x, ids))
    )
    outputs = strategy.experimental_local_results(
        step(test_case.split_per_replica(strategy, x), test_case.split_per_replica(strategy, ids))
    )
    for replica in range(2):
        local_x, local_ids = x[replica * 4 : replica * 4 + 4], ids[replica * 4 : replica * 4 + 4]
        for domain in range(2):
            rows = local_ids == domain
            expected, _, _ = numpy_batch_norm(local_x[rows], 1.0, 0.0, layer.epsilon)
            test_case.assert_all_close(to_numpy(outputs[replica])[rows], expected, rtol=1e-4,
                                       atol_scale=1e-5)


def test_fit_and_keras_file_round_trip_in_a_functional_model():
    inputs, domain = keras.Input((5,)), keras.Input((), dtype="int32")
    split = layers.SplitBatchNormalization(2, momentum=0.5, separate_affine=True)
    outputs = keras.layers.Dense(2)(split(keras.layers.Dense(4)(inputs), domain=domain))
    model = keras.Model([inputs, domain], outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(6)
    x, ids = rng.normal(size=(16, 5)).astype("float32"), rng.integers(0, 2, 16).astype("int32")
    model.fit([x, ids], rng.normal(size=(16, 2)), batch_size=8, epochs=1, verbose=0)
    assert all(np.any(m != 0.0) for m, _ in domain_statistics(split))
    restored = test_case.keras_file_round_trip(model)
    restored_split = restored.layers[3]
    assert type(restored_split) is layers.SplitBatchNormalization
    assert len(restored_split.domain_layers) == 2
    for (m0, v0), (m1, v1) in zip(domain_statistics(split), domain_statistics(restored_split)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    test_case.assert_all_close(restored([x, ids], training=False), model([x, ids], training=False))


def test_config_round_trip():
    layer = layers.SplitBatchNormalization(
        4, axis=1, momentum=0.9, separate_affine=True, gamma_regularizer="l2", name="split"
    )
    restored = test_case.serialization_round_trip(layer)
    assert type(restored) is layers.SplitBatchNormalization
    assert restored.get_config() == layer.get_config()
    assert [d.name for d in restored.domain_layers] == [d.name for d in layer.domain_layers]
    assert all(isinstance(d, layers.BatchNormalization) for d in restored.domain_layers)


def test_float16_inputs_under_mixed_precision_are_finite():
    layer = layers.SplitBatchNormalization(2, dtype="mixed_float16")
    x = np.random.default_rng(7).normal(1000.0, 300.0, size=(6, 3)).astype("float16")
    outputs = layer(x, training=True, domain=np.array([0, 1, 0, 1, 0, 1]))
    assert outputs.dtype == tf.float16
    assert np.all(np.isfinite(to_numpy(outputs)))
    assert all(np.all(np.isfinite(v)) for _, v in domain_statistics(layer))


def test_rejects_bad_arguments():
    for value in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_domains"):
            layers.SplitBatchNormalization(value)
    with pytest.raises(ValueError, match="`axis`"):
        layers.SplitBatchNormalization(2, axis=0).build((None, 3))
    with pytest.raises(ValueError, match="separate_affine"):
        layers.SplitBatchNormalization(2, separate_affine="yes")
