"""SigLIPLoss specifics: pair ids, the temperature and bias gradients (dense
and tiled), replicas with learnable hyperparameters, a hand derivation and
the `bias` checks. The shared cases (NumPy reference without ids, embedding
gradients, replicas, fit, precision, large logits) are in
contrastive_loss_test.py, tiled_test.py and float64_test.py."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference

IDS = np.array([0, 1, 2, 1, 3, 0, 4, 4])


def embeddings(batch, dim=4, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(batch, 2, dim))).astype("float32")


def mean_loss_and_gradients(y, temperature, bias, labels=None, tile_size=None):
    """The reduced loss and its gradients with respect to y, τ and b."""
    y = tf.constant(y)
    temperature, bias = tf.Variable(temperature), tf.Variable(bias)
    loss = losses.SigLIPLoss(tile_size=tile_size)
    with tf.GradientTape() as tape:
        tape.watch(y)
        value = loss(labels, y, temperature=temperature, bias=bias)
    gradients = tape.gradient(value, [y, temperature, bias])
    return [value.numpy()] + [g.numpy() for g in gradients]


def central_difference(function, x, step=1e-6):
    return (function(x + step) - function(x - step)) / (2 * step)


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_pair_ids_match_numpy_reference(batch):
    y = embeddings(batch, seed=batch)
    ids = np.random.default_rng(batch).integers(0, max(2, batch // 2), size=batch)
    values = losses.siglip_loss(ids, y, temperature=0.3, bias=-1.5)
    test_case.assert_all_close(values, reference.siglip(y, 0.3, -1.5, labels=ids))


def test_defaults_are_siglip_initialisation():
    loss = losses.SigLIPLoss()
    assert (loss.temperature, loss.bias) == (0.1, -10.0)
    y = embeddings(6, seed=1)
    test_case.assert_all_close(loss(None, y), np.mean(reference.siglip(y, 0.1, -10.0)))


def test_hand_derivation_for_orthonormal_pairs():
    # x_i = y_i = e_i: the pairs' logit is 1/τ + b, every other logit is b, so
    # L_i = softplus(-(1/τ + b)) + (N - 1) softplus(b).
    y = np.stack([np.eye(3), np.eye(3)], axis=1).astype("float32")
    tau, bias = 0.5, -1.0
    expected = np.log1p(np.exp(-(1 / tau + bias))) + 2 * np.log1p(np.exp(bias))
    test_case.assert_all_close(losses.siglip_loss(None, y, tau, bias), [expected] * 3)


@pytest.mark.parametrize("labels", [None, IDS], ids=["diagonal", "pair_ids"])
@pytest.mark.parametrize("tile_size", [None, 3])
def test_temperature_and_bias_gradients_match_finite_differences(labels, tile_size):
    y = embeddings(8, dim=3, seed=2)
    tau, bias = 0.25, -3.0
    value, grad_y, grad_tau, grad_bias = mean_loss_and_gradients(y, tau, bias, labels, tile_size)

    def mean_reference(y_=y, tau_=tau, bias_=bias):
        return np.mean(reference.siglip(y_, tau_, bias_, labels=labels))

    test_case.assert_all_close(value, mean_reference())
    numeric_y = reference.numeric_gradient(lambda y_: mean_reference(y_=y_), y)
    test_case.assert_all_close(grad_y, numeric_y, rtol=1e-4, atol_scale=1e-5)
    test_case.assert_all_close(
        grad_tau, central_difference(lambda t: mean_reference(tau_=t), tau), rtol=1e-5)
    test_case.assert_all_close(
        grad_bias, central_difference(lambda b: mean_reference(bias_=b), bias), rtol=1e-5)


@pytest.mark.parametrize("tile_size", [1, 3, 8, 64])
def test_tiled_hyperparameter_gradients_equal_dense(tile_size):
    # 8 columns: tiles of 3 leave a partial tile, 8 divides, 64 is one tile.
    y = embeddings(8, dim=16, seed=3)
    dense = mean_loss_and_gradients(y, 0.2, -4.0, IDS)
    tiled = mean_loss_and_gradients(y, 0.2, -4.0, IDS, tile_size)
    for actual, expected in zip(tiled, dense):
        test_case.assert_all_close(actual, expected)


def _replica_gradients(num_replicas, y, labels, sizes, tile_size):
    """Loss (summed over replicas) and gradients of y, τ and b under a strategy."""
    strategy = test_case.strategy(num_replicas)
    with strategy.scope():
        temperature, bias = tf.Variable(0.3), tf.Variable(-2.0)
    loss = losses.SigLIPLoss(tile_size=tile_size)
    local_y = test_case.split_per_replica(strategy, y, sizes)
    local_labels = test_case.split_per_replica(strategy, labels.astype("int32"), sizes)

    @tf.function
    def step(local_y, local_labels):
        def replica_fn(local_y, local_labels):
            with tf.GradientTape() as tape:
                tape.watch(local_y)
                value = loss(local_labels, local_y, temperature=temperature, bias=bias)
            grad_y, grad_tau, grad_bias = tape.gradient(value, [local_y, temperature, bias])
            return value, grad_y, grad_tau, grad_bias

        return strategy.run(replica_fn, args=(local_y, local_labels))

    value, grad_y, grad_tau, grad_bias = step(local_y, local_labels)
    value, grad_y = test_case.summed_value_and_gradient(strategy, value, grad_y)
    return (value, grad_y, strategy.reduce("SUM", grad_tau, axis=None).numpy(),
            strategy.reduce("SUM", grad_bias, axis=None).numpy())


@pytest.mark.parametrize("num_replicas,sizes,tile_size", [
    (2, None, None), (4, [5, 4, 3, 2], 4),
    pytest.param(4, None, 3, marks=pytest.mark.slow),
    pytest.param(4, [5, 4, 3, 2], None, marks=pytest.mark.slow)])
def test_replicas_with_pair_ids_and_learnable_hyperparameters_equal_one_device(
        num_replicas, sizes, tile_size):
    y = embeddings(14 if sizes else 16, seed=5)
    labels = np.random.default_rng(5).integers(0, 6, size=len(y))
    expected = _replica_gradients(1, y, labels, None, None)
    actual = _replica_gradients(num_replicas, y, labels, sizes, tile_size)
    for a, e in zip(actual, expected):
        test_case.assert_all_close(a, e)
    test_case.assert_all_close(expected[0], np.mean(reference.siglip(y, 0.3, -2.0, labels)))


def test_large_logits_and_bias_stay_finite_and_tiled_equals_dense():
    y = embeddings(6, seed=6, scale=30.0)
    dense = losses.SigLIPLoss(0.1, bias=100.0, normalize=False)
    tiled = losses.SigLIPLoss(0.1, bias=100.0, normalize=False, tile_size=4)
    y_tensor = tf.constant(y)
    results = []
    for loss in (dense, tiled):
        with tf.GradientTape() as tape:
            tape.watch(y_tensor)
            value = loss(None, y_tensor)
        results.append((value.numpy(), tape.gradient(value, y_tensor).numpy()))
    logits = np.abs(y[:, 0] @ y[:, 1].T) / 0.1
    assert logits.max() > 5e3
    assert all(np.all(np.isfinite(r)) for pair in results for r in pair)
    test_case.assert_all_close(results[1][0], results[0][0])
    test_case.assert_all_close(results[1][1], results[0][1])


BAD_BIASES = [
    (True, TypeError), (np.bool_(False), TypeError), ("-10", TypeError), (None, TypeError),
    ([1.0], TypeError), (float("nan"), ValueError), (float("inf"), ValueError),
]


@pytest.mark.parametrize("value,error", BAD_BIASES, ids=repr)
def test_rejects_bad_bias(value, error):
    with pytest.raises(error, match="`bias`"):
        losses.SigLIPLoss(bias=value)
    with pytest.raises(error, match="`bias`"):
        losses.siglip_loss(None, embeddings(4), bias=value)
    if value is not None:  # bias=None at call time keeps the configured bias
        with pytest.raises(error, match="`bias`"):
            losses.SigLIPLoss()(None, embeddings(4), bias=value)


@pytest.mark.parametrize("value", [tf.ones([2]), tf.constant(["x"])[0],
                                   tf.constant(float("nan"))], ids=["vector", "string", "nan"])
def test_rejects_bad_bias_tensor(value):
    with pytest.raises((TypeError, ValueError), match="`bias`"):
        losses.SigLIPLoss()(None, embeddings(4), bias=value)


def test_rejects_tensor_bias_in_constructor():
    with pytest.raises(TypeError, match="pass a tensor at call time"):
        losses.SigLIPLoss(bias=tf.constant(-10.0))


def test_run_time_non_finite_bias_is_asserted():
    bias = tf.Variable(float("inf"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`bias` must be finite"):
        tf.function(lambda y: losses.SigLIPLoss()(None, y, bias=bias))(embeddings(4))


def test_call_time_bias_none_keeps_the_configured_bias():
    y = embeddings(5, seed=7)
    loss = losses.SigLIPLoss(0.2, bias=-1.0)
    test_case.assert_all_close(loss(None, y, bias=None), loss(None, y))
    test_case.assert_all_close(loss(None, y), np.mean(reference.siglip(y, 0.2, -1.0)))


def test_other_losses_reject_a_bias():
    with pytest.raises(TypeError, match=r"CLIPLoss takes no call argument \['bias'\]"):
        losses.CLIPLoss()(None, embeddings(4), bias=-10.0)


@pytest.mark.parametrize("tile_size", [0, -2, 1.5, True, "4"])
def test_rejects_bad_tile_size(tile_size):
    with pytest.raises(ValueError, match="`tile_size` must be None"):
        losses.SigLIPLoss(tile_size=tile_size)
    with pytest.raises(ValueError, match="`tile_size`"):
        losses.siglip_loss(None, embeddings(4), tile_size=tile_size)
