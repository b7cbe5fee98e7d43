"""LARS against a NumPy implementation: trust ratio, weight decay,
momentum, exclusions, edge cases, 2 replicas, serialization."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.optimizers import LARS
from tests import test_case


def numpy_lars(weights, gradients, adapts, steps, lr=0.5, momentum=0.9, wd=0.01, eta=0.02,
               nesterov=False):
    weights = [w.astype(np.float64) for w in weights]
    velocities = [np.zeros_like(w) for w in weights]
    for step in range(steps):
        for i, (w, g, v) in enumerate(zip(weights, gradients[step], velocities)):
            rate = lr
            if adapts[i]:
                g = g + wd * w
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                rate = lr * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
            velocities[i] = momentum * v + rate * g
            weights[i] = w - (momentum * velocities[i] + rate * g if nesterov else velocities[i])
    return weights


@pytest.mark.parametrize("nesterov", [False, True])
def test_steps_equal_numpy(nesterov):
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 4)), rng.normal(size=(4,)), np.zeros((2, 2)), rng.normal(size=(2, 3))]
    variables = [keras.Variable(v.astype("float32")) for v in values]
    gradients = [[rng.normal(size=v.shape).astype("float32") for v in values] for _ in range(3)]
    for step in gradients:
        step[3] = np.zeros_like(step[3])  # zero gradient: trust ratio 1
    optimizer = LARS(0.5, momentum=0.9, weight_decay=0.01, eta=0.02, nesterov=nesterov)
    for step in gradients:
        optimizer.apply_gradients(zip(step, variables))
    # rank-1 excluded; the zero matrix and the zero gradient get ratio 1.
    adapts = [True, False, True, True]
    expected = numpy_lars(values, gradients, adapts, 3, nesterov=nesterov)
    for variable, wanted in zip(variables, expected):
        test_case.assert_all_close(variable.numpy(), wanted, rtol=1e-5)


def test_explicit_exclusion_and_temperature():
    rng = np.random.default_rng(1)
    kernel = keras.Variable(rng.normal(size=(3, 3)).astype("float32"))
    temperature = layers.LearnableTemperature()
    optimizer = LARS(0.1, momentum=0.0, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_list=[kernel])
    assert not optimizer.adapts(kernel)
    assert not optimizer.adapts(temperature.log_scale)  # scalar: excluded by rank
    gradient = rng.normal(size=(3, 3)).astype("float32")
    before = kernel.numpy()
    optimizer.apply_gradients([(gradient, kernel), (np.float32(0.2), temperature.log_scale)])
    test_case.assert_all_close(kernel.numpy(), before - 0.1 * gradient)  # plain SGD


def test_two_replica_fit_equals_one_device():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    weights = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)]).get_weights()

    def fitted(num_replicas):
        with test_case.strategy(num_replicas).scope():
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
            model.set_weights(weights)
            model.compile(optimizer=LARS(0.5, weight_decay=0.01, eta=0.1), loss="mse")
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        return model.get_weights()

    for a, b in zip(fitted(2), fitted(1)):
        test_case.assert_all_close(a, b, rtol=1e-5)


def test_config_round_trip_and_errors():
    optimizer = LARS(0.2, momentum=0.8, weight_decay=1e-4, eta=0.01, nesterov=True)
    restored = LARS.from_config(optimizer.get_config())
    assert (restored.momentum, restored.lars_weight_decay, restored.eta, restored.nesterov) == (
        0.8, 1e-4, 0.01, True)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    loaded = test_case.keras_file_round_trip(model)
    assert isinstance(loaded.optimizer, LARS) and loaded.optimizer.eta == 0.01
    for kwargs, match in (({"momentum": 1.0}, "momentum"), ({"eta": 0.0}, "eta"),
                          ({"weight_decay": -1.0}, "weight_decay")):
        with pytest.raises(ValueError, match=match):
            LARS(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"momentum": "0.9"}, "`momentum` must be a number in \\[0, 1\\), got '0.9'"),
        ({"momentum": False}, "`momentum` must be a number"),
        ({"weight_decay": True}, "`weight_decay` must be a number >= 0, got True"),
        ({"weight_decay": "1e-6"}, "`weight_decay` must be a number >= 0"),
        ({"eta": True}, "`eta` must be a number > 0, got True"),
        ({"eta": float("nan")}, "`eta` must be a number > 0"),
        ({"learning_rate": True}, "`learning_rate` must be a number >= 0"),
        ({"learning_rate": "0.1"}, "`learning_rate` must be a number >= 0"),
        ({"learning_rate": -0.1}, "`learning_rate` must be a number >= 0"),
        ({"nesterov": "no"}, "`nesterov` must be a bool, got 'no'"),
        ({"exclude_bias_and_norm": 0}, "`exclude_bias_and_norm` must be a bool, got 0"),
    ],
)
def test_rejects_booleans_and_strings_where_numbers_or_flags_belong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS(**kwargs)


def test_is_bias_or_norm_selects_rank_at_most_one():
    from keras_contrast.optimizers import is_bias_or_norm

    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    norm = keras.layers.BatchNormalization()
    norm.build((None, 4))
    embedding = keras.layers.Embedding(5, 3)
    embedding.build((None,))
    conv = keras.layers.Conv2D(2, 3)
    conv.build((None, 8, 8, 1))
    chosen = {v.path: is_bias_or_norm(v) for layer in (dense, norm, embedding, conv)
              for v in layer.trainable_variables}
    assert chosen == {
        f"{dense.name}/kernel": False, f"{dense.name}/bias": True,
        f"{norm.name}/gamma": True, f"{norm.name}/beta": True,
        f"{embedding.name}/embeddings": False,
        f"{conv.name}/kernel": False, f"{conv.name}/bias": True,
    }
    assert is_bias_or_norm(layers.LearnableTemperature().log_scale)
