"""The tiled losses (`tile_size=`) equal the dense ones: values, gradients
(embeddings and temperature), labels, 1 and 4 replicas, `fit`, GradCache,
half precision; and their graphs hold no `(batch, N)` logits."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.losses import tiled
from keras_contrast.training import GradCache
from tests import test_case
from tests.losses.cases import CASES
from tests.losses.cases import fast_cases
from tests.losses.contrastive_loss_test import build_encoder
from tests.losses.contrastive_loss_test import distributed_loss_and_gradient
from tests.losses.contrastive_loss_test import fit_one_step
from tests.losses.contrastive_loss_test import random_embeddings

LABELLED = [case for case in CASES if case.name.startswith(("infonce", "dcl_", "clip", "siglip"))]


def with_tile(loss, tile_size, **overrides):
    return type(loss).from_config({**loss.get_config(), "tile_size": tile_size, **overrides})


def values_and_gradients(loss, y, labels=None, temperature=None):
    """Per-sample losses, and the gradients of a weighted sum (so every
    sample's gradient path is checked with a different weight) with respect
    to the embeddings and the temperature."""
    y = tf.constant(y)
    temperature = tf.constant(loss.temperature if temperature is None else temperature)
    with tf.GradientTape() as tape:
        tape.watch([y, temperature])
        values = loss.contrast(labels, y, temperature)
        total = tf.reduce_sum(values * tf.range(1.0, 1.0 + values.shape[0]))
    gradient_y, gradient_temperature = tape.gradient(total, [y, temperature])
    return values.numpy(), gradient_y.numpy(), gradient_temperature.numpy()


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("tile_size", [1, 5, 13, 64])
def test_tiled_equals_dense(case, tile_size):
    # 13 samples: 26 columns ("all") or 13 ("cross"); tiles of 5 leave a
    # partial last tile, 13 divides exactly, 64 is one tile, 1 is per column.
    y = random_embeddings(13, case.views, dim=16, seed=4)
    dense = case.make()
    expected = values_and_gradients(dense, y)
    actual = values_and_gradients(with_tile(dense, tile_size), y)
    assert actual[0].shape == (13,)
    for a, e in zip(actual, expected):
        test_case.assert_all_close(a, e)
    assert np.abs(expected[2]) > 0  # the temperature gradient is checked


@pytest.mark.parametrize("case", LABELLED, ids=repr)
@pytest.mark.parametrize("tile_size", [4, 32])
def test_tiled_with_class_labels_equals_dense(case, tile_size):
    y = random_embeddings(12, case.views, dim=16, seed=6)
    labels = tf.constant([0, 1, 2, 0, 1, 7, 7, 2, 0, 3, 1, 1])
    dense = case.make()
    expected = values_and_gradients(dense, y, labels)
    actual = values_and_gradients(with_tile(dense, tile_size), y, labels)
    for a, e in zip(actual, expected):
        test_case.assert_all_close(a, e)


# Four loss families run in `make test` (the one-device tiled-vs-dense tests
# above cover every case); the other four run under `slow`.
@pytest.mark.parametrize(
    "case",
    fast_cases(),
    ids=repr,
)
def test_four_replicas_tiled_equal_one_device_dense(case):
    y = random_embeddings(16, case.views, seed=3)
    dense = case.make()
    expected_value, expected_gradient = distributed_loss_and_gradient(dense, y, 1)
    tiled_loss = with_tile(dense, 6)
    value, gradient = distributed_loss_and_gradient(tiled_loss, y, 4)
    test_case.assert_all_close(value, expected_value)
    test_case.assert_all_close(gradient, expected_gradient)
    # Uneven replica batches (the last batch of an epoch).
    value, gradient = distributed_loss_and_gradient(tiled_loss, y[:14], 4, sizes=[5, 4, 3, 2])
    expected_value, expected_gradient = distributed_loss_and_gradient(dense, y[:14], 1)
    test_case.assert_all_close(value, expected_value)
    test_case.assert_all_close(gradient, expected_gradient)


class _TiledCase:
    """A loss case whose loss is tiled (for `fit_one_step`)."""

    def __init__(self, case, tile_size):
        self.views = case.views
        self.make = lambda: with_tile(case.make(), tile_size)


# InfoNCE's and CLIP's tiled gathers run in `make test`; DCLW and MoCo v3
# under `slow` (their dense four-replica fits run in contrastive_loss_test,
# their tiled == dense values and gradients in this file's faster tests).
@pytest.mark.parametrize(
    "case", [c if c.name in ("infonce_all", "clip") else pytest.param(c, marks=pytest.mark.slow)
             for c in CASES if c.name in ("infonce_all", "dclw_all", "clip", "mocov3")],
    ids=repr)
def test_fit_four_replicas_tiled_equals_one_device_dense(case):
    x = np.random.default_rng(5).normal(size=(32, case.views, 6)).astype("float32")
    initial_weights = build_encoder(case.views).get_weights()
    dense_weights, dense_loss = fit_one_step(case, 1, x, initial_weights)
    tiled_weights, tiled_loss = fit_one_step(_TiledCase(case, 7), 4, x, initial_weights)
    for dense, tiled_weight, initial in zip(dense_weights, tiled_weights, initial_weights):
        assert np.max(np.abs(dense - initial)) > 1e-4
        test_case.assert_all_close(tiled_weight, dense)
    test_case.assert_all_close(tiled_loss, dense_loss)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_grad_cache_with_tiled_loss_equals_native_dense(num_replicas):
    x = np.random.default_rng(1).normal(size=(16, 2, 6)).astype("float32")
    weights = build_encoder(2).get_weights()

    def make_model():
        model = build_encoder(2)
        model.set_weights(weights)
        return model

    native = make_model()
    native.compile(optimizer=test_case.GradientRecorder(), loss=losses.DCLW(0.2))
    native.fit(x, batch_size=16, shuffle=False, verbose=0)
    with test_case.strategy(num_replicas).scope():
        cached = GradCache(make_model(), num_chunks=2)
        cached.compile(optimizer=test_case.GradientRecorder(),
                       loss=losses.DCLW(0.2, tile_size=5))
    cached.fit(x, batch_size=16, shuffle=False, verbose=0)
    for a, e in zip(cached.optimizer.gradients(), native.optimizer.gradients()):
        assert np.max(np.abs(e)) > 0
        test_case.assert_all_close(a, e)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("dtype,rtol", [("float16", 1e-5), ("bfloat16", 1e-5)])
def test_half_precision_inputs_tiled_equal_dense(case, dtype, rtol):
    # Both paths compute in float32 from the same rounded inputs, so they
    # agree to float32 precision; the gradient is cast back to `dtype`.
    half = tf.cast(tf.constant(random_embeddings(8, case.views, seed=2)), dtype)
    results = []
    for loss in (case.make(), with_tile(case.make(), 3)):
        with tf.GradientTape() as tape:
            tape.watch(half)
            value = loss(None, half)
        gradient = tape.gradient(value, half)
        assert value.dtype == tf.float32 and gradient.dtype == tf.as_dtype(dtype)
        results.append((value.numpy(), tf.cast(gradient, tf.float32).numpy()))
    test_case.assert_all_close(results[1][0], results[0][0], rtol=rtol)
    # One half-precision ulp of difference in a gradient entry is allowed.
    ulp = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=ulp,
                               atol=ulp * np.abs(results[0][1]).max())


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_large_logits_stay_finite_and_equal_dense(case):
    config = {**case.make().get_config(), "normalize": False}
    dense = type(case.make()).from_config(config)
    y = random_embeddings(6, case.views, dim=8, seed=9, scale=30.0)
    expected = values_and_gradients(dense, y)
    actual = values_and_gradients(with_tile(dense, 4), y)
    for a, e in zip(actual[:2], expected[:2]):
        assert np.all(np.isfinite(a))
        test_case.assert_all_close(a, e)
    # ∂L/∂τ is a difference of terms of the size of the weighted loss
    # (~1e5 here; MoCo v3's 2τ·CE barely depends on τ at such logits), so
    # it is compared at float32 precision of those terms.
    scale = np.sum(np.arange(1, 7) * np.abs(expected[0]))
    assert np.isfinite(actual[2])
    assert abs(actual[2] - expected[2]) <= 1e-6 * max(scale, abs(expected[2]))


def test_tiled_logsumexp_equals_numpy_with_exclusions():
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(5, 4)).astype("float32")
    candidates = rng.normal(size=(11, 4)).astype("float32")
    excluded = [np.array([0, 3, 10, 2, 4], np.int32), np.array([1, 3, 9, 2, 5], np.int32)]
    labels_a = np.array([1, 2, 1, 0, 3], np.int32)
    labels_c = rng.integers(0, 3, 11).astype(np.int32)
    for labelled in (False, True):
        logits = anchors.astype(np.float64) @ candidates.T / 0.5
        mask = np.zeros_like(logits, bool)
        for columns in excluded:
            mask[np.arange(5), columns] = True
        if labelled:
            mask |= labels_a[:, None] == labels_c[None, :]
        expected = np.log(np.where(mask, 0.0, np.exp(logits)).sum(axis=1))
        actual = tiled.tiled_logsumexp(
            tf.constant(anchors), tf.constant(candidates), tf.constant(0.5), excluded, 4,
            anchor_labels=tf.constant(labels_a) if labelled else None,
            candidate_labels=tf.constant(labels_c) if labelled else None)
        test_case.assert_all_close(actual.numpy(), expected)


def test_row_with_every_column_excluded_is_minus_infinity_with_zero_gradient():
    anchors = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    candidates = tf.constant([[1.0, 0.0], [0.5, 0.5]])
    excluded = [tf.constant([0, 0]), tf.constant([1, 0])]
    with tf.GradientTape() as tape:
        tape.watch(anchors)
        result = tiled.tiled_logsumexp(anchors, candidates, tf.constant(1.0), excluded, 1)
        total = tf.reduce_sum(tf.where(tf.math.is_finite(result), result, 0.0))
    assert result.numpy()[0] == -np.inf
    np.testing.assert_allclose(result.numpy()[1], 0.5, rtol=1e-6)
    gradient = tape.gradient(total, anchors).numpy()
    np.testing.assert_allclose(gradient, [[0.0, 0.0], [0.5, 0.5]], rtol=1e-6)


def _largest_static_tensor(loss, batch, dim=8):
    """The largest number of elements of any tensor in the outer graph of
    the loss's value-and-gradient function (while-loop bodies excluded)."""
    y_spec = tf.TensorSpec((batch, 2, dim), tf.float32)

    @tf.function(input_signature=[y_spec])
    def value_and_gradient(y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = loss(None, y)
        return value, tape.gradient(value, y)

    graph = value_and_gradient.get_concrete_function().graph
    sizes = [output.shape.num_elements() or 0 for op in graph.get_operations()
             for output in op.outputs if output.shape.is_fully_defined()]
    return max(sizes)


@pytest.mark.parametrize("make", [losses.InfoNCE, losses.DCLW, losses.CLIPLoss,
                                  losses.SigLIPLoss])
def test_tiled_graph_holds_no_batch_by_batch_tensor(make):
    batch = 128  # the largest other tensors: (2·batch, dim) candidates, (batch, 8) tiles
    assert _largest_static_tensor(make(), batch) >= batch * batch  # the dense logits
    assert _largest_static_tensor(make(tile_size=8), batch) < batch * batch // 4


@pytest.mark.parametrize("tile_size", [0, -3, 2.5, True, "8"])
def test_rejects_bad_tile_size(tile_size):
    with pytest.raises(ValueError, match="`tile_size` must be None"):
        losses.InfoNCE(tile_size=tile_size)
    with pytest.raises(ValueError, match="`tile_size`"):
        tiled.tiled_logsumexp(tf.ones((2, 2)), tf.ones((3, 2)), tf.constant(1.0), [], tile_size)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_tile_size_in_config_and_keras_file(case):
    loss = with_tile(case.make(), 16)
    assert loss.get_config()["tile_size"] == 16
    restored = test_case.serialization_round_trip(loss)
    assert restored.get_config() == loss.get_config()
    model = build_encoder(case.views)
    model.compile(optimizer="adam", loss=loss)
    reloaded = test_case.keras_file_round_trip(model)
    assert reloaded.loss.get_config()["tile_size"] == 16
    x = np.random.default_rng(1).normal(size=(8, case.views, 6)).astype("float32")
    test_case.assert_all_close(reloaded.evaluate(x, verbose=0), model.evaluate(x, verbose=0))
    assert keras.saving.get_registered_name(type(loss)).startswith("keras_contrast")
