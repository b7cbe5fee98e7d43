"""BNLeakMonitor: exactly 0 without batch statistics, within its spread for a
BN model that has learnt nothing from groups, far above it for a model that
encodes its group's statistics; nothing moves; bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import callbacks
from keras_contrast import layers
from keras_contrast import losses
from keras_contrast import models


class GroupMean(keras.layers.Layer):
    """Appends `scale` times the batch mean of its input to every row in
    training mode (zeros at inference): samples called together share a
    signature, as in a model that has learnt to read its group's
    statistics."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x, training=None):
        signature = tf.reduce_mean(x, axis=0, keepdims=True) * tf.ones_like(x)
        return tf.concat([x, self.scale * signature if training else 0 * signature], axis=1)


def simclr(norm_layer, seed=0):
    """SimCLR over 6 features: Dense 16 → norm → relu, projector (8,)."""
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, kernel_initializer=keras.initializers.GlorotUniform(seed)),
        norm_layer,
        keras.layers.ReLU(),
    ])
    model = models.SimCLR(backbone, projection_dims=(8,), projection_norm=None)
    model.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    model.build((None, 2, 6))
    return model


def views(batch=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch, 1, 6))
    return (images + 0.3 * rng.normal(size=(batch, 2, 6))).astype("float32")


def leaks(model, **kwargs):
    monitor = callbacks.BNLeakMonitor(views(), **kwargs)
    monitor.set_model(model)
    return monitor.leaks()


def test_model_without_batch_statistics_leaks_exactly_nothing():
    result = leaks(simclr(keras.layers.LayerNormalization()), num_groups=4)
    np.testing.assert_array_equal(result, np.zeros(5))


def test_batch_norm_model_stays_within_the_spread_of_random_splits():
    # An untrained BN model has learnt nothing from its groups: its leak is
    # the noise of regrouping (slightly negative: a group's statistics are
    # noisier than the batch's), comparable to the spread over splits.
    result = leaks(simclr(layers.BatchNormalization()), num_groups=4)
    assert np.std(result, ddof=1) > 0
    assert abs(np.mean(result)) <= 3 * np.std(result, ddof=1)


def test_model_encoding_its_group_statistics_leaks_far_above_the_spread():
    result = leaks(simclr(GroupMean(30.0)), num_groups=4)
    spread = np.std(result, ddof=1)
    assert np.mean(result) > 0.1
    assert np.mean(result) >= 5 * spread


def test_moving_statistics_and_every_variable_stay_unchanged():
    for norm in (layers.BatchNormalization(), keras.layers.BatchNormalization()):
        model = simclr(norm)
        before = [v.numpy().copy() for v in model.variables]
        leaks(model, num_groups=2, num_splits=2)
        for variable, value in zip(model.variables, before):
            np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


def test_logs_leak_and_spread_during_fit():
    model = simclr(layers.BatchNormalization())
    monitor = callbacks.BNLeakMonitor(views(16, seed=1), num_groups=2, num_splits=3)
    history = model.fit(views(32), batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    assert len(history.history["bn_leak"]) == 2
    assert [epoch for epoch, _, _ in monitor.history] == [0, 1]
    assert np.isfinite(history.history["bn_leak"]).all()
    assert np.all(np.asarray(history.history["bn_leak_spread"]) > 0)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_groups=1), ValueError, "`num_groups`"),
    (dict(num_groups=True), ValueError, "`num_groups`"),
    (dict(num_groups=3), ValueError, "`num_groups`=3 equal groups"),
    (dict(num_groups=32), ValueError, "at least 2 samples"),
    (dict(num_splits=0), ValueError, "`num_splits`"),
    (dict(every_n_epochs="1"), ValueError, "`every_n_epochs`"),
    (dict(seed=1.5), TypeError, "`seed`"),
    (dict(loss="infonce"), TypeError, "`loss`"),
])
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        callbacks.BNLeakMonitor(views(), **kwargs)


def test_rejects_views_that_are_not_one_batch():
    with pytest.raises(TypeError, match="`views` must be one held-out batch"):
        callbacks.BNLeakMonitor(tf.data.Dataset.from_tensor_slices(views()))
    with pytest.raises(ValueError, match=r"`views` must have shape \(batch, views, ...\)"):
        callbacks.BNLeakMonitor(np.zeros((8, 6)))


def test_model_without_contrastive_loss_is_a_clear_error():
    model = simclr(keras.layers.LayerNormalization())
    model.compile(optimizer="sgd", loss="mse")
    monitor = callbacks.BNLeakMonitor(views(), num_groups=2)
    monitor.set_model(model)
    with pytest.raises(ValueError, match="compile the model with one or pass `loss`"):
        monitor.leaks()


@pytest.mark.slow
def test_runs_under_a_strategy_with_synchronised_batch_norm_and_inside_grad_cache():
    from keras_contrast import training
    from tests import test_case

    with test_case.strategy(2).scope():
        model = simclr(layers.BatchNormalization(synchronized=True))
        wrapped = training.GradCache(model, num_chunks=2)
        wrapped.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    monitor = callbacks.BNLeakMonitor(views(16, seed=2), num_groups=2, num_splits=2)
    history = wrapped.fit(views(32), batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    expected = leaks_of(model, views(16, seed=2))
    np.testing.assert_allclose(history.history["bn_leak"], [np.mean(expected)], rtol=1e-5)


def leaks_of(model, held_out):
    """The leaks of `model` recomputed outside any strategy and callback."""
    monitor = callbacks.BNLeakMonitor(held_out, num_groups=2, num_splits=2)
    monitor.set_model(model)
    return monitor.leaks()
