"""KNNMonitor writes the encoder's k-NN accuracy into History; the
TemperatureMonitor records τ."""

import keras
import numpy as np
import pytest

from keras_contrast import losses
from keras_contrast.callbacks import KNNMonitor
from keras_contrast.callbacks import TemperatureMonitor
from keras_contrast.evaluation import knn_accuracy
from keras_contrast.models import DualEncoder
from keras_contrast.models import SimCLR
from tests.models.common import tiny_backbone


def test_knn_accuracy_reaches_history_every_n_epochs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 2, 8, 8, 1)).astype("float32")
    images, labels = rng.normal(size=(30, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 30)
    model = SimCLR(tiny_backbone(), projection_dims=(8, 4))
    model.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    monitor = KNNMonitor((images[:20], labels[:20]), (images[20:], labels[20:]), k=3,
                         every_n_epochs=2)
    history = model.fit(x, batch_size=8, epochs=4, verbose=0, callbacks=[monitor])
    assert [epoch for epoch, _ in monitor.history] == [1, 3]
    expected = knn_accuracy(model.encoder, (images[:20], labels[:20]),
                            (images[20:], labels[20:]), k=3)
    assert monitor.history[-1][1] == expected
    # Logged on epochs 2 and 4 only.
    assert history.history["knn_accuracy"] == [monitor.history[0][1], expected]
    with pytest.raises(ValueError, match="every_n_epochs"):
        KNNMonitor(None, None, every_n_epochs=0)


def test_temperature_monitor_records_tau():
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=4, temperature=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.CLIPLoss())
    rng = np.random.default_rng(1)
    monitor = TemperatureMonitor()
    history = model.fit((rng.normal(size=(8, 5)), rng.normal(size=(8, 3))), batch_size=8,
                        epochs=2, verbose=0, callbacks=[monitor])
    tau = float(np.exp(-model.temperature.log_scale.numpy()))
    assert monitor.history["temperature"][-1] == pytest.approx(tau, rel=1e-6)
    assert history.history["temperature"][-1] == pytest.approx(tau, rel=1e-6)
    assert monitor.history["temperature"][0] != pytest.approx(0.1, rel=1e-9)  # it learns


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": True}, "`k` must be an int > 0, got True"),
        ({"k": "5"}, "`k` must be an int > 0"),
        ({"temperature": True}, "`temperature` must be a number > 0, got True"),
        ({"temperature": "0.1"}, "`temperature` must be a number > 0"),
        ({"every_n_epochs": True}, "`every_n_epochs` must be an int > 0"),
        ({"encoder": "backbone"}, "`encoder` must be"),
        ({"train_data": (np.ones((4, 2)), np.zeros(3, int))},
         "the labels of `train_data`: 3 labels for 4 samples"),
        ({"val_data": [np.ones((4, 2))]}, "`val_data` must be"),
    ],
)
def test_knn_monitor_rejects_bad_arguments_when_built(kwargs, match):
    data = (np.ones((4, 2)), np.zeros(4, int))
    arguments = {"train_data": data, "val_data": data, **kwargs}
    with pytest.raises(ValueError, match=match):
        KNNMonitor(**arguments)
