"""TemperatureMonitor logs SigLIP's learnable logit bias next to τ: one
model, a GradCache around it, a bias without a learnable temperature,
several dual encoders, and a model with neither."""

import keras
import numpy as np
import pytest

from keras_contrast import losses
from keras_contrast.callbacks import TemperatureMonitor
from keras_contrast.models import DualEncoder
from keras_contrast.training import GradCache


def dual(learnable_temperature=True, name=None):
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=4, temperature=0.1, bias=-3.0,
                        learnable_temperature=learnable_temperature, learnable_bias=True,
                        name=name)
    model.build(((None, 5), (None, 3)))
    return model


def inputs():
    rng = np.random.default_rng(2)
    return rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")


@pytest.mark.parametrize("wrap", [False, True], ids=["model", "grad_cache"])
@pytest.mark.parametrize("learnable_temperature", [True, False])
def test_logs_the_learned_bias_each_epoch(wrap, learnable_temperature):
    model = dual(learnable_temperature)
    trainer = GradCache(model, num_chunks=2) if wrap else model
    trainer.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.SigLIPLoss())
    monitor = TemperatureMonitor()
    biases = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: biases.append(float(model.logit_bias.numpy())))
    history = trainer.fit(inputs(), batch_size=8, epochs=2, verbose=0,
                          callbacks=[record, monitor])
    assert biases[0] != -3.0 and biases[1] != biases[0]  # it learns
    assert monitor.history["bias"] == pytest.approx(biases, rel=1e-7)
    assert history.history["bias"] == pytest.approx(biases, rel=1e-7)
    if learnable_temperature:
        tau = float(np.exp(-model.temperature.log_scale.numpy()))
        assert monitor.history["temperature"][-1] == pytest.approx(tau, rel=1e-6)
    else:
        assert set(monitor.history) == {"bias"}


def test_several_biases_are_logged_by_model_name():
    class Pair(keras.Model):
        def __init__(self):
            super().__init__()
            self.first, self.second = dual(name="first"), dual(False, name="second")

    model = Pair()
    model.first.logit_bias.assign(-1.5)
    monitor = TemperatureMonitor()
    monitor.set_model(model)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs == {"temperature": pytest.approx(0.1, rel=1e-6), "bias/first": -1.5,
                    "bias/second": -3.0}


def test_a_model_without_temperature_or_bias_is_an_error():
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=4, learnable_temperature=False)
    monitor = TemperatureMonitor()
    monitor.set_model(model)
    with pytest.raises(ValueError, match="no LearnableTemperature layer and no learnable logit"):
        monitor.on_epoch_end(0, {})
