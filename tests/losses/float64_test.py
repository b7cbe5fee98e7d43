"""Every loss under `keras.config.set_floatx("float64")` and with float64
embeddings: computed in float64, equal to the float64 NumPy reference to
float64 precision (a float32 computation is ~1e-7 off)."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference
from tests.losses.cases import CASES

FLOAT64_RTOL = 1e-11
LABELLED = [case for case in CASES if case.name.startswith(("infonce", "dcl_", "clip", "siglip"))]


@pytest.fixture
def floatx_float64():
    with test_case.float64_config():
        yield


def with_tile(loss, tile_size):
    return type(loss).from_config({**loss.get_config(), "tile_size": tile_size})


def embeddings(batch, views, seed=0, dtype="float64"):
    return np.random.default_rng(seed).normal(size=(batch, views, 5)).astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("tile_size", [None, 3])
def test_float64_embeddings_compute_in_float64(case, tile_size):
    y = embeddings(6, case.views, seed=1)
    loss = with_tile(case.make(), tile_size)
    values = loss.contrast(None, tf.constant(y), loss.temperature)
    assert values.dtype == tf.float64
    test_case.assert_all_close(values, case.reference(y), rtol=FLOAT64_RTOL, atol_scale=1e-12)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("tile_size", [None, 4])
def test_floatx_float64_value_and_gradient(case, tile_size, floatx_float64):
    y = embeddings(5, case.views, seed=2)
    loss = with_tile(case.make(), tile_size)
    assert loss.dtype == "float64"
    y_tensor = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y_tensor)
        value = loss(None, y_tensor)
    assert value.dtype == tf.float64
    test_case.assert_all_close(value, np.mean(case.reference(y)), rtol=FLOAT64_RTOL,
                               atol_scale=1e-12)
    # Central differences of the float64 reference: error ~1e-10 (a float32
    # computation's gradient would be ~1e-5 off).
    expected = reference.numeric_gradient(lambda v: case.reference(v) / len(v), y, step=1e-5)
    gradient = tape.gradient(value, y_tensor).numpy()
    assert gradient.dtype == np.float64
    if case.views == 4:  # keys are stop-gradient: only the queries get one
        np.testing.assert_array_equal(gradient[:, 2:], 0.0)
        gradient, expected = gradient[:, :2], expected[:, :2]
    test_case.assert_all_close(gradient, expected, rtol=1e-7, atol_scale=1e-8)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_floatx_float64_with_float32_embeddings(case, floatx_float64):
    # float32 inputs are cast up: exact on the float32 values.
    y = embeddings(6, case.views, seed=3, dtype="float32")
    value = case.make()(None, y)
    assert value.dtype == tf.float64
    test_case.assert_all_close(value, np.mean(case.reference(y)), rtol=FLOAT64_RTOL,
                               atol_scale=1e-12)


@pytest.mark.parametrize("case", LABELLED, ids=repr)
@pytest.mark.parametrize("tile_size", [None, 5])
def test_float64_with_class_ids(case, tile_size):
    y = embeddings(8, 2, seed=4)
    labels = np.array([0, 1, 0, 2, 1, 1, 3, 0])
    loss = with_tile(case.make(), tile_size)
    config = loss.get_config()
    if isinstance(loss, losses.CLIPLoss):
        expected = reference.clip(y, config["temperature"], labels=labels)
    elif isinstance(loss, losses.SigLIPLoss):
        expected = reference.siglip(y, config["temperature"], config["bias"], labels=labels)
    else:
        kind = "dcl" if isinstance(loss, losses.DCL) else "infonce"
        expected = reference.two_view(y, config["temperature"], config["negatives"], kind,
                                      labels=labels)
    values = loss.contrast(labels, tf.constant(y), loss.temperature)
    assert values.dtype == tf.float64
    test_case.assert_all_close(values, expected, rtol=FLOAT64_RTOL, atol_scale=1e-12)


def test_float64_temperature_gradient():
    y = embeddings(5, 2, seed=5)
    temperature = tf.Variable(0.2, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = losses.CLIPLoss()(None, tf.constant(y), temperature=temperature)
    step = 1e-6
    numeric = (np.mean(reference.clip(y, 0.2 + step))
               - np.mean(reference.clip(y, 0.2 - step))) / (2 * step)
    test_case.assert_all_close(tape.gradient(value, temperature), numeric, rtol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_under_floatx_float64(case, floatx_float64):
    inputs = keras.Input((case.views, 6))
    model = keras.Model(inputs, keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotUniform(0))(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=case.make())
    x = np.random.default_rng(6).normal(size=(8, case.views, 6))
    expected = np.mean(case.reference(model.predict(x, verbose=0)))
    history = model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert all(w.dtype == np.float64 for w in model.get_weights())
    test_case.assert_all_close(history.history["loss"][0], expected, rtol=1e-10)


def test_float64_two_replicas_equal_one_device():
    y = embeddings(8, 2, seed=7)
    loss = losses.DCLW(0.2)
    strategy = test_case.strategy(2)
    step = test_case.replica_loss_step(strategy, loss)
    values, gradients = step(test_case.split_per_replica(strategy, y))
    value, gradient = test_case.summed_value_and_gradient(strategy, values, gradients)
    y_tensor = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y_tensor)
        expected_value = loss(None, y_tensor)
    test_case.assert_all_close(value, np.mean(reference.two_view(y, 0.2, kind="dclw")),
                               rtol=FLOAT64_RTOL)
    test_case.assert_all_close(value, expected_value, rtol=FLOAT64_RTOL)
    test_case.assert_all_close(gradient, tape.gradient(expected_value, y_tensor),
                               rtol=FLOAT64_RTOL, atol_scale=1e-12)
