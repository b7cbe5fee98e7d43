"""Behaviour shared by every loss: NumPy reference, exactness across
replicas (directly and through `fit`), serialization, precision, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference
from tests.losses.cases import CASES
from tests.losses.cases import fast_cases


def random_embeddings(batch, views, dim=8, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(batch, views, dim))).astype("float32")


def per_sample_and_gradient(loss, y):
    y = tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch(y)
        values = loss.contrast(None, y, loss.temperature)
        total = tf.reduce_sum(values)
    return values.numpy(), tape.gradient(total, y).numpy()


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("batch", [2, 5, 16])
def test_matches_numpy_reference(case, batch):
    y = random_embeddings(batch, case.views, seed=batch)
    values, _ = per_sample_and_gradient(case.make(), y)
    assert values.shape == (batch,)
    test_case.assert_all_close(values, case.reference(y))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_gradient_matches_finite_differences(case):
    y = random_embeddings(4, case.views, dim=3, seed=7)
    _, gradient = per_sample_and_gradient(case.make(), y)
    expected = reference.numeric_gradient(case.reference, y)
    if case.views == 4:
        # Keys are stop-gradient: only the queries get a gradient.
        np.testing.assert_array_equal(gradient[:, 2:], 0.0)
        gradient, expected = gradient[:, :2], expected[:, :2]
    test_case.assert_all_close(gradient, expected, rtol=1e-4, atol_scale=1e-5)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_reduced_value_is_mean_of_per_sample_losses(case):
    y = random_embeddings(6, case.views)
    loss = case.make()
    test_case.assert_all_close(loss(None, y).numpy(), np.mean(case.reference(y)))
    weights = np.arange(6, dtype="float32")
    test_case.assert_all_close(
        loss(None, y, sample_weight=weights).numpy(),
        np.sum(weights * case.reference(y)) / 6,
    )


def distributed_loss_and_gradient(loss, y, num_replicas, sizes=None):
    """Reduced loss (summed over replicas, as Keras' optimizer sums their
    gradients) and d(loss)/d(y) assembled from every replica."""
    strategy = test_case.strategy(num_replicas)
    if num_replicas == 1:
        y = tf.constant(y)
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = loss(None, y)
        return value.numpy(), tape.gradient(value, y).numpy()
    distributed_y = test_case.split_per_replica(strategy, y, sizes)
    values, gradients = test_case.replica_loss_step(strategy, loss)(distributed_y)
    return test_case.summed_value_and_gradient(strategy, values, gradients)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("num_replicas", [1, 2, 4])
def test_replicas_equal_one_device(case, num_replicas):
    y = random_embeddings(16, case.views, seed=3)
    loss = case.make()
    expected_value, expected_gradient = distributed_loss_and_gradient(loss, y, 1)
    value, gradient = distributed_loss_and_gradient(loss, y, num_replicas)
    test_case.assert_all_close(value, expected_value)
    test_case.assert_all_close(gradient, expected_gradient)
    test_case.assert_all_close(expected_value, np.mean(case.reference(y)))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_uneven_replica_batches_stay_exact(case):
    # The last batch of an epoch: 14 samples over 4 replicas as 5, 4, 3, 2.
    y = random_embeddings(14, case.views, seed=11)
    loss = case.make()
    expected_value, expected_gradient = distributed_loss_and_gradient(loss, y, 1)
    value, gradient = distributed_loss_and_gradient(loss, y, 4, sizes=[5, 4, 3, 2])
    test_case.assert_all_close(value, expected_value)
    test_case.assert_all_close(gradient, expected_gradient)


def build_encoder(views, seed=0):
    """A two-layer encoder applied to each view: (batch, views, 6) → (batch, views, 8)."""
    inputs = keras.Input((views, 6))
    hidden = keras.layers.Dense(
        16, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)
    )(inputs)
    outputs = keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
    )(hidden)
    return keras.Model(inputs, outputs)


def fit_one_step(case, num_replicas, x, initial_weights):
    with test_case.strategy(num_replicas).scope():
        model = build_encoder(case.views)
        model.set_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=case.make())
    history = model.fit(x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return model.get_weights(), history.history["loss"][0]


# One fit per loss family runs in `make test`; the value/gradient tests above
# cover every case, and the other fits run under `slow`.
@pytest.mark.parametrize(
    "case",
    fast_cases(),
    ids=repr,
)
def test_fit_four_replicas_equals_one_device(case):
    x = np.random.default_rng(5).normal(size=(32, case.views, 6)).astype("float32")
    initial_weights = build_encoder(case.views).get_weights()
    single_weights, single_loss = fit_one_step(case, 1, x, initial_weights)
    replica_weights, replica_loss = fit_one_step(case, 4, x, initial_weights)
    for initial, single in zip(initial_weights, single_weights):
        assert np.max(np.abs(single - initial)) > 1e-4  # the step did something
    for single, replicated in zip(single_weights, replica_weights):
        test_case.assert_all_close(replicated, single)
    test_case.assert_all_close(replica_loss, single_loss)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_config_round_trip(case):
    loss = case.make()
    restored = test_case.serialization_round_trip(loss)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y = random_embeddings(5, case.views)
    test_case.assert_all_close(restored(None, y), loss(None, y))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_compiled_model_keras_file_round_trip(case):
    model = build_encoder(case.views)
    model.compile(optimizer="adam", loss=case.make())
    restored = test_case.keras_file_round_trip(model)
    assert type(restored.loss) is type(model.loss)
    assert restored.loss.get_config() == model.loss.get_config()
    x = np.random.default_rng(1).normal(size=(8, case.views, 6)).astype("float32")
    test_case.assert_all_close(restored.evaluate(x, verbose=0), model.evaluate(x, verbose=0))


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("dtype,rtol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_half_precision_inputs(case, dtype, rtol):
    y = random_embeddings(8, case.views, seed=2)
    loss = case.make()
    half = tf.cast(tf.constant(y), dtype)
    with tf.GradientTape() as tape:
        tape.watch(half)
        value = loss(None, half)
    gradient = tape.gradient(value, half)
    assert value.dtype == tf.float32
    assert gradient.dtype == tf.as_dtype(dtype)
    assert np.all(np.isfinite(tf.cast(gradient, tf.float32).numpy()))
    rounded = tf.cast(half, tf.float32).numpy()
    test_case.assert_all_close(value.numpy(), np.mean(case.reference(rounded)), rtol=rtol)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_fit_under_mixed_precision_policy(case, policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_encoder(case.views)
        model.compile(optimizer="adam", loss=case.make())
        x = np.random.default_rng(4).normal(size=(16, case.views, 6)).astype("float32")
        history = model.fit(x, batch_size=8, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_large_logits_stay_finite(case):
    # normalize=False with |y| ~ 30 gives logits up to ~±1e4 at τ = 0.1 … 0.3.
    config = case.make().get_config()
    config["normalize"] = False
    loss = type(case.make()).from_config(config)
    y = random_embeddings(6, case.views, dim=8, seed=9, scale=30.0)
    values, gradient = per_sample_and_gradient(loss, y)
    logits = np.abs(np.einsum("id,jd->ij", y[:, 0], y[:, 1])) / loss.temperature
    assert logits.max() > 5e3
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(gradient))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_without_labels(case):
    model = build_encoder(case.views)
    model.compile(optimizer="sgd", loss=case.make())
    x = np.random.default_rng(0).normal(size=(12, case.views, 6)).astype("float32")
    history = model.fit(x, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_rejects_bad_shapes(case):
    loss = case.make()
    with pytest.raises(ValueError, match="rank 3"):
        loss(None, np.zeros((4, 8), "float32"))
    with pytest.raises(ValueError, match="views"):
        loss(None, np.zeros((4, case.views + 1, 8), "float32"))
    with pytest.raises(ValueError, match="one sample"):
        loss(None, random_embeddings(1, case.views))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_rejects_non_positive_temperature(case):
    kind = type(case.make())
    with pytest.raises(ValueError, match="temperature"):
        kind(temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        kind(temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        case.make()(None, random_embeddings(4, case.views), temperature=0.0)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_nan_embeddings_fail_loudly_in_graph(case):
    loss = case.make()
    y = random_embeddings(4, case.views)
    y[1, 0, 2] = np.nan

    @tf.function
    def compute(y):
        return loss(None, y)

    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        compute(tf.constant(y))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_dynamic_batch_of_one_fails_loudly(case):
    loss = case.make()

    @tf.function(input_signature=[tf.TensorSpec((None, case.views, 8), tf.float32)])
    def compute(y):
        return loss(None, y)

    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than 2 samples"):
        compute(tf.constant(random_embeddings(1, case.views)))


def test_negative_temperature_tensor_fails_loudly():
    y = random_embeddings(4, 2)
    # Known when tracing (an eager tensor): a static error.
    with pytest.raises(ValueError, match="`temperature`"):
        losses.CLIPLoss()(None, y, temperature=tf.constant(-0.5))
    # Known only at run time (a variable): the run-time assert.
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
        losses.CLIPLoss()(None, y, temperature=tf.Variable(-0.5))


def test_rejects_unknown_negatives():
    with pytest.raises(ValueError, match="negatives"):
        losses.InfoNCE(negatives="some")
    with pytest.raises(ValueError, match="negatives"):
        losses.info_nce(None, random_embeddings(4, 2), negatives="other")
