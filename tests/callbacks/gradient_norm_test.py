"""GradientNormMonitor / ContrastiveModel: logged gradient inf-norms equal
max |g| from a hand-run GradientTape, on 1 device, 2 replicas, through
GradCache and under loss scaling; the per-step hook runs once per step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.callbacks import GradientNormMonitor
from keras_contrast.training import ContrastiveModel
from keras_contrast.training import GradCache
from keras_contrast.training.step import resolve_gradient_norm_groups
from tests import test_case


class Siamese(ContrastiveModel):
    """(b, 2, 6) → Dense(8, tanh) → Dense(5) per view; counts hook calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(8, "tanh", name="first",
                                        kernel_initializer=keras.initializers.GlorotUniform(0))
        self.last = keras.layers.Dense(5, name="last",
                                       kernel_initializer=keras.initializers.GlorotUniform(1))
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     name="count", aggregation="only_first_replica")

    def build(self, input_shape):
        self.first.build(input_shape)
        self.last.build(tuple(input_shape)[:-1] + (8,))

    def call(self, views, training=None):
        return self.last(self.first(views))

    def after_optimizer_step(self):
        self.count.assign_add(1.0)


def build(weights=None):
    model = Siamese()
    model.build((None, 2, 6))
    if weights is not None:
        model.set_weights(weights)
    return model


X = np.random.default_rng(0).normal(size=(8, 2, 6)).astype("float32")


def hand_norms(weights):
    model = build(weights)
    with tf.GradientTape() as tape:
        loss = losses.InfoNCE(0.2)(None, model(X))
    first_kernel, first_bias, last_kernel, last_bias = tape.gradient(loss, model.trainable_weights)
    return {
        "grad_inf_norm/first": max(np.abs(first_kernel).max(), np.abs(first_bias).max()),
        "grad_inf_norm/last": max(np.abs(last_kernel).max(), np.abs(last_bias).max()),
    }


@pytest.mark.parametrize("setup", ["one_device", "two_replicas", "grad_cache", "loss_scale"])
def test_logged_norms_equal_hand_computed(setup):
    weights = build().get_weights()
    expected = hand_norms(weights)
    optimizer = keras.optimizers.SGD(0.1)
    if setup == "loss_scale":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
    if setup == "two_replicas":
        with test_case.strategy(2).scope():
            model = trainer = build(weights)
            trainer.compile(optimizer=optimizer, loss=losses.InfoNCE(0.2))
    else:
        model = trainer = build(weights)
        if setup == "grad_cache":
            trainer = GradCache(model, num_chunks=2)
        trainer.compile(optimizer=optimizer, loss=losses.InfoNCE(0.2))
    monitor = GradientNormMonitor()
    history = trainer.fit(X, batch_size=8, epochs=2, shuffle=False, callbacks=[monitor],
                          verbose=0)
    for name, value in expected.items():
        assert value > 0
        assert len(monitor.history[name]) == 2
        test_case.assert_all_close(monitor.history[name][0], value, rtol=1e-5)
        assert name in history.history
    assert model.count.numpy() == 2  # the hook ran once per step


def test_explicit_layer_names_and_errors():
    model = build()
    groups = resolve_gradient_norm_groups(model, ["last"])
    assert list(groups) == ["grad_inf_norm/last"]
    assert {v.path for v in groups["grad_inf_norm/last"]} == {v.path for v in model.last.weights}
    with pytest.raises(ValueError, match="no trainable variables"):
        resolve_gradient_norm_groups(model, ["missing"])
    with pytest.raises(ValueError, match="layers"):
        resolve_gradient_norm_groups(model, 3)


def test_plot_writes_png(tmp_path):
    model = build()
    model.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    monitor = GradientNormMonitor(["first", "last"])
    model.fit(X, batch_size=4, verbose=0, callbacks=[monitor])
    assert len(monitor.history["grad_inf_norm/first"]) == 2
    monitor.plot(tmp_path / "norms.png")
    assert (tmp_path / "norms.png").stat().st_size > 1000


def test_plain_keras_model_raises_at_train_begin_naming_what_it_needs():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = GradientNormMonitor()
    x, y = np.ones((4, 6), "float32"), np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match="GradientNormMonitor needs .*ContrastiveModel.*GradCache"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.history == {}
