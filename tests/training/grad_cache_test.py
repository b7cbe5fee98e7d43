"""GradCache: the chunked step equals the native big-batch step (gradients,
weights, logged loss), on 1 and 2 replicas, with dropout, BatchNorm, a
learnable temperature (CLIP; SigLIP's with its learnable bias) and an
i.i.d. loss; errors; serialization."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from keras_contrast import losses
from keras_contrast import models
from keras_contrast.training import GradCache
from tests import test_case

LOSSES = {
    "infonce": lambda: losses.InfoNCE(0.1),
    "dcl": lambda: losses.DCL(0.1),
    "dclw": lambda: losses.DCLW(0.1),
    "clip": lambda: losses.CLIPLoss(0.07),
}


GradientRecorder = test_case.GradientRecorder


def build_encoder(seed=0, dropout=None, norm=None, output_rank=3):
    """(batch, 2, 6) → Dense(16, tanh) → [norm] → [dropout] → Dense(8)."""
    inputs = keras.Input((2, 6))
    hidden = keras.layers.Dense(
        16, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)
    )(inputs)
    if norm is not None:
        hidden = norm()(hidden)
    if dropout is not None:
        hidden = keras.layers.Dropout(dropout, seed=seed + 7)(hidden)
    outputs = keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
    )(hidden)
    if output_rank == 2:
        outputs = keras.layers.Flatten()(outputs)
    return keras.Model(inputs, outputs)


def random_views(batch, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 2, 6)).astype("float32")


def native_step(make_model, make_loss, x, optimizer, y=None):
    """One `fit` step of the plain model on the whole batch, one device."""
    model = make_model()
    model.compile(optimizer=optimizer, loss=make_loss())
    history = model.fit(x, y, batch_size=len(x), shuffle=False, verbose=0)
    return model, history.history["loss"][0]


def grad_cache_step(make_model, make_loss, x, optimizer, num_replicas=1, y=None, **kwargs):
    """One `fit` step of GradCache(make_model()) on the whole batch."""
    kwargs.setdefault("num_chunks", 2)
    with test_case.strategy(num_replicas).scope():
        model = GradCache(make_model(), **kwargs)
        model.compile(optimizer=optimizer(), loss=make_loss())
    history = model.fit(x, y, batch_size=len(x), shuffle=False, verbose=0)
    return model, history.history["loss"][0]


def assert_gradients_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert np.max(np.abs(e)) > 0  # every weight gets a gradient
        test_case.assert_all_close(a, e)


@functools.lru_cache(maxsize=None)
def native_gradients(loss_name):
    """Gradients and loss of the native one-device step, shared by the
    replica counts (encoder seed 0, `random_views(16, seed=1)`)."""
    weights = build_encoder().get_weights()

    def make_model():
        model = build_encoder()
        model.set_weights(weights)
        return model

    native, loss = native_step(make_model, LOSSES[loss_name], random_views(16, seed=1),
                               GradientRecorder())
    return native.optimizer.gradients(), loss


# One device (slow, but for InfoNCE) is the easier case of 2 replicas.
@pytest.mark.parametrize("loss_name,num_replicas", [
    (name, replicas) if replicas == 2 or name == "infonce"
    else pytest.param(name, replicas, marks=pytest.mark.slow)
    for name in LOSSES for replicas in (1, 2)])
def test_gradient_equals_native_big_batch(loss_name, num_replicas):
    x = random_views(16, seed=1)
    make_loss = LOSSES[loss_name]
    expected, native_loss = native_gradients(loss_name)
    cached, cached_loss = grad_cache_step(
        build_encoder, make_loss, x, GradientRecorder, num_replicas, num_chunks=2
    )
    assert_gradients_close(cached.optimizer.gradients(), expected)
    # The logged loss is the true loss of the whole batch, not the surrogate.
    test_case.assert_all_close(cached_loss, native_loss)


@pytest.mark.parametrize("num_replicas,num_chunks", [(2, 2), (1, 3)])
def test_weights_after_sgd_step_equal_native(num_replicas, num_chunks):
    # num_chunks=3 on 16 samples: chunks of 6, 5, 5 (the remainder rule).
    x = random_views(16, seed=2)
    weights = build_encoder().get_weights()

    def make_model():
        model = build_encoder()
        model.set_weights(weights)
        return model

    def sgd():
        return keras.optimizers.SGD(0.5)

    native, _ = native_step(make_model, LOSSES["infonce"], x, sgd())
    cached, _ = grad_cache_step(
        make_model, LOSSES["infonce"], x, sgd, num_replicas, num_chunks=num_chunks
    )
    for initial, expected, actual in zip(weights, native.get_weights(), cached.get_weights()):
        assert np.max(np.abs(expected - initial)) > 1e-3  # the step did something
        test_case.assert_all_close(actual, expected)


class TemperatureEncoder(keras.Model):
    """Encoder + learnable temperature fed to the loss by `compute_loss`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = build_encoder()
        self.temperature = layers.LearnableTemperature(0.1)

    def call(self, inputs, training=None):
        return self.encoder(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.loss(y, y_pred, sample_weight, temperature=self.temperature())


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_learnable_temperature_gets_its_exact_gradient(num_replicas):
    x = random_views(16, seed=3)
    weights = None

    def make_model():
        model = TemperatureEncoder()
        model.build((None, 2, 6))
        if weights is not None:
            model.set_weights(weights)
        return model

    weights = make_model().get_weights()
    native, native_loss = native_step(make_model, losses.CLIPLoss, x, GradientRecorder())
    cached, cached_loss = grad_cache_step(
        make_model, losses.CLIPLoss, x, GradientRecorder, num_replicas, num_chunks=2
    )
    expected = native.optimizer.gradients()
    temperature_index = [v.path for v in native.trainable_variables].index(
        native.temperature.log_scale.path
    )
    assert abs(expected[temperature_index]) > 1e-3
    assert_gradients_close(cached.optimizer.gradients(), expected)
    test_case.assert_all_close(cached_loss, native_loss)


def siglip_dual_encoder():
    """A DualEncoder with SigLIP's learnable temperature and bias (bias -3:
    logits around 0, so every gradient is far from 0)."""
    init = keras.initializers.GlorotUniform
    tower_a = keras.Sequential([keras.Input((5,)),
                                keras.layers.Dense(6, "tanh", kernel_initializer=init(0))])
    tower_b = keras.Sequential([keras.Input((3,)),
                                keras.layers.Dense(4, "tanh", kernel_initializer=init(1))])
    model = models.DualEncoder(tower_a, tower_b, projection_dim=4, temperature=0.1,
                               learnable_bias=True, bias=-3.0)
    model.build(((None, 5), (None, 3)))
    return model


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_siglip_temperature_and_bias_get_their_exact_gradients(num_replicas):
    """GradCache(DualEncoder + SigLIPLoss) == the native step: loss and the
    gradients of every weight, τ's log scale and b included, at the float32
    tolerance of docs/design.md §1 (rtol 1e-5)."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 3)).astype("float32"))
    weights = siglip_dual_encoder().get_weights()

    def make_model():
        model = siglip_dual_encoder()
        model.set_weights(weights)
        return model

    native = make_model()
    native.compile(optimizer=GradientRecorder(), loss=losses.SigLIPLoss())
    # One step on the whole batch (x is a pair: the helpers' len(x) is not the batch).
    native_loss = native.fit(x, batch_size=16, shuffle=False, verbose=0).history["loss"]
    with test_case.strategy(num_replicas).scope():
        cached = GradCache(make_model(), num_chunks=2)
        cached.compile(optimizer=GradientRecorder(), loss=losses.SigLIPLoss())
    cached_loss = cached.fit(x, batch_size=16, shuffle=False, verbose=0).history["loss"]
    expected = native.optimizer.gradients()
    paths = [v.path for v in native.trainable_variables]
    for variable in (native.logit_bias, native.temperature.log_scale):
        assert abs(expected[paths.index(variable.path)]) > 1e-3
    assert len(expected) == 8  # 2 towers x 2, 2 projections, log scale, bias
    assert_gradients_close(cached.optimizer.gradients(), expected)
    test_case.assert_all_close(cached_loss, native_loss)


def chunked_reference(model, x, num_chunks, loss):
    """The model applied chunk by chunk (training mode, in order) under one
    tape, the loss on all embeddings: the gradient GradCache must give."""
    with tf.GradientTape() as tape:
        outputs = [model(chunk, training=True) for chunk in np.split(x, num_chunks)]
        value = loss(None, tf.concat(outputs, axis=0))
    return [g.numpy() for g in tape.gradient(value, model.trainable_weights)]


@pytest.mark.parametrize("replay", [True, False])
def test_dropout_masks_replayed(replay):
    x = random_views(16, seed=4)
    weights = build_encoder(dropout=0.5).get_weights()

    def make_model():
        model = build_encoder(dropout=0.5)
        model.set_weights(weights)
        return model

    expected = chunked_reference(make_model(), x, 2, LOSSES["infonce"]())
    cached, _ = grad_cache_step(
        make_model, LOSSES["infonce"], x, GradientRecorder, num_chunks=2, replay_dropout=replay
    )
    actual = cached.optimizer.gradients()
    if replay:
        assert_gradients_close(actual, expected)
    else:
        # Fresh masks in the second pass: the first layer's gradient is off.
        difference = np.max(np.abs(actual[0] - expected[0]))
        assert difference > 1e-2 * np.max(np.abs(expected[0]))
    # Dropout's seed state is left as the first pass left it (2 draws).
    model_states = [v.numpy() for v in cached.variables if "seed_generator_state" in v.path]
    reference_model = make_model()
    for chunk in np.split(x, 2):
        reference_model(chunk, training=True)
    reference_states = [
        v.numpy() for v in reference_model.variables if "seed_generator_state" in v.path
    ]
    if replay:
        np.testing.assert_array_equal(model_states, reference_states)


@pytest.mark.parametrize(
    "norm", [keras.layers.BatchNormalization, layers.BatchNormalization], ids=["keras", "kc"]
)
def test_batch_norm_statistics_updated_once_per_chunk(norm):
    x = random_views(16, seed=5)

    def make_norm():
        return norm(momentum=0.5)

    weights = build_encoder(norm=make_norm).get_weights()

    def make_model():
        model = build_encoder(norm=make_norm)
        model.set_weights(weights)
        return model

    # Reference: each chunk fed once, in order, in training mode.
    reference = make_model()
    expected = chunked_reference(reference, x, 4, LOSSES["dcl"]())
    cached, _ = grad_cache_step(make_model, LOSSES["dcl"], x, GradientRecorder, num_chunks=4)
    assert_gradients_close(cached.optimizer.gradients(), expected)
    bn = [layer for layer in cached.model.layers if isinstance(layer, norm)][0]
    reference_bn = [layer for layer in reference.layers if isinstance(layer, norm)][0]
    initial_bn = [layer for layer in make_model().layers if isinstance(layer, norm)][0]
    assert bn.momentum == 0.5  # restored after tracing the second pass
    for name in ("moving_mean", "moving_variance"):
        value = getattr(bn, name).numpy()
        assert np.max(np.abs(value - getattr(initial_bn, name).numpy())) > 1e-3
        test_case.assert_all_close(value, getattr(reference_bn, name).numpy())


def test_iid_loss_equals_keras_gradient_accumulation():
    # For a mean of independent per-sample terms the two methods agree.
    x = random_views(16, seed=6)
    y = np.random.default_rng(7).normal(size=(16, 2, 8)).astype("float32")
    weights = build_encoder().get_weights()
    accumulating = build_encoder()
    accumulating.set_weights(weights)
    accumulating.compile(
        optimizer=keras.optimizers.SGD(0.5, gradient_accumulation_steps=4),
        loss="mse",
        metrics=["mae"],
    )
    accumulating.fit(x, y, batch_size=4, shuffle=False, verbose=0)  # 4 micro-batches
    encoder = build_encoder()
    encoder.set_weights(weights)
    cached = GradCache(encoder, num_chunks=4)
    cached.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", metrics=["mae"])
    history = cached.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    assert accumulating.optimizer.iterations.numpy() == 1  # one update
    for initial, expected, actual in zip(
        weights, accumulating.get_weights(), cached.get_weights()
    ):
        assert np.max(np.abs(expected - initial)) > 1e-3
        test_case.assert_all_close(actual, expected)
    # Metrics see the first-pass embeddings of the whole batch.
    plain = build_encoder()
    plain.set_weights(weights)
    expected_mae = np.mean(np.abs(plain.predict(x, verbose=0) - y))
    test_case.assert_all_close(history.history["mae"][0], expected_mae)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_chunk_size_with_static_batch(num_replicas):
    x = random_views(16, seed=8)
    weights = build_encoder().get_weights()

    def make_model():
        model = build_encoder()
        model.set_weights(weights)
        return model

    native, _ = native_step(make_model, LOSSES["infonce"], x, GradientRecorder())
    with test_case.strategy(num_replicas).scope():
        cached = GradCache(make_model(), chunk_size=4)
        cached.compile(optimizer=GradientRecorder(), loss=LOSSES["infonce"]())
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16, drop_remainder=True)
    cached.fit(dataset, verbose=0)
    assert_gradients_close(cached.optimizer.gradients(), native.optimizer.gradients())


class CountingEncoder(keras.Model):
    """Counts `after_optimizer_step` calls in a variable."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = build_encoder()
        self.count = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="count",
            aggregation="only_first_replica",
        )

    def call(self, inputs, training=None):
        return self.encoder(inputs, training=training)

    def after_optimizer_step(self):
        self.count.assign_add(1.0)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_after_optimizer_step_hook_called_once_per_step(num_replicas):
    with test_case.strategy(num_replicas).scope():
        encoder = CountingEncoder()
        encoder.build((None, 2, 6))
        model = GradCache(encoder, num_chunks=2)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSSES["infonce"]())
    model.fit(random_views(24), batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert encoder.count.numpy() == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one"),
        ({"chunk_size": 4, "num_chunks": 2}, "exactly one"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"num_chunks": -1}, "num_chunks"),
        ({"num_chunks": 2.0}, "num_chunks"),
    ],
)
def test_rejects_bad_chunk_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradCache(build_encoder(), **kwargs)


