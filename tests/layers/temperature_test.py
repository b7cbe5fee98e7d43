"""LearnableTemperature: parameterisation, clamping, weight decay, and an
exact gradient when a model feeds it to the loss under 4 replicas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from keras_contrast import losses
from tests import test_case
from tests.losses import reference


class TemperatureModel(keras.Model):
    """Encoder + learnable temperature fed to the loss in `compute_loss`."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras.layers.Dense(
            4, kernel_initializer=keras.initializers.GlorotUniform(seed)
        )
        self.temperature = layers.LearnableTemperature(0.1)

    def build(self, input_shape):
        self.encoder.build(input_shape)

    def call(self, inputs):
        return self.encoder(inputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.loss(y, y_pred, sample_weight, temperature=self.temperature())


def test_initial_value_and_scale():
    layer = layers.LearnableTemperature()
    test_case.assert_all_close(layer.log_scale.numpy(), math.log(1 / 0.07))
    test_case.assert_all_close(layer().numpy(), 0.07)


def test_constraint_clamps_after_each_step():
    layer = layers.LearnableTemperature(0.07, max_scale=100.0)
    optimizer = keras.optimizers.SGD(learning_rate=100.0)
    optimizer.apply_gradients([(tf.constant(-1.0), layer.log_scale)])
    test_case.assert_all_close(layer.log_scale.numpy(), math.log(100.0))
    optimizer.apply_gradients([(tf.constant(100.0), layer.log_scale)])
    test_case.assert_all_close(layer.log_scale.numpy(), 0.0, atol_scale=0.0)


def test_excluded_from_weight_decay():
    layer = layers.LearnableTemperature()
    other = keras.Variable(1.0)
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    layer.exclude_from_weight_decay(optimizer)
    before = layer.log_scale.numpy()
    optimizer.apply_gradients(
        [(tf.constant(0.0), layer.log_scale), (tf.constant(0.0), other)]
    )
    test_case.assert_all_close(layer.log_scale.numpy(), before)
    test_case.assert_all_close(other.numpy(), 1.0 - 0.1 * 0.5)


def test_config_round_trip():
    layer = layers.LearnableTemperature(0.2, min_scale=2.0, max_scale=50.0)
    restored = test_case.serialization_round_trip(layer)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs", [{"initial_temperature": 0.0}, {"min_scale": -1.0}, {"initial_temperature": 0.001}]
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        layers.LearnableTemperature(**kwargs)


def fit_one_step(num_replicas, x, weights):
    with test_case.strategy(num_replicas).scope():
        model = TemperatureModel()
        model.build((None, 2, 3))
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.CLIPLoss())
    model.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return model


def test_gradient_exact_across_two_replicas():
    x = np.random.default_rng(0).normal(size=(16, 2, 3)).astype("float32")
    reference_model = TemperatureModel()
    reference_model.build((None, 2, 3))
    weights = reference_model.get_weights()
    single = fit_one_step(1, x, weights)
    replicated = fit_one_step(2, x, weights)
    assert abs(single.temperature.log_scale.numpy() - math.log(10.0)) > 1e-4
    for a, b in zip(single.get_weights(), replicated.get_weights()):
        test_case.assert_all_close(b, a)


@pytest.mark.parametrize("name", ["initial_temperature", "min_scale", "max_scale"])
@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, [0.5]], ids=repr)
def test_rejects_non_numbers(name, value):
    # True was taken as 1 (initial_temperature=True gave τ = 1).
    with pytest.raises(TypeError, match=f"`{name}` must be a finite number > 0"):
        layers.LearnableTemperature(**{name: value})


@pytest.mark.parametrize("name", ["initial_temperature", "min_scale", "max_scale"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")], ids=repr)
def test_rejects_non_positive_or_non_finite(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number > 0"):
        layers.LearnableTemperature(**{name: value})


def test_rejects_min_scale_above_max_scale():
    with pytest.raises(ValueError, match="`min_scale` .* must be <= `max_scale`"):
        layers.LearnableTemperature(0.1, min_scale=20.0, max_scale=5.0)


def test_rejects_initial_temperature_outside_the_scale_range():
    with pytest.raises(ValueError, match="`initial_temperature`"):
        layers.LearnableTemperature(0.5, min_scale=5.0, max_scale=50.0)


def test_accepts_numpy_numbers_and_saves_floats():
    layer = layers.LearnableTemperature(np.float32(0.25), min_scale=np.int64(1))
    config = layer.get_config()
    assert type(config["initial_temperature"]) is float and type(config["min_scale"]) is float
    test_case.assert_all_close(layer().numpy(), 0.25, rtol=1e-6)
    restored = test_case.serialization_round_trip(layer)
    assert restored.get_config() == config


@pytest.mark.parametrize("kwargs", [{"min_value": True, "max_value": 1.0},
                                    {"min_value": 0.0, "max_value": "1"},
                                    {"min_value": float("nan"), "max_value": 1.0}])
def test_clip_value_rejects_bad_bounds(kwargs):
    with pytest.raises((TypeError, ValueError), match="`m(in|ax)_value`"):
        layers.ClipValue(**kwargs)


def test_float64_weight_and_exact_clip_loss_under_floatx_float64():
    with test_case.float64_config():
        layer = layers.LearnableTemperature(0.07)
        assert layer.log_scale.dtype == "float64"
        temperature = layer()
        assert temperature.dtype == "float64"
        # float32 storage would leave τ ~1e-8 (relative) off 0.07.
        np.testing.assert_allclose(temperature.numpy(), 0.07, rtol=1e-14)
        model = TemperatureModel()
        model.build((None, 2, 3))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.CLIPLoss())
        x = np.random.default_rng(1).normal(size=(6, 2, 3))
        y_pred = model.predict(x, verbose=0)
        history = model.fit(x, batch_size=6, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0],
                               np.mean(reference.clip(y_pred, 0.1)), rtol=1e-11)
