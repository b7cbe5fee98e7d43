"""Smoke test of examples/precise_bn.py (full run: `make experiments`), and
its exact population statistics against NumPy."""

import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tests import test_case
from tests.examples.experiment_runner import run_quick

KINDS = ("EMA, momentum 0.99", "EMA, momentum 0.999", "Precise BN", "exact population")


def test_quick_run_records_every_kind_of_statistics(tmp_path):
    record, table = run_quick("precise_bn", tmp_path)
    eval_steps, exact_steps = record["eval_steps"], record["exact_steps"]
    assert set(exact_steps) <= set(eval_steps) and exact_steps[-1] == eval_steps[-1]
    (run,) = record["runs"]["supervised"]
    for kind in KINDS:
        steps = [step for step, _ in run["curves"][kind]]
        assert steps == (exact_steps if kind == KINDS[3] else eval_steps)
        assert all(0.0 <= value <= 1.0 for _, value in run["curves"][kind])
        assert run["eval_seconds"][kind] > 0
    assert run["train_seconds"] > 0
    (simclr,) = record["runs"]["simclr"]
    assert set(simclr["probe"]) == set(KINDS) and simclr["train_seconds"] > 0
    assert table.count("\n| ") == 1 + 2 * len(KINDS)
    assert "Expected (docs/design.md §4" in table
    assert table.index("Expected") < table.index("Observed")


def _precise_bn_module():
    examples = os.path.join(test_case.ROOT, "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    import precise_bn

    return precise_bn


def test_exact_population_equals_numpy_statistics_layer_by_layer():
    precise_bn = _precise_bn_module()
    keras.utils.set_random_seed(3)
    config = dict(image_size=8, width=2)
    encoder = precise_bn.backbone(config)
    rng = np.random.default_rng(0)
    layers = precise_bn.bn_layers(encoder)
    assert len(layers) == 20
    for layer in layers:  # statistics far from any batch's, so a wrong pass shows
        channels = layer.moving_mean.shape
        layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
        layer.beta.assign(rng.normal(0.0, 0.5, channels).astype("float32"))
        layer.moving_mean.assign(rng.normal(3.0, 1.0, channels).astype("float32"))
        layer.moving_variance.assign(rng.uniform(5.0, 9.0, channels).astype("float32"))
    images = rng.uniform(0.0, 1.0, (300, 8, 8, 1)).astype("float32")
    # Several batches, the last one smaller.
    precise_bn.exact_population(precise_bn.segments(encoder), images, batch=128)
    # Each layer's input, in inference mode with every earlier layer's new
    # statistics (a layer's input does not depend on it or later layers).
    for layer in layers:
        inputs = keras.Model(encoder.input, layer.input)(images, training=False)
        inputs = np.asarray(inputs, np.float64)
        mean = inputs.mean(axis=(0, 1, 2))
        variance = inputs.var(axis=(0, 1, 2))
        np.testing.assert_allclose(np.asarray(layer.moving_mean), mean, rtol=1e-4, atol=1e-5,
                                   err_msg=layer.name)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), variance, rtol=1e-4,
                                   atol=1e-6, err_msg=layer.name)


def test_ema_tracker_equals_a_momentum_update():
    precise_bn = _precise_bn_module()
    layer = keras.layers.BatchNormalization(momentum=0.0)
    layer.build((None, 3))
    tracker = precise_bn.EMATracker([layer])
    rng = np.random.default_rng(1)
    means, variances = [], []
    for _ in range(5):
        x = rng.normal(rng.normal(size=3), 2.0, (16, 3)).astype("float32")
        layer(tf.constant(x), training=True)
        tracker.update()
        means.append(x.mean(axis=0))
        variances.append(x.var(axis=0))
    for m in (0.99, 0.999):
        mean, variance = np.zeros(3), np.ones(3)
        for batch_mean, batch_variance in zip(means, variances):
            mean = m * mean + (1 - m) * batch_mean
            variance = m * variance + (1 - m) * batch_variance
        ema_mean, ema_variance = tracker.ema[m][0]
        np.testing.assert_allclose(ema_mean, mean, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ema_variance, variance, rtol=1e-5)
