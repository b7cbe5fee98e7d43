"""DCL / DCLW specifics: analytic values, decoupling, the vMF weight."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.losses.global_batch import GlobalBatch
from keras_contrast.losses.dcl import von_mises_fisher_weight
from tests import test_case
from tests.losses import reference
from tests.losses.info_nce_test import aligned_orthogonal


@pytest.mark.parametrize("batch", [2, 5])
def test_aligned_orthogonal_embeddings_give_analytic_value(batch):
    y = aligned_orthogonal(batch)
    tau = 0.1
    # Positive logit 1/τ leaves the denominator; 2N-2 (or N-1) logits of 0.
    test_case.assert_all_close(
        losses.dcl(None, y, tau), np.full(batch, -1 / tau + np.log(2 * batch - 2))
    )
    if batch > 2:
        test_case.assert_all_close(
            losses.dcl(None, y, tau, negatives="cross"),
            np.full(batch, -1 / tau + np.log(batch - 1)),
        )
    # Equal positive similarities make every DCLW weight 1: DCLW == DCL.
    test_case.assert_all_close(losses.dclw(None, y, tau), losses.dcl(None, y, tau))


def private_pair_embeddings(angle):
    """Sample 0's views share a private 2-d plane at `angle` to each other;
    all other inner products do not depend on `angle`."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(4, 2, 4))
    private = np.zeros((4, 2, 2))
    private[0, 0] = [1.0, 0.0]
    private[0, 1] = [np.cos(angle), np.sin(angle)]
    return np.concatenate([shared, private], axis=-1).astype("float32")


def test_dcl_denominator_ignores_the_positive_similarity():
    tau = 0.5
    dcl_plus_positive, infonce_plus_positive, other_samples = [], [], []
    for angle in (0.0, 1.0, 2.5):
        y = private_pair_embeddings(angle)
        positive = float(np.sum(y[:, 0] * y[:, 1], axis=-1)[0]) / tau
        dcl_values = losses.dcl(None, y, tau, normalize=False).numpy()
        infonce_values = losses.info_nce(None, y, tau, normalize=False).numpy()
        dcl_plus_positive.append(dcl_values[0] + positive)
        infonce_plus_positive.append(infonce_values[0] + positive)
        other_samples.append(dcl_values[1:])
    # Other samples' DCL losses do not see sample 0's positive either.
    for values in other_samples[1:]:
        test_case.assert_all_close(values, other_samples[0])
    test_case.assert_all_close(dcl_plus_positive, [dcl_plus_positive[0]] * 3)
    assert np.ptp(infonce_plus_positive) > 1e-2  # InfoNCE's coupling shows


def vmf_weights(y, sigma=0.5):
    z = tf.math.l2_normalize(tf.convert_to_tensor(y), axis=-1)
    batch = GlobalBatch(z, None, gather=True, loss_name="test")
    return von_mises_fisher_weight(sigma)(batch)


def test_dclw_weights_average_one_and_match_formula():
    y = np.random.default_rng(1).normal(size=(9, 2, 5)).astype("float32")
    weights = vmf_weights(y, sigma=0.5).numpy()
    z = reference.normalize(y.astype("float64"))
    s = np.sum(z[:, 0] * z[:, 1], axis=-1) / 0.5
    test_case.assert_all_close(weights, 2 - np.exp(s) / np.mean(np.exp(s)))
    assert abs(weights.mean() - 1.0) < 1e-6


def test_dclw_weights_use_the_global_batch_under_four_replicas():
    y = np.random.default_rng(2).normal(size=(32, 2, 5)).astype("float32")
    strategy = test_case.strategy(4)
    per_replica = strategy.run(
        tf.function(vmf_weights), args=(test_case.split_per_replica(strategy, y),)
    )
    gathered = np.concatenate(
        [w.numpy() for w in strategy.experimental_local_results(per_replica)]
    )
    test_case.assert_all_close(gathered, vmf_weights(y))


def test_weight_stop_gradient_changes_only_the_gradient():
    y = tf.constant(np.random.default_rng(3).normal(size=(6, 2, 4)).astype("float32"))
    results = {}
    for stop in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = tf.reduce_sum(losses.dclw(None, y, weight_stop_gradient=stop))
        results[stop] = (value.numpy(), tape.gradient(value, y).numpy())
    test_case.assert_all_close(results[True][0], results[False][0])
    assert np.max(np.abs(results[True][1] - results[False][1])) > 1e-4


def test_stop_gradient_weight_matches_finite_differences_with_frozen_weight():
    y = np.random.default_rng(4).normal(size=(4, 2, 3)).astype("float32")
    frozen = reference.normalize(y.astype("float64"))
    s = np.sum(frozen[:, 0] * frozen[:, 1], axis=-1) / 0.5
    frozen_w = 2 - np.exp(s) / np.mean(np.exp(s))

    def with_frozen_weight(v):
        z = reference.normalize(v)
        n = len(z)
        total = np.zeros(n)
        for i in range(n):
            for a in (0, 1):
                logits = np.array([[z[i, a] @ z[j, u] for j in range(n)] for u in (0, 1)]) / 0.1
                mask = np.ones_like(logits, dtype=bool)
                mask[a, i] = mask[1 - a, i] = False
                total[i] += 0.5 * (reference.logsumexp(logits[mask]) - frozen_w[i] * logits[1 - a, i])
        return total

    y_tensor = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y_tensor)
        value = tf.reduce_sum(losses.dclw(None, y_tensor, weight_stop_gradient=True))
    test_case.assert_all_close(
        tape.gradient(value, y_tensor),
        reference.numeric_gradient(with_frozen_weight, y),
        rtol=1e-4,
        atol_scale=1e-5,
    )


def test_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        losses.DCLW(sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        losses.dclw(None, np.ones((4, 2, 3), "float32"), sigma=-1.0)


def test_supervised_dcl_matches_reference():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(8, 2, 4)).astype("float32")
    labels = rng.integers(0, 3, size=8)
    test_case.assert_all_close(
        losses.dcl(labels, y, 0.2),
        reference.two_view(y, 0.2, "all", "dcl", labels=labels),
    )
