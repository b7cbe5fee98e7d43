"""CLIPLoss specifics: symmetry, duplicate ids, a learnable temperature."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference


def test_equals_mean_of_two_cross_entropies():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 2, 4)).astype("float32")
    a = tf.math.l2_normalize(y[:, 0], axis=-1)
    b = tf.math.l2_normalize(y[:, 1], axis=-1)
    logits = tf.matmul(a, b, transpose_b=True) / 0.07
    labels = tf.range(6)
    expected = 0.5 * (
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        + tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.transpose(logits))
    )
    test_case.assert_all_close(losses.clip_loss(None, y), expected)


def test_swapping_towers_leaves_the_loss_unchanged():
    y = np.random.default_rng(1).normal(size=(5, 2, 3)).astype("float32")
    test_case.assert_all_close(
        losses.clip_loss(None, y[:, ::-1]), losses.clip_loss(None, y)
    )


def test_duplicate_ids_are_not_negatives():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(6, 2, 4)).astype("float32")
    ids = np.array([0, 1, 2, 1, 3, 0])
    test_case.assert_all_close(
        losses.clip_loss(ids, y), reference.clip(y, 0.07, labels=ids)
    )


def test_temperature_tensor_gets_exact_gradient():
    y = np.random.default_rng(3).normal(size=(5, 2, 3)).astype("float32")
    temperature = tf.Variable(0.2)
    with tf.GradientTape() as tape:
        value = losses.CLIPLoss()(None, y, temperature=temperature)
    step = 1e-6
    numeric = (
        np.mean(reference.clip(y, 0.2 + step)) - np.mean(reference.clip(y, 0.2 - step))
    ) / (2 * step)
    test_case.assert_all_close(value, np.mean(reference.clip(y, 0.2)))
    test_case.assert_all_close(tape.gradient(value, temperature), numeric, rtol=1e-4)


def test_rejects_wrong_view_count():
    with pytest.raises(ValueError, match="2 views"):
        losses.CLIPLoss()(None, np.ones((4, 3, 2), "float32"))
