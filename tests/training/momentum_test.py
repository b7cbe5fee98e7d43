"""cosine_momentum against its formula; ema_update against NumPy."""

import keras
import numpy as np
import pytest

from keras_contrast.training import momentum


@pytest.mark.parametrize("step", [0, 1, 5, 9, 10, 15])
def test_cosine_momentum_equals_formula(step):
    k = min(step, 10)
    expected = 1.0 - (1.0 - 0.99) * (np.cos(np.pi * k / 10) + 1) / 2
    np.testing.assert_allclose(momentum.cosine_momentum(step, 10).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        momentum.cosine_momentum(np.int64(step), 10, 0.9, 0.95).numpy(),
        0.95 - 0.05 * (np.cos(np.pi * k / 10) + 1) / 2, rtol=1e-6,
    )


def test_ema_update_equals_numpy():
    rng = np.random.default_rng(0)
    target_values = rng.normal(size=(3, 2)).astype("float32")
    source_values = rng.normal(size=(3, 2)).astype("float32")
    target = keras.Variable(target_values)
    momentum.ema_update([target], [source_values], 0.9)
    np.testing.assert_allclose(target.numpy(), 0.9 * target_values + 0.1 * source_values,
                               rtol=1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: momentum.cosine_momentum(0, 0), "total_steps"),
        (lambda: momentum.cosine_momentum(0, 10, base_momentum=1.5), "base_momentum"),
        (lambda: momentum.ema_update([keras.Variable(np.zeros(2))], [], 0.9), "pair up"),
        (lambda: momentum.ema_update([keras.Variable(np.zeros(2))], [np.zeros(3)], 0.9),
         "shape"),
    ],
)
def test_rejects_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
