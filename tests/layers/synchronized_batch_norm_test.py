"""Synchronised BatchNorm acceptance: 4 replicas x 8 samples (and 2 worker
processes x 16) give the outputs, gradients and moving statistics of one
device with 32 samples; per-replica BatchNorm does not."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case
from tests.layers import sync_bn_worker as worker

NUM_REPLICAS = 4
WORKER = os.path.join(os.path.dirname(__file__), "sync_bn_worker.py")
SYNCHRONIZED_LAYERS = [keras.layers.BatchNormalization, layers.BatchNormalization]


def numpy_batch_norm(x, gamma, beta):
    """Float64 BN of `x` with its own (biased) statistics over N, H, W."""
    x = x.astype("float64")
    mean, variance = x.mean((0, 1, 2)), x.var((0, 1, 2))
    return gamma * (x - mean) / np.sqrt(variance + worker.EPSILON) + beta, mean, variance


def one_device():
    """The reference: Keras' layer on the 32-sample global batch, one device."""
    x, w = (tf.constant(a) for a in worker.global_batch())
    layer = worker.make_layer(keras.layers.BatchNormalization, synchronized=False)
    y, x_gradient, gamma_gradient, beta_gradient = worker.training_call(layer, x, w)
    return {
        "outputs": y.numpy(),
        "input_gradient": x_gradient.numpy(),
        "gamma_gradient": gamma_gradient.numpy(),
        "beta_gradient": beta_gradient.numpy(),
        "moving_mean": layer.moving_mean.numpy(),
        "moving_variance": layer.moving_variance.numpy(),
    }


def expected_moving_statistics(mean, variance):
    _, _, old_mean, old_variance = worker.initial_weights()
    momentum = worker.MOMENTUM
    return (
        momentum * old_mean + (1 - momentum) * mean,
        momentum * old_variance + (1 - momentum) * variance,
    )


def run_replicas(layer_class, synchronized):
    """One training call on 4 replicas x 8 samples."""
    strategy = test_case.strategy(NUM_REPLICAS)
    with strategy.scope():
        layer = worker.make_layer(layer_class, synchronized)
    x, w = (test_case.split_per_replica(strategy, a) for a in worker.global_batch())
    step = tf.function(
        lambda x, w: strategy.run(lambda x, w: worker.training_call(layer, x, w), args=(x, w))
    )
    y, x_gradient, gamma_gradient, beta_gradient = step(x, w)

    def local(value):
        return [v.numpy() for v in strategy.experimental_local_results(value)]

    return {
        "outputs": np.concatenate(local(y)),
        "input_gradient": np.concatenate(local(x_gradient)),
        "gamma_gradient": np.sum(local(gamma_gradient), axis=0),
        "beta_gradient": np.sum(local(beta_gradient), axis=0),
        "moving_mean": local(layer.moving_mean.value),
        "moving_variance": local(layer.moving_variance.value),
    }


def assert_matches_one_device(result, reference, copies):
    """Outputs, gradients and every copy of the moving statistics."""
    # Keras' synchronised variance is the one-pass E[x²] - μ² in float32,
    # whose error grows like (μ/σ)²·eps. With inputs of mean 3 and std 2
    # the largest error is ~1e-6·max|ref| and the default tolerance (rtol
    # 1e-5, atol 1e-6·max|ref|) holds; at mean 30 it is ~5e-5, at mean 100
    # ~1.5e-4 (measured with this test's shapes).
    for key in ("outputs", "input_gradient", "gamma_gradient", "beta_gradient"):
        test_case.assert_all_close(result[key], reference[key], msg=key)
    for key in ("moving_mean", "moving_variance"):
        assert len(result[key]) == copies
        for copy in result[key]:
            test_case.assert_all_close(copy, reference[key], msg=key)


