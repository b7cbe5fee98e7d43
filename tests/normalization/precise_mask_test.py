"""Precise BN / Adaptive BN on masked models, any channel axis.

The reference is Keras' own BatchNormalization with momentum 0 called in
training mode on all the batches at once: its moving statistics are then
the masked population statistics.
"""

import keras
import numpy as np
import pytest

from keras_contrast import layers as kc_layers
from keras_contrast.normalization import adapt_batch_norm
from keras_contrast.normalization import precise_batch_norm
from tests.test_case import assert_all_close

BATCH_SIZES = (3, 7, 5)


def masked_batches(shape, seed=0):
    """Batches of `shape[1:]` samples in which some rows of the last axis
    are all 0, which `Masking(0.0)` masks out."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 1.5, size=(sum(BATCH_SIZES),) + shape).astype("float32")
    dropped = rng.uniform(size=x.shape[:-1]) < 0.35
    dropped[0] = False
    x[dropped] = 0.0
    bounds = np.cumsum((0,) + BATCH_SIZES)
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def masked_model(shape, norms):
    inputs = keras.Input(shape)
    h = keras.layers.Masking(0.0)(inputs)
    for norm in norms:
        h = norm(h)
    model = keras.Model(inputs, h)
    model(np.zeros((2,) + shape, "float32"))
    rng = np.random.default_rng(1)
    for norm in norms:
        channels = norm.moving_mean.shape[0]
        norm.moving_mean.assign(rng.normal(size=channels))
        norm.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
    return model


def keras_population(axis, x, mask):
    """Moving statistics of Keras' BN (momentum 0) trained on `x` at once."""
    reference = keras.layers.BatchNormalization(axis=axis, momentum=0.0)
    reference(x, training=True, mask=mask)
    return keras.ops.convert_to_numpy(reference.moving_mean), keras.ops.convert_to_numpy(
        reference.moving_variance
    )


def make_norm(kind, axis):
    if kind == "keras":
        return keras.layers.BatchNormalization(axis=axis)
    return kc_layers.GhostBatchNormalization(2, axis=axis)


@pytest.mark.parametrize("function", ["precise", "adapt"])
@pytest.mark.parametrize("kind", ["keras", "ghost"])
@pytest.mark.parametrize("shape,axis", [((3, 4), 1), ((3, 3, 2), 1), ((3, 4, 2), 2), ((3, 4), -1)])
def test_masked_population_statistics_equal_keras_batch_norm(function, kind, shape, axis):
    batches = masked_batches(shape)
    model = masked_model(shape, [make_norm(kind, axis)])
    if function == "precise":
        precise_batch_norm(model, batches, num_batches=len(batches))
    else:
        adapt_batch_norm(model, batches, num_batches=len(batches))
    x = np.concatenate(batches)
    expected = keras_population(axis, x, np.any(x != 0.0, axis=-1))
    norm = model.layers[-1]
    assert_all_close(norm.moving_mean, expected[0])
    assert_all_close(norm.moving_variance, expected[1])


def test_layer_by_layer_on_two_masked_layers_with_different_axes():
    shape = (3, 4, 2)
    batches = masked_batches(shape, seed=2)
    first, second = keras.layers.BatchNormalization(axis=1), keras.layers.BatchNormalization(axis=2)
    model = masked_model(shape, [first, second])
    gamma = np.random.default_rng(3).uniform(0.5, 1.5, 3).astype("float32")
    first.gamma.assign(gamma)
    precise_batch_norm(model, batches, num_batches=len(batches), order="layer_by_layer")
    x = np.concatenate(batches)
    mask = np.any(x != 0.0, axis=-1)
    mean, variance = keras_population(1, x, mask)
    assert_all_close(first.moving_mean, mean)
    assert_all_close(first.moving_variance, variance)
    # The second layer sees the first in inference mode, with those statistics.
    reference = keras.layers.BatchNormalization(axis=1)
    reference.build(x.shape)
    reference.set_weights([gamma, np.zeros(3, "float32"), mean, variance])
    hidden = keras.ops.convert_to_numpy(reference(x, training=False))
    mean, variance = keras_population(2, hidden, mask)
    assert_all_close(second.moving_mean, mean, atol_scale=1e-5)
    assert_all_close(second.moving_variance, variance, atol_scale=1e-5)
