"""InfoNCE / NT-Xent specifics: analytic cases and supervised positives."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference
from tests.losses.contrastive_loss_test import distributed_loss_and_gradient


def aligned_orthogonal(batch, dim=None):
    """Both views of sample i equal the basis vector e_i."""
    eye = np.eye(dim or batch, dtype="float32")[:batch]
    return np.stack([eye, eye], axis=1)


@pytest.mark.parametrize("batch", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_aligned_orthogonal_embeddings_give_analytic_value(batch, temperature):
    y = aligned_orthogonal(batch)
    # Positive logit 1/τ; self excluded; 2N-2 negatives at logit 0.
    expected_all = -1 / temperature + np.log(np.exp(1 / temperature) + 2 * batch - 2)
    expected_cross = -1 / temperature + np.log(np.exp(1 / temperature) + batch - 1)
    test_case.assert_all_close(
        losses.info_nce(None, y, temperature, negatives="all"),
        np.full(batch, expected_all),
    )
    test_case.assert_all_close(
        losses.info_nce(None, y, temperature, negatives="cross"),
        np.full(batch, expected_cross),
    )


def test_ntxent_is_infonce_with_all_negatives():
    y = np.random.default_rng(0).normal(size=(6, 2, 4)).astype("float32")
    assert losses.NTXent().negatives == "all"
    test_case.assert_all_close(losses.NTXent(0.2)(None, y), losses.InfoNCE(0.2)(None, y))


@pytest.mark.parametrize("negatives", ["all", "cross"])
def test_supervised_positives_match_reference(negatives):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(10, 2, 5)).astype("float32")
    labels = rng.integers(0, 3, size=10)
    values = losses.info_nce(labels, y, 0.1, negatives=negatives)
    expected = reference.two_view(y, 0.1, negatives, "infonce", labels=labels)
    test_case.assert_all_close(values, expected)


def test_unique_labels_equal_self_supervised_loss():
    y = np.random.default_rng(2).normal(size=(7, 2, 5)).astype("float32")
    test_case.assert_all_close(
        losses.info_nce(np.arange(7), y), losses.info_nce(None, y)
    )


def test_supervised_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(5, 2, 3)).astype("float32")
    labels = np.array([0, 1, 0, 2, 1])
    y_tensor = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y_tensor)
        total = tf.reduce_sum(losses.info_nce(labels, y_tensor, 0.2))
    expected = reference.numeric_gradient(
        lambda v: reference.two_view(v, 0.2, "all", "infonce", labels=labels), y
    )
    test_case.assert_all_close(
        tape.gradient(total, y_tensor), expected, rtol=1e-4, atol_scale=1e-5
    )


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_supervised_replicas_equal_one_device(num_replicas):
    rng = np.random.default_rng(4)
    y = rng.normal(size=(16, 2, 6)).astype("float32")
    labels = rng.integers(0, 4, size=16).astype("int32")
    loss = losses.InfoNCE(0.1)
    strategy = test_case.strategy(num_replicas)
    distributed_y = test_case.split_per_replica(strategy, y)
    distributed_labels = test_case.split_per_replica(strategy, labels)

    @tf.function
    def step(local_y, local_labels):
        def replica_fn(local_y, local_labels):
            with tf.GradientTape() as tape:
                tape.watch(local_y)
                value = loss(local_labels, local_y)
            return value, tape.gradient(value, local_y)

        return strategy.run(replica_fn, args=(local_y, local_labels))

    values, gradients = step(distributed_y, distributed_labels)
    y_tensor = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y_tensor)
        expected_value = loss(labels, y_tensor)
    test_case.assert_all_close(strategy.reduce("SUM", values, axis=None), expected_value)
    test_case.assert_all_close(
        np.concatenate([g.numpy() for g in strategy.experimental_local_results(gradients)]),
        tape.gradient(expected_value, y_tensor),
    )


def test_rejects_labels_of_wrong_shape():
    y = np.zeros((4, 2, 3), "float32") + 1.0
    with pytest.raises(ValueError, match="y_true"):
        losses.InfoNCE()(np.zeros((4, 2)), y)
    with pytest.raises(ValueError, match="y_true"):
        losses.InfoNCE()(np.zeros((5,)), y)


def test_gather_false_scores_each_replica_alone():
    y = np.random.default_rng(6).normal(size=(8, 2, 4)).astype("float32")
    loss = losses.InfoNCE(0.1, gather=False)
    value, _ = distributed_loss_and_gradient(loss, y, 2)
    per_replica = [reference.two_view(part, 0.1) for part in (y[:4], y[4:])]
    test_case.assert_all_close(value, np.mean(np.concatenate(per_replica)))
