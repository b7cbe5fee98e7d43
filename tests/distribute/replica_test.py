"""all_gather, replica ids and offsets under 1, 2 and 4 replicas."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import distribute
from tests import test_case


def test_identity_outside_a_strategy():
    x = tf.constant([[1.0, 2.0]])
    assert distribute.all_gather(x) is x
    assert distribute.num_replicas() == 1
    assert int(distribute.replica_id()) == 0
    assert int(distribute.local_batch_offset(7)) == 0


@pytest.mark.parametrize("num_replicas", [2, 4])
@pytest.mark.parametrize("uneven", [False, True])
def test_gather_concatenates_in_order_and_routes_gradients(num_replicas, uneven):
    sizes = [3, 1, 2, 4][:num_replicas] if uneven else [2] * num_replicas
    total = sum(sizes)
    x = np.arange(total * 2, dtype="float32").reshape(total, 2)
    strategy = test_case.strategy(num_replicas)
    # Each replica weighs the gathered rows with its own coefficient, so
    # the gradient of row k is Σ_r coefficient_r · k (all replicas' losses).
    coefficients = np.arange(1, num_replicas + 1, dtype="float32")

    @tf.function
    def step(local_x):
        def replica_fn(local_x):
            with tf.GradientTape() as tape:
                tape.watch(local_x)
                gathered = distribute.all_gather(local_x)
                row = tf.cast(tf.range(tf.shape(gathered)[0]), tf.float32)
                coefficient = tf.gather(coefficients, distribute.replica_id())
                loss = coefficient * tf.reduce_sum(gathered * row[:, None])
            offset = distribute.local_batch_offset(tf.shape(local_x)[0])
            return gathered, tape.gradient(loss, local_x), offset, distribute.replica_id()

        return strategy.run(replica_fn, args=(local_x,))

    gathered, gradients, offsets, ids = step(test_case.split_per_replica(strategy, x, sizes))
    for replica_gathered in strategy.experimental_local_results(gathered):
        np.testing.assert_array_equal(replica_gathered.numpy(), x)
    gradient = np.concatenate([g.numpy() for g in strategy.experimental_local_results(gradients)])
    expected = coefficients.sum() * np.repeat(np.arange(total, dtype="float32")[:, None], 2, 1)
    np.testing.assert_allclose(gradient, expected)
    np.testing.assert_array_equal(
        [int(o) for o in strategy.experimental_local_results(offsets)],
        np.cumsum([0] + sizes[:-1]),
    )
    np.testing.assert_array_equal(
        [int(i) for i in strategy.experimental_local_results(ids)], range(num_replicas)
    )


def test_num_replicas_inside_strategy():
    strategy = test_case.strategy(4)
    counts = strategy.run(lambda: tf.constant(distribute.num_replicas()))
    assert [int(c) for c in strategy.experimental_local_results(counts)] == [4] * 4
