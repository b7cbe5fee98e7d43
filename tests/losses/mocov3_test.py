"""MoCoV3Loss specifics: the 2τ scale, stop-gradient keys, the symmetric sum."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case


def test_aligned_orthogonal_value():
    batch, tau = 4, 0.2
    eye = np.eye(batch, dtype="float32")
    y = np.stack([eye, eye, eye, eye], axis=1)
    per_term = -1 / tau + np.log(np.exp(1 / tau) + batch - 1)
    test_case.assert_all_close(
        losses.mocov3_loss(None, y, tau), np.full(batch, 2 * 2 * tau * per_term)
    )


def test_is_sum_of_two_scaled_cross_entropies():
    y = np.random.default_rng(0).normal(size=(6, 4, 5)).astype("float32")
    z = tf.math.l2_normalize(y, axis=-1)
    labels = tf.range(6)

    def ctr(q, k):
        logits = tf.matmul(q, k, transpose_b=True) / 0.2
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits) * 0.4

    expected = ctr(z[:, 0], z[:, 3]) + ctr(z[:, 1], z[:, 2])
    test_case.assert_all_close(losses.mocov3_loss(None, y), expected)


def test_keys_receive_no_gradient_even_across_replicas():
    y = np.random.default_rng(1).normal(size=(8, 4, 3)).astype("float32")
    strategy = test_case.strategy(4)

    @tf.function
    def step(local_y):
        def replica_fn(local_y):
            with tf.GradientTape() as tape:
                tape.watch(local_y)
                value = losses.MoCoV3Loss()(None, local_y)
            return tape.gradient(value, local_y)

        return strategy.run(replica_fn, args=(local_y,))

    gradients = step(test_case.split_per_replica(strategy, y))
    gradient = np.concatenate(
        [g.numpy() for g in strategy.experimental_local_results(gradients)]
    )
    np.testing.assert_array_equal(gradient[:, 2:], 0.0)
    assert np.max(np.abs(gradient[:, :2])) > 1e-3


def test_rejects_two_views():
    with pytest.raises(ValueError, match="4 views"):
        losses.MoCoV3Loss()(None, np.ones((4, 2, 3), "float32"))