def test_rejects_non_rank_3_output():
    with pytest.raises(ValueError, match="rank 3"):
        GradCache(build_encoder(output_rank=2), num_chunks=2)


def test_rejects_non_rank_3_output_of_subclassed_model():
    class Flat(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, inputs):
            return self.dense(keras.ops.reshape(inputs, (-1, 12)))

    model = GradCache(Flat(), num_chunks=2)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="rank 3"):
        model.fit(random_views(8), np.zeros((8, 4)), batch_size=8, verbose=0)


def compiled(model):
    model.compile(optimizer="sgd", loss=LOSSES["infonce"]())
    return model


def test_chunk_size_rejects_indivisible_static_batch():
    model = compiled(GradCache(build_encoder(), chunk_size=3))
    dataset = tf.data.Dataset.from_tensor_slices(random_views(8)).batch(8, drop_remainder=True)
    with pytest.raises(ValueError, match="does not split"):
        model.fit(dataset, verbose=0)


def test_chunk_size_rejects_dynamic_batch():
    model = compiled(GradCache(build_encoder(), chunk_size=4))
    dataset = tf.data.Dataset.from_tensor_slices(random_views(8)).batch(8)
    with pytest.raises(ValueError, match="num_chunks"):
        model.fit(dataset, verbose=0)


