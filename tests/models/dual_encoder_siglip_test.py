"""DualEncoder with SigLIP's learnable logit bias: the loss and the exact
gradients of the temperature and bias (NumPy float64 reference, finite
differences), the loss's own τ without a learnable temperature, weight
decay kept off τ and b (also through LossScaleOptimizer and GradCache),
float64 weights, argument checks, the `.keras` round trip."""

import math

import keras
import numpy as np
import pytest

from keras_contrast import losses
from keras_contrast.models.dual_encoder import DualEncoder
from keras_contrast.training import GradCache
from tests import test_case
from tests.losses import reference
from tests.models.dual_encoder_test import data
from tests.models.dual_encoder_test import towers

GradientRecorder = test_case.GradientRecorder


def build(learnable_temperature=True, temperature=0.1, bias=-10.0, built=True, **kwargs):
    model = DualEncoder(*towers(), projection_dim=4, learnable_temperature=learnable_temperature,
                        temperature=temperature, learnable_bias=True, bias=bias, **kwargs)
    if built:
        model.build(((None, 5), (None, 3)))
    return model


def siglip_gradients(y, temperature, bias):
    """NumPy float64 ∂L/∂b and ∂L/∂s (s = ln 1/τ) of the batch-mean SigLIP
    loss: with ℓ_ij = <x_i, y_j> e^s + b, ∂softplus(-zℓ)/∂ℓ = -z σ(-zℓ) and
    ∂ℓ/∂s = ℓ - b."""
    y = np.asarray(y, np.float64)
    z = y / np.linalg.norm(y, axis=-1, keepdims=True)
    logits = z[:, 0] @ z[:, 1].T / temperature + bias
    signs = 2.0 * np.eye(len(y)) - 1.0
    d = -signs / (1.0 + np.exp(signs * logits))  # -z σ(-zℓ)
    n = len(y)
    return d.sum() / n, (d * (logits - bias)).sum() / n


def recorded(model, variable):
    index = [v.path for v in model.trainable_variables].index(variable.path)
    return model.optimizer.gradients()[index]


def test_loss_temperature_and_bias_gradients_equal_the_numpy_reference():
    model = build(bias=-3.0)  # logits spread around 0: both gradients far from 0
    model.compile(optimizer=GradientRecorder(), loss=losses.SigLIPLoss())
    a, b = data()
    history = model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    y = model((a, b)).numpy().astype(np.float64)
    test_case.assert_all_close(history.history["loss"][0],
                               np.mean(reference.siglip(y, 0.1, -3.0)))
    grad_bias, grad_scale = siglip_gradients(y, 0.1, -3.0)
    # The analytic gradients agree with finite differences of the reference.
    step = 1e-5
    loss_at = lambda s, c: np.mean(reference.siglip(y, np.exp(-s), c))  # noqa: E731
    s = math.log(10.0)
    np.testing.assert_allclose(
        grad_bias, (loss_at(s, -3.0 + step) - loss_at(s, -3.0 - step)) / (2 * step), rtol=1e-6)
    np.testing.assert_allclose(
        grad_scale, (loss_at(s + step, -3.0) - loss_at(s - step, -3.0)) / (2 * step), rtol=1e-6)
    assert abs(grad_bias) > 1e-2 and abs(grad_scale) > 1e-2
    test_case.assert_all_close(recorded(model, model.logit_bias), grad_bias)
    test_case.assert_all_close(recorded(model, model.temperature.log_scale), grad_scale)


def test_without_a_learnable_temperature_the_loss_temperature_is_used():
    model = build(learnable_temperature=False, bias=-2.0)
    model.compile(optimizer=GradientRecorder(), loss=losses.SigLIPLoss(temperature=0.5))
    a, b = data(seed=1)
    history = model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    y = model((a, b)).numpy()
    test_case.assert_all_close(history.history["loss"][0],
                               np.mean(reference.siglip(y, 0.5, -2.0)))
    test_case.assert_all_close(recorded(model, model.logit_bias),
                               siglip_gradients(y, 0.5, -2.0)[0])
    assert model.temperature is None and len(model.logit_weights) == 1


