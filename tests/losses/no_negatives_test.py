"""Anchors without negatives (issue 15, item 6): a DCL batch of one class.

DCL's denominator holds only negatives. With class ids, a global batch of
a single class leaves it empty (log 0 = -inf); the loss is defined as 0,
with a zero gradient, dense and tiled, on one device and on replicas. The
losses that keep the positives in their denominator (InfoNCE, CLIP) stay
at their SupCon value.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference


def embeddings(batch, seed=0, dim=4):
    return np.random.default_rng(seed).normal(size=(batch, 2, dim)).astype("float32")


def values_and_gradient(loss, y, labels):
    y = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y)
        values = loss.contrast(labels, y, loss.temperature)
        total = tf.reduce_sum(values * tf.range(1.0, 1.0 + values.shape[0]))
    return values.numpy(), tape.gradient(total, y).numpy()


@pytest.mark.parametrize("negatives", ["all", "cross"])
@pytest.mark.parametrize("tile_size", [None, 1, 3])
@pytest.mark.parametrize("batch", [2, 5])
def test_dcl_single_class_batch_is_zero_with_zero_gradient(negatives, tile_size, batch):
    y = embeddings(batch, seed=batch)
    labels = np.full(batch, 3)
    loss = losses.DCL(0.1, negatives=negatives, tile_size=tile_size)
    values, gradient = values_and_gradient(loss, y, labels)
    expected = reference.two_view(y, 0.1, negatives, "dcl", labels=labels)
    np.testing.assert_array_equal(expected, 0.0)  # the reference's definition
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(gradient, 0.0)
    assert loss(labels, y).numpy() == 0.0
    assert loss(labels, y, sample_weight=np.arange(batch, dtype="float32")).numpy() == 0.0


@pytest.mark.parametrize("negatives", ["all", "cross"])
def test_dcl_single_class_tiled_equals_dense(negatives):
    y = embeddings(6, seed=1)
    labels = np.zeros(6, "int32")
    dense = values_and_gradient(losses.DCL(0.2, negatives=negatives), y, labels)
    tiled = values_and_gradient(losses.DCL(0.2, negatives=negatives, tile_size=4), y, labels)
    for a, e in zip(tiled, dense):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("make", [losses.InfoNCE, losses.CLIPLoss])
@pytest.mark.parametrize("tile_size", [None, 3])
def test_losses_keeping_positives_stay_defined_on_one_class(make, tile_size):
    y = embeddings(4, seed=2)
    labels = np.ones(4, "int32")
    loss = make(0.1, tile_size=tile_size)
    values, gradient = values_and_gradient(loss, y, labels)
    if make is losses.CLIPLoss:
        expected = reference.clip(y, 0.1, labels=labels)
    else:
        expected = reference.two_view(y, 0.1, "all", "infonce", labels=labels)
    assert np.all(np.isfinite(gradient)) and np.max(np.abs(gradient)) > 0
    test_case.assert_all_close(values, expected)


def distributed(loss, y, labels, num_replicas):
    """Reduced loss summed over replicas and the assembled gradient."""
    strategy = test_case.strategy(num_replicas)
    if num_replicas == 1:
        y = tf.constant(y)
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = loss(labels, y)
        return value.numpy(), tape.gradient(value, y).numpy()

    @tf.function
    def step(local_y, local_labels):
        def replica_fn(local_y, local_labels):
            with tf.GradientTape() as tape:
                tape.watch(local_y)
                value = loss(local_labels, local_y)
            return value, tape.gradient(value, local_y)

        return strategy.run(replica_fn, args=(local_y, local_labels))

    values, gradients = step(test_case.split_per_replica(strategy, y),
                             test_case.split_per_replica(strategy, labels))
    gradient = np.concatenate([g.numpy() for g in strategy.experimental_local_results(gradients)])
    return strategy.reduce("SUM", values, axis=None).numpy(), gradient


@pytest.mark.parametrize("negatives,tile_size", [("all", None), ("cross", 3)])
def test_two_replicas_equal_one_device(negatives, tile_size):
    y = embeddings(8, seed=3)
    loss = losses.DCL(0.1, negatives=negatives, tile_size=tile_size)
    # One class in the global batch: no negatives anywhere.
    one_class = np.full(8, 2, "int32")
    value, gradient = distributed(loss, y, one_class, 2)
    assert value == 0.0
    np.testing.assert_array_equal(gradient, 0.0)
    # Each replica holds one class, the global batch two: every anchor has
    # negatives on the other replica, so the loss is the usual one.
    split_classes = np.array([0, 0, 0, 0, 1, 1, 1, 1], "int32")
    expected_value, expected_gradient = distributed(loss, y, split_classes, 1)
    value, gradient = distributed(loss, y, split_classes, 2)
    test_case.assert_all_close(
        expected_value, np.mean(reference.two_view(y, 0.1, negatives, "dcl", labels=split_classes)))
    test_case.assert_all_close(value, expected_value)
    test_case.assert_all_close(gradient, expected_gradient)
    assert np.max(np.abs(gradient)) > 0


def test_fit_on_a_single_class_batch_keeps_a_finite_loss():
    inputs = keras.Input((2, 6))
    model = keras.Model(inputs, keras.layers.Dense(
        4, kernel_initializer=keras.initializers.GlorotUniform(0))(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.DCL(0.2))
    x = np.random.default_rng(4).normal(size=(4, 2, 6)).astype("float32")
    before = model.get_weights()
    history = model.fit(x, np.zeros(4, "int32"), batch_size=4, epochs=1, verbose=0)
    assert history.history["loss"] == [0.0]
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, np.array([0, 0, 1, 1]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] != 0.0


@pytest.mark.parametrize("make", [losses.DCL, losses.DCLW])
def test_dynamic_global_batch_of_one_under_xla_is_zero(make):
    # XLA drops the run-time "fewer than 2 samples" assert; the value must
    # still be finite (DCL's empty denominator would give -inf).
    loss = make(0.1)

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec((None, 2, 4), tf.float32)])
    def value_and_gradient(y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = loss(None, y)
        return value, tape.gradient(value, y)

    value, gradient = value_and_gradient(tf.constant(embeddings(1)))
    assert value.numpy() == 0.0
    np.testing.assert_array_equal(gradient.numpy(), 0.0)
