"""PreciseBN callback: when it runs, and that validation sees its statistics."""

import keras
import numpy as np
import pytest

from keras_contrast.callbacks import PreciseBN
from tests.test_case import assert_all_close
from tests.test_case import strategy

SAMPLES = 48


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=3.0, scale=2.0, size=(SAMPLES, 5)).astype("float32")
    y = rng.integers(0, 3, size=SAMPLES).astype("int32")
    return x, y


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(momentum=0.99),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def precise_batches(x):
    # Two unequal batches covering every sample once.
    return [x[:20], x[20:]]


def population(model, x):
    """NumPy float64 mean and biased variance of the BN input over `x`."""
    dense = model.layers[0]
    a = x.astype(np.float64) @ dense.kernel.numpy() + dense.bias.numpy()
    return a.mean(axis=0), a.var(axis=0)


class StatisticsProbe(keras.callbacks.Callback):
    """Records, when validation starts and at each epoch end, the BN moving
    statistics and the population statistics of the current weights."""

    def __init__(self, x):
        super().__init__()
        self.x = x
        self.at_validation = []
        self.at_epoch_end = []

    def _record(self, records):
        norm = self.model.layers[1]
        moving = (norm.moving_mean.numpy(), norm.moving_variance.numpy())
        records.append(moving + (population(self.model, self.x),))

    def on_test_begin(self, logs=None):
        self._record(self.at_validation)

    def on_epoch_end(self, epoch, logs=None):
        self._record(self.at_epoch_end)


def is_precise(record):
    moving_mean, moving_variance, (mean, variance) = record
    return np.allclose(moving_mean, mean, rtol=1e-5, atol=1e-5) and np.allclose(
        moving_variance, variance, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "every_n_epochs, epochs, expected",
    [(1, 3, [0, 1, 2]), (2, 5, [1, 3, 4]), (3, 3, [2])],
)
def test_runs_every_n_epochs_and_after_the_last(every_n_epochs, epochs, expected):
    x, y = make_data()
    model = make_model()
    callback = PreciseBN(precise_batches(x), num_batches=2, every_n_epochs=every_n_epochs)
    probe = StatisticsProbe(x)
    model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[callback, probe], verbose=0)
    assert callback.epochs_run == expected
    # Without validation it runs at the epoch end: callbacks after it see
    # the population statistics of that epoch's weights, others the EMA.
    assert [is_precise(record) for record in probe.at_epoch_end] == [
        epoch in expected for epoch in range(epochs)
    ]
    mean, variance = population(model, x)
    assert_all_close(model.layers[1].moving_mean.numpy(), mean)
    assert_all_close(model.layers[1].moving_variance.numpy(), variance)


def test_runs_before_validation_of_its_epochs():
    x, y = make_data()
    model = make_model()
    callback = PreciseBN(precise_batches(x), num_batches=2, every_n_epochs=2)
    probe = StatisticsProbe(x)
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        validation_data=(x, y),
        callbacks=[callback, probe],
        verbose=0,
    )
    assert callback.epochs_run == [1, 2]
    assert [is_precise(record) for record in probe.at_validation] == [False, True, True]
    # The last epoch's val_loss was computed with the statistics the model
    # keeps: evaluating now gives the same number.
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(x, y, verbose=0), rel=1e-6
    )


def test_does_nothing_in_standalone_evaluate():
    x, y = make_data()
    model = make_model()
    callback = PreciseBN(precise_batches(x), num_batches=2)
    before = model.layers[1].moving_mean.numpy()
    model.evaluate(x, y, callbacks=[callback], verbose=0)
    assert callback.epochs_run == []
    np.testing.assert_array_equal(model.layers[1].moving_mean.numpy(), before)


def test_under_mirrored_strategy_updates_every_replica():
    x, y = make_data()
    with strategy(2).scope():
        model = make_model()
    callback = PreciseBN(precise_batches(x), num_batches=2)
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[callback], verbose=0)
    mean, variance = population(model, x)
    norm = model.layers[1]
    for variable, expected in ((norm.moving_mean, mean), (norm.moving_variance, variance)):
        copies = getattr(variable.value, "values", (variable.value,))
        assert len(copies) == 2
        for copy in copies:
            assert_all_close(copy.numpy(), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"num_batches": 0}, "num_batches"),
        ({"order": "twice"}, "order"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreciseBN([np.zeros((2, 5), "float32")], **kwargs)