def test_num_chunks_rejects_smaller_static_batch():
    model = compiled(GradCache(build_encoder(), num_chunks=4))
    dataset = tf.data.Dataset.from_tensor_slices(random_views(3)).batch(3, drop_remainder=True)
    with pytest.raises(ValueError, match="smaller than"):
        model.fit(dataset, verbose=0)


def test_num_chunks_dynamic_batch_too_small_fails_loudly():
    model = compiled(GradCache(build_encoder(), num_chunks=4))
    # 9 samples in batches of 6: the first batch works, the last (3 < 4) fails.
    dataset = tf.data.Dataset.from_tensor_slices(random_views(9)).batch(6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than `num_chunks`"):
        model.fit(dataset, verbose=0)


def test_keras_file_round_trip_and_predict_use_wrapped_model():
    encoder = build_encoder()
    model = GradCache(encoder, num_chunks=2, replay_dropout=False)
    model.compile(optimizer="adam", loss=LOSSES["dcl"]())
    x = random_views(8)
    model.fit(x, batch_size=8, verbose=0)
    test_case.assert_all_close(model.predict(x, verbose=0), encoder.predict(x, verbose=0))
    restored = test_case.keras_file_round_trip(model)
    assert isinstance(restored, GradCache)
    assert restored.get_config()["num_chunks"] == 2
    assert restored.replay_dropout is False
    assert type(restored.loss) is losses.DCL
    test_case.assert_all_close(restored.predict(x, verbose=0), encoder.predict(x, verbose=0))
    restored.fit(x, batch_size=8, verbose=0)  # trains after loading


def test_mixed_float16_uses_loss_scaling_and_matches_native():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        x = random_views(16, seed=9)
        weights = build_encoder().get_weights()

        def make_model():
            model = build_encoder()
            model.set_weights(weights)
            return model

        def sgd():
            # A scale of 2^15 overflows the native float16 kernel gradient
            # (summed over the whole batch) but not the chunked ones: start
            # lower so that both steps are taken.
            return keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.5), initial_scale=2.0**8
            )

        native, native_loss = native_step(make_model, LOSSES["infonce"], x, sgd())
        cached, cached_loss = grad_cache_step(make_model, LOSSES["infonce"], x, sgd)
    finally:
        keras.config.set_dtype_policy(previous)
    for model in (native, cached):
        assert model.optimizer.iterations.numpy() == 1  # not skipped
        assert model.optimizer.dynamic_scale.numpy() == 2.0**8
    for expected, actual in zip(native.get_weights(), cached.get_weights()):
        test_case.assert_all_close(actual, expected, rtol=1e-2, atol_scale=1e-2)
    test_case.assert_all_close(cached_loss, native_loss, rtol=1e-3)


