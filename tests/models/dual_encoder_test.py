"""DualEncoder: the learnable temperature's exact gradient (finite
differences of the NumPy CLIP reference), clamp, 2 replicas == 1 device,
GradCache == native, encode_a/encode_b, round trip."""

import keras
import numpy as np
import pytest

from keras_contrast import losses
from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.training import GradCache
from tests import test_case
from tests.losses import reference


def towers(seed=0):
    init = keras.initializers.GlorotUniform
    a = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, "tanh", kernel_initializer=init(seed))])
    b = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, "tanh", kernel_initializer=init(seed + 1))])
    return a, b


def build(learnable=True, weights=None):
    model = DualEncoder(*towers(), projection_dim=4, learnable_temperature=learnable,
                        temperature=0.1)
    model.build(((None, 5), (None, 3)))
    if weights is not None:
        model.set_weights(weights)
    return model


def data(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 5)).astype("float32"), rng.normal(size=(batch, 3)).astype("float32")


GradientRecorder = test_case.GradientRecorder



def test_temperature_gradient_equals_finite_differences_of_reference():
    model = build()
    model.compile(optimizer=GradientRecorder(), loss=losses.CLIPLoss())
    a, b = data()
    model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    y = model((a, b)).numpy().astype(np.float64)
    s = np.log(10.0)  # τ = 0.1 → log scale s = ln 10
    step = 1e-5

    def loss_at(log_scale):
        return np.mean(reference.clip(y, temperature=np.exp(-log_scale)))

    expected = (loss_at(s + step) - loss_at(s - step)) / (2 * step)
    index = [v.path for v in model.trainable_variables].index(model.temperature.log_scale.path)
    actual = model.optimizer.gradients()[index]
    assert abs(expected) > 1e-3
    np.testing.assert_allclose(actual, expected, rtol=1e-4)


def test_temperature_stays_clamped():
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(1e4), loss=losses.CLIPLoss())
    model.fit(data(), batch_size=8, epochs=2, verbose=0)
    scale = model.temperature.log_scale.numpy()
    assert 0.0 <= scale <= np.log(100.0) + 1e-6


@pytest.mark.parametrize("setup", ["two_replicas", "grad_cache"])
def test_step_equals_single_device_native_step(setup):
    weights = build().get_weights()
    a, b = data(seed=1)
    native = build(weights=weights)
    native.compile(optimizer=GradientRecorder(), loss=losses.CLIPLoss())
    native.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    if setup == "two_replicas":
        with test_case.strategy(2).scope():
            model = build(weights=weights)
            model.compile(optimizer=GradientRecorder(), loss=losses.CLIPLoss())
        trainer = model
    else:
        model = build(weights=weights)
        trainer = GradCache(model, num_chunks=2)
        trainer.compile(optimizer=GradientRecorder(), loss=losses.CLIPLoss())
    trainer.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    # Same classes, same variable order (names differ between instances).
    expected = [r.numpy() for r in native.optimizer.recorded]
    actual = [r.numpy() for r in trainer.optimizer.recorded]
    assert [v.shape for v in trainer.trainable_variables] == [
        v.shape for v in native.trainable_variables
    ]
    assert len(actual) == len(expected) == 7  # 2 towers x 2, 2 projections, log-scale
    for a, e in zip(actual, expected):
        assert np.max(np.abs(e)) > 0
        test_case.assert_all_close(a, e)


def test_encoders_are_normalised_and_round_trip():
    model = build(learnable=False)
    a, b = data(seed=2)
    za, zb = model.encode_a(a).numpy(), model.encode_b(b).numpy()
    np.testing.assert_allclose(np.linalg.norm(za, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(zb, axis=1), 1.0, rtol=1e-5)
    outputs = model((a, b)).numpy()
    test_case.assert_all_close(za, outputs[:, 0] / np.linalg.norm(outputs[:, 0], axis=1, keepdims=True))
    test_case.assert_all_close(model({"a": a, "b": b}), outputs)
    restored = test_case.keras_file_round_trip(build())
    assert restored.temperature is not None
    restored_plain = test_case.keras_file_round_trip(model)
    test_case.assert_all_close(restored_plain((a, b)), outputs)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="projection_dim"):
        DualEncoder(*towers(), projection_dim=0)
    with pytest.raises(ValueError, match="'a' and 'b'"):
        build()({"x": data()[0], "b": data()[1]})


def test_learnable_temperature_rejects_a_loss_without_a_temperature_argument():
    model = build()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="ContrastiveLoss.*`learnable_temperature=False`"):
        model.compute_loss(y_pred=np.ones((4, 2, 4), "float32"))
    model.compile(optimizer="sgd", loss=losses.CLIPLoss(reduction="none"))
    with pytest.raises(ValueError, match="`reduction`"):
        model.compute_loss(y_pred=np.ones((4, 2, 4), "float32"))