def test_learnable_temperature_alone_keeps_the_loss_bias():
    model = DualEncoder(*towers(), projection_dim=4, temperature=0.1)
    model.compile(optimizer=GradientRecorder(), loss=losses.SigLIPLoss(bias=-4.0))
    a, b = data(seed=2)
    history = model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    y = model((a, b)).numpy()
    assert model.logit_bias is None
    test_case.assert_all_close(history.history["loss"][0],
                               np.mean(reference.siglip(y, 0.1, -4.0)))
    test_case.assert_all_close(recorded(model, model.temperature.log_scale),
                               siglip_gradients(y, 0.1, -4.0)[1])


def test_learnable_bias_rejects_a_loss_that_is_not_siglip():
    model = build()
    y_pred = np.random.default_rng(0).normal(size=(4, 2, 4)).astype("float32")
    for loss in (losses.CLIPLoss(), "mse"):
        model.compile(optimizer="sgd", loss=loss)
        with pytest.raises(ValueError, match="learnable_bias=True.*SigLIPLoss"):
            model.compute_loss(y_pred=y_pred)


@pytest.mark.parametrize("bias,error", [(True, TypeError), ("-10", TypeError), (None, TypeError),
                                        (np.array([1.0]), TypeError), (float("nan"), ValueError),
                                        (float("-inf"), ValueError)])
def test_rejects_a_bias_that_is_not_a_finite_number(bias, error):
    with pytest.raises(error, match="`bias` must be a finite number"):
        DualEncoder(*towers(), projection_dim=4, learnable_bias=True, bias=bias)


def test_bias_is_a_weight_in_the_variable_dtype_with_its_exact_initial_value():
    model = build(bias=np.float32(-2.5))
    assert model.get_config()["bias"] == -2.5 and model.get_config()["learnable_bias"] is True
    assert model.logit_bias.dtype == "float32" and model.logit_bias.numpy() == -2.5
    assert model.logit_bias.path.endswith("logit_bias") and model.logit_bias.trainable
    with test_case.float64_config():
        model = build(bias=-0.1)  # not a float32 number
        assert model.logit_bias.dtype == "float64"
        assert model.logit_bias.numpy() == np.float64(-0.1)
    assert DualEncoder(*towers(), projection_dim=4).get_config()["learnable_bias"] is False


def roles(model):
    """The values of a decayed kernel, τ's log scale and b."""
    return {"kernel": model.projection_a.kernel.numpy(),
            "log_scale": model.temperature.log_scale.numpy(),
            "bias": model.logit_bias.numpy()}


@pytest.mark.parametrize("setup", ["sgd", "loss_scale", "grad_cache", "built_in_fit"])
def test_temperature_and_bias_are_kept_out_of_weight_decay(setup):
    """One SGD step with weight decay λ: a decayed kernel moves by -lr(g + λw),
    τ's log scale and b by exactly -lr·g (g from the NumPy reference)."""
    lr, decay = 0.1, 0.5
    a, b = data(seed=3)

    def fresh(built=True):
        keras.utils.set_random_seed(0)  # the same initial weights each time
        return build(built=built)

    def step(weight_decay):
        model = fresh(built=setup != "built_in_fit")
        trainer = GradCache(model, num_chunks=2) if setup == "grad_cache" else model
        optimizer = keras.optimizers.SGD(lr, weight_decay=weight_decay)
        if setup == "loss_scale":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trainer.compile(optimizer=optimizer, loss=losses.SigLIPLoss())
        assert model.built == (setup != "built_in_fit")
        trainer.fit((a, b), batch_size=8, shuffle=False, verbose=0)
        return roles(model)

    initial_model = fresh()
    initial = roles(initial_model)
    decayed, plain = step(decay), step(0.0)
    for name in ("bias", "log_scale"):
        assert decayed[name] != initial[name]  # the step moved it
        np.testing.assert_array_equal(decayed[name], plain[name])
    # SGD's decoupled decay, applied before the gradient step: -lr·λ·w.
    test_case.assert_all_close(decayed["kernel"] - plain["kernel"],
                               -lr * decay * initial["kernel"], rtol=1e-4)
    y = initial_model((a, b)).numpy()
    grad_bias, grad_scale = siglip_gradients(y, 0.1, -10.0)
    test_case.assert_all_close(decayed["bias"], -10.0 - lr * grad_bias)
    test_case.assert_all_close(decayed["log_scale"], math.log(10.0) - lr * grad_scale)