@pytest.mark.parametrize(
    "reuse_last_chunk,chain", [(False, True), (True, False)], ids=["recompute_last", "unchained"]
)
def test_reuse_and_chaining_do_not_change_the_gradient(reuse_last_chunk, chain):
    # Dropout and BN together: the last chunk either reuses its first-pass
    # graph (default) or is forwarded again with replayed masks; unchained
    # chunks may run in any order. All give the chunked reference.
    x = random_views(16, seed=10)

    def make_norm():
        return layers.BatchNormalization(momentum=0.5)

    weights = build_encoder(dropout=0.3, norm=make_norm).get_weights()

    def make_model():
        model = build_encoder(dropout=0.3, norm=make_norm)
        model.set_weights(weights)
        return model

    expected = chunked_reference(make_model(), x, 4, LOSSES["infonce"]())
    model = GradCache(make_model(), num_chunks=4, reuse_last_chunk=reuse_last_chunk)
    model._chain_chunks = chain
    model.compile(optimizer=GradientRecorder(), loss=LOSSES["infonce"]())
    model.fit(x, batch_size=16, shuffle=False, verbose=0)
    assert_gradients_close(model.optimizer.gradients(), expected)
    assert model.get_config()["reuse_last_chunk"] is reuse_last_chunk


def batch_norm_model(synchronized):
    def make_norm():
        return layers.BatchNormalization(momentum=0.5, synchronized=synchronized)

    weights = build_encoder(norm=make_norm).get_weights()

    def make_model():
        model = build_encoder(norm=make_norm)
        model.set_weights(weights)
        return model

    return make_model