def test_one_device_reference_matches_numpy():
    x, _ = worker.global_batch()
    gamma, beta, _, _ = worker.initial_weights()
    reference = one_device()
    outputs, mean, variance = numpy_batch_norm(x, gamma, beta)
    test_case.assert_all_close(reference["outputs"], outputs, rtol=1e-5)
    moving_mean, moving_variance = expected_moving_statistics(mean, variance)
    test_case.assert_all_close(reference["moving_mean"], moving_mean)
    test_case.assert_all_close(reference["moving_variance"], moving_variance)


@pytest.mark.parametrize("layer_class", SYNCHRONIZED_LAYERS, ids=["keras", "keras_contrast"])
def test_four_replicas_equal_one_device(layer_class):
    result = run_replicas(layer_class, synchronized=True)
    assert_matches_one_device(result, one_device(), copies=NUM_REPLICAS)


def test_per_replica_batch_norm_does_not_equal_one_device():
    result = run_replicas(keras.layers.BatchNormalization, synchronized=False)
    reference = one_device()
    x, _ = worker.global_batch()
    gamma, beta, _, _ = worker.initial_weights()
    blocks = np.split(x, NUM_REPLICAS)
    # Each replica normalises its 8 samples with their own statistics...
    per_replica = np.concatenate([numpy_batch_norm(b, gamma, beta)[0] for b in blocks])
    test_case.assert_all_close(result["outputs"], per_replica, rtol=1e-5)
    # ...which moves the outputs far from the global batch's normalisation.
    difference = np.max(np.abs(result["outputs"] - reference["outputs"]))
    assert difference > 0.05 * np.max(np.abs(reference["outputs"])), difference
    for r, block in enumerate(blocks):
        _, mean, _ = numpy_batch_norm(block, gamma, beta)
        test_case.assert_all_close(
            result["moving_mean"][r], expected_moving_statistics(mean, 0)[0]
        )


def test_two_workers_equal_one_device(tmp_path):
    results = test_case.run_local_workers(WORKER, tmp_path, timeout=180)
    reference = one_device()

    def combined(name):
        return {
            "outputs": np.concatenate([r[name]["outputs"] for r in results]),
            "input_gradient": np.concatenate([r[name]["input_gradient"] for r in results]),
            "gamma_gradient": results[0][name]["gamma_gradient"],
            "beta_gradient": results[0][name]["beta_gradient"],
            "moving_mean": [r[name]["moving_mean"] for r in results],
            "moving_variance": [r[name]["moving_variance"] for r in results],
        }

    for name in ("keras_sync", "keras_contrast_sync"):
        # Reduced across workers: both hold the same sums.
        for r in results:
            for key in ("gamma_gradient", "beta_gradient"):
                np.testing.assert_array_equal(r[name][key], results[0][name][key])
        assert_matches_one_device(combined(name), reference, copies=2)

    x, _ = worker.global_batch()
    gamma, beta, _, _ = worker.initial_weights()
    blocks = [numpy_batch_norm(b, gamma, beta) for b in np.split(x, 2)]
    per_replica = combined("keras_per_replica")
    test_case.assert_all_close(
        per_replica["outputs"], np.concatenate([b[0] for b in blocks]), rtol=1e-5
    )
    assert np.max(np.abs(per_replica["outputs"] - reference["outputs"])) > 0.05
    # Keras' per-replica BN: each worker reads (and would save) its own.
    for r, (_, mean, _) in enumerate(blocks):
        test_case.assert_all_close(
            per_replica["moving_mean"][r], expected_moving_statistics(mean, 0)[0]
        )
    # ReplicaMeanStatistics: both workers read the mean over workers.
    mean, variance = expected_moving_statistics(
        np.mean([b[1] for b in blocks], axis=0), np.mean([b[2] for b in blocks], axis=0)
    )
    for r in results:
        test_case.assert_all_close(r["replica_mean_per_replica"]["moving_mean"], mean)
        test_case.assert_all_close(r["replica_mean_per_replica"]["moving_variance"], variance)