def test_a_string_optimizer_keeps_temperature_and_bias_out_of_weight_decay():
    """`"adamw"` (λ = 0.004, lr 0.001): Adam's first step is -lr·g/(|g| + ε)
    ≈ -lr·sign(g); decay would add -lr·λ·w = +4e-5 to b = -10."""
    keras.utils.set_random_seed(1)
    model = build()
    a, b = data(seed=6)
    grad_bias, grad_scale = siglip_gradients(model((a, b)).numpy(), 0.1, -10.0)
    model.compile(optimizer="adamw", loss=losses.SigLIPLoss())
    model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
    assert model.optimizer.weight_decay == 0.004
    lr = 0.001
    test_case.assert_all_close(model.logit_bias.numpy(), -10.0 - lr * np.sign(grad_bias),
                               rtol=1e-7, atol_scale=2e-7)
    test_case.assert_all_close(model.temperature.log_scale.numpy(),
                               math.log(10.0) - lr * np.sign(grad_scale), rtol=1e-6)


@pytest.mark.parametrize("excluded_by", ["var_list", "var_names", "var_list_compiled_twice"])
def test_prior_weight_decay_exclusions_are_kept(excluded_by):
    """`compile` adds τ and b to what the caller excluded, by variable or by
    name (Keras' own `exclude_from_weight_decay` would replace the caller's
    exclusions), also when the same optimizer is compiled again."""
    lr, decay = 0.1, 0.5
    a, b = data(seed=4)
    weights = build().get_weights()
    results = []  # the same model, decayed and not
    for weight_decay in (decay, 0.0):
        model = build()
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(lr, weight_decay=weight_decay)
        if excluded_by == "var_names":
            optimizer.exclude_from_weight_decay(var_names=["bias"])
        else:
            optimizer.exclude_from_weight_decay(var_list=[model.tower_a.layers[0].bias])
        model.compile(optimizer=optimizer, loss=losses.SigLIPLoss())
        if excluded_by == "var_list_compiled_twice":
            model.compile(optimizer=optimizer, loss=losses.SigLIPLoss())
        model.fit((a, b), batch_size=8, shuffle=False, verbose=0)
        dense = model.tower_a.layers[0]
        results.append({"tower_bias": dense.bias.numpy(), "tower_kernel": dense.kernel.numpy(),
                         **roles(model)})
    decayed, plain = results
    for name in ("tower_bias", "bias", "log_scale"):
        np.testing.assert_array_equal(decayed[name], plain[name])
    for name in ("tower_kernel", "kernel"):
        assert np.max(np.abs(decayed[name] - plain[name])) > 1e-3


def test_keras_file_round_trip_keeps_bias_predictions_and_loss(tmp_path):
    model = build(bias=-5.0)
    model.compile(optimizer=keras.optimizers.AdamW(0.05), loss=losses.SigLIPLoss(0.2, -1.0))
    a, b = data(seed=5)
    model.fit((a, b), batch_size=8, shuffle=False, verbose=0, epochs=2)
    assert abs(model.logit_bias.numpy() + 5.0) > 1e-2  # trained away from its start
    path = str(tmp_path / "siglip.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored.loss, losses.SigLIPLoss)
    assert restored.loss.bias == -1.0 and restored.loss.temperature == 0.2
    assert restored.learnable_bias and restored.initial_bias == -5.0
    np.testing.assert_array_equal(restored.logit_bias.numpy(), model.logit_bias.numpy())
    np.testing.assert_array_equal(restored.temperature.log_scale.numpy(),
                                  model.temperature.log_scale.numpy())
    np.testing.assert_array_equal(restored.predict((a, b), verbose=0),
                                  model.predict((a, b), verbose=0))
    expected = model.evaluate((a, b), batch_size=8, verbose=0)
    assert restored.evaluate((a, b), batch_size=8, verbose=0) == expected
    y = model((a, b)).numpy()
    test_case.assert_all_close(
        expected, np.mean(reference.siglip(y, float(model.temperature()),
                                           float(model.logit_bias.numpy()))))