def moving_statistics(model):
    bn = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)][0]
    return bn.moving_mean.numpy(), bn.moving_variance.numpy()


def test_per_replica_batch_norm_under_two_replicas():
    # Replica r holds samples 8r..8r+7 in two chunks of 4: each of the four
    # chunks is normalised with its own statistics, so the chunked reference
    # over np.split(x, 4) is exact; each replica's moving statistics see its
    # two chunks once, and the variables read as the replica mean.
    x = random_views(16, seed=11)
    make_model = batch_norm_model(synchronized=False)
    expected = chunked_reference(make_model(), x, 4, LOSSES["dcl"]())
    cached, _ = grad_cache_step(make_model, LOSSES["dcl"], x, GradientRecorder, 2, num_chunks=2)
    assert_gradients_close(cached.optimizer.gradients(), expected)
    replica_statistics = []
    for replica in range(2):
        reference = make_model()
        for chunk in np.split(x[8 * replica : 8 * replica + 8], 2):
            reference(chunk, training=True)
        replica_statistics.append(moving_statistics(reference))
    for actual, per_replica in zip(moving_statistics(cached.model), zip(*replica_statistics)):
        test_case.assert_all_close(actual, np.mean(per_replica, axis=0))


def test_synchronized_batch_norm_normalises_each_global_chunk():
    # Sync BN: chunk k of every replica forms one BN batch. Global chunk 0 =
    # samples 0-3 (replica 0) + 8-11 (replica 1), chunk 1 = 4-7 + 12-15.
    x = random_views(16, seed=12)
    make_model = batch_norm_model(synchronized=True)
    reference = make_model()
    loss = LOSSES["infonce"]()
    with tf.GradientTape() as tape:
        h0 = reference(np.concatenate([x[0:4], x[8:12]]), training=True)
        h1 = reference(np.concatenate([x[4:8], x[12:16]]), training=True)
        value = loss(None, tf.concat([h0[:4], h1[:4], h0[4:], h1[4:]], axis=0))
    expected = [g.numpy() for g in tape.gradient(value, reference.trainable_weights)]
    cached, cached_loss = grad_cache_step(
        make_model, LOSSES["infonce"], x, GradientRecorder, 2, num_chunks=2
    )
    test_case.assert_all_close(cached_loss, value.numpy())
    for actual, wanted in zip(cached.optimizer.gradients(), expected):
        test_case.assert_all_close(actual, wanted, rtol=1e-4)
    for actual, wanted in zip(moving_statistics(cached.model), moving_statistics(reference)):
        test_case.assert_all_close(actual, wanted, rtol=1e-4)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_sample_weight_equals_native(num_replicas):
    x = random_views(16, seed=13)
    sample_weight = np.random.default_rng(14).uniform(0.2, 2.0, size=16).astype("float32")
    weights = build_encoder().get_weights()

    def make_model():
        model = build_encoder()
        model.set_weights(weights)
        return model

    native = make_model()
    native.compile(optimizer=GradientRecorder(), loss=LOSSES["dclw"]())
    native_history = native.fit(
        x, sample_weight=sample_weight, batch_size=16, shuffle=False, verbose=0
    )
    with test_case.strategy(num_replicas).scope():
        cached = GradCache(make_model(), num_chunks=2)
        cached.compile(optimizer=GradientRecorder(), loss=LOSSES["dclw"]())
    cached_history = cached.fit(
        x, sample_weight=sample_weight, batch_size=16, shuffle=False, verbose=0
    )
    assert_gradients_close(cached.optimizer.gradients(), native.optimizer.gradients())
    test_case.assert_all_close(
        cached_history.history["loss"][0], native_history.history["loss"][0]
    )


@keras.saving.register_keras_serializable(package="keras_contrast_tests")
class SubclassedEncoder(keras.Model):
    """A subclassed embedding model: (batch, 2, 6) → (batch, 2, units)."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.dropout = keras.layers.Dropout(0.2, seed=3)
        self.head = keras.layers.Dense(units)

    def call(self, inputs, training=None):
        return self.head(self.dropout(self.hidden(inputs), training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_model_keras_round_trip_and_export(tmp_path):
    encoder = SubclassedEncoder()
    model = GradCache(encoder, num_chunks=2)
    model.compile(optimizer="adam", loss=LOSSES["infonce"]())
    x = random_views(8, seed=15)
    model.fit(x, batch_size=8, verbose=0)
    expected = encoder.predict(x, verbose=0)
    restored = test_case.keras_file_round_trip(model)
    assert isinstance(restored.model, SubclassedEncoder)
    test_case.assert_all_close(restored.predict(x, verbose=0), expected)
    restored.fit(x, batch_size=8, verbose=0)  # the restored optimizer trains
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep: owns the variables
    test_case.assert_all_close(loaded.serve(tf.constant(x)).numpy(), expected)


def test_rejects_losses_added_in_call():
    inputs = keras.Input((2, 6))
    outputs = keras.layers.Dense(8, activity_regularizer="l2")(inputs)
    model = compiled(GradCache(keras.Model(inputs, outputs), num_chunks=2))
    with pytest.raises(ValueError, match="add_loss"):
        model.fit(random_views(8), batch_size=8, verbose=0)
