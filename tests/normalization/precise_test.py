"""Precise BN / Adaptive BN against NumPy float64 population statistics."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from keras_contrast import layers as kc_layers
from keras_contrast.normalization import adapt_batch_norm
from keras_contrast.normalization import precise_batch_norm
from tests.test_case import assert_all_close

EPSILON = 1e-3
# Unequal batch sizes, so that weighting each batch by n_b matters.
BATCH_SIZES = (3, 11, 6, 16, 5)
INPUT_DIM = 5


def make_inputs(seed=0):
    """Features with a realistic nonzero mean (offsets 1..5, scale 2)."""
    rng = np.random.default_rng(seed)
    shape = (sum(BATCH_SIZES), INPUT_DIM)
    x = rng.normal(loc=np.arange(1.0, INPUT_DIM + 1), scale=2.0, size=shape)
    bounds = np.cumsum((0,) + BATCH_SIZES)
    return [x[a:b].astype("float32") for a, b in zip(bounds[:-1], bounds[1:])]


def make_stages(units=(4, 3), relu=True, seed=1):
    """Known weights of a Dense → BN (→ ReLU) chain."""
    rng = np.random.default_rng(seed)
    stages, width = [], INPUT_DIM
    for size in units:
        stages.append(
            {
                "kernel": rng.normal(size=(width, size)).astype("float32"),
                "bias": rng.normal(size=size).astype("float32"),
                "gamma": rng.uniform(0.5, 2.0, size=size).astype("float32"),
                "beta": rng.normal(size=size).astype("float32"),
                "moving_mean": rng.normal(size=size).astype("float32"),
                "moving_variance": rng.uniform(0.5, 2.0, size=size).astype("float32"),
                "relu": relu,
            }
        )
        width = size
    return stages


def set_stage(dense, batch_norm, stage):
    dense.set_weights([stage["kernel"], stage["bias"]])
    batch_norm.set_weights(
        [stage[name] for name in ("gamma", "beta", "moving_mean", "moving_variance")]
    )


def chain_model(stages, batch_norm=keras.layers.BatchNormalization, frozen=()):
    """Input → [Dense → BN → ReLU → Dropout(0.5)] per stage. The dropout
    would change the statistics of the next BN if it were on."""
    inputs = keras.Input((INPUT_DIM,))
    h, pairs = inputs, []
    for stage in stages:
        dense = keras.layers.Dense(stage["kernel"].shape[1])
        norm = batch_norm(epsilon=EPSILON)
        h = norm(dense(h))
        if stage["relu"]:
            h = keras.layers.ReLU()(h)
        h = keras.layers.Dropout(0.5)(h)
        pairs.append((dense, norm))
    model = keras.Model(inputs, h)
    for (dense, norm), stage in zip(pairs, stages):
        set_stage(dense, norm, stage)
    for index in frozen:
        pairs[index][1].trainable = False
    return model, [norm for _, norm in pairs]


def batch_norm_inputs(stages, batches, fixed):
    """The float64 input of every BN stage over all batches; stage k
    normalises with `fixed[k]` = (mean, variance) if given, else with the
    batch's own mean and biased variance."""
    collected = [[] for _ in stages]
    for x in batches:
        h = np.asarray(x, np.float64)
        for k, stage in enumerate(stages):
            a = h @ stage["kernel"].astype(np.float64) + stage["bias"]
            collected[k].append(a)
            mean, variance = fixed.get(k, (a.mean(axis=0), a.var(axis=0)))
            h = stage["gamma"] * (a - mean) / np.sqrt(variance + EPSILON) + stage["beta"]
            if stage["relu"]:
                h = np.maximum(h, 0.0)
    return [np.concatenate(values) for values in collected]


def reference_statistics(stages, batches, order, frozen=()):
    """Population mean and biased variance of each BN input, all values of
    all batches pooled (not from the n_b-weighted formula under test).
    Frozen stages keep their moving statistics."""
    fixed = {k: (stages[k]["moving_mean"], stages[k]["moving_variance"]) for k in frozen}
    if order == "one_sweep":
        inputs = batch_norm_inputs(stages, batches, fixed)
        return [(a.mean(axis=0), a.var(axis=0)) for a in inputs]
    statistics = []
    for k in range(len(stages)):
        a = batch_norm_inputs(stages, batches, fixed)[k]
        statistics.append((a.mean(axis=0), a.var(axis=0)))
        fixed.setdefault(k, statistics[-1])
    return statistics


def as_dataset(batches, form):
    if form == "list_x":
        return batches
    if form == "list_xyw":
        return [(x, np.zeros(len(x)), np.ones(len(x))) for x in batches]
    pieces = [tf.data.Dataset.from_tensors((x, np.zeros(len(x), "int32"))) for x in batches]
    return functools.reduce(lambda a, b: a.concatenate(b), pieces)


def moving(layer):
    return layer.moving_mean.numpy(), layer.moving_variance.numpy()


@pytest.mark.parametrize("form", ["tf_data_xy", "list_x", "list_xyw"])
@pytest.mark.parametrize("order", ["one_sweep", "layer_by_layer"])
def test_matches_numpy_population_statistics(order, form):
    stages, batches = make_stages(), make_inputs()
    model, norms = chain_model(stages)
    dataset = as_dataset(batches, form)
    result = precise_batch_norm(model, dataset, num_batches=len(batches), order=order)
    expected = reference_statistics(stages, batches, order)
    for norm, (mean, variance) in zip(norms, expected):
        assert_all_close(norm.moving_mean.numpy(), mean, msg=norm.name)
        assert_all_close(norm.moving_variance.numpy(), variance, msg=norm.name)
        assert_all_close(result[norm.path]["mean"], mean)
        assert_all_close(result[norm.path]["variance"], variance)
        np.testing.assert_array_equal(result[norm.path]["count"], sum(BATCH_SIZES))


def test_reference_distinguishes_weighting_and_orders():
    # The test data make the alternatives measurably different, so the test
    # above would catch them: unweighted batch means, the average of batch
    # variances, and the other order for the second layer.
    stages, batches = make_stages(), make_inputs()
    first = [x @ stages[0]["kernel"] + stages[0]["bias"] for x in batches]
    pooled = np.concatenate(first)
    mean_of_means = np.mean([a.mean(axis=0) for a in first], axis=0)
    mean_of_variances = np.mean([a.var(axis=0) for a in first], axis=0)
    assert np.max(np.abs(mean_of_means - pooled.mean(0)) / pooled.std(0)) > 0.05
    assert np.max(np.abs(mean_of_variances / pooled.var(0) - 1.0)) > 0.1
    sweep = reference_statistics(stages, batches, "one_sweep")[1]
    layered = reference_statistics(stages, batches, "layer_by_layer")[1]
    assert np.max(np.abs(sweep[1] / layered[1] - 1.0)) > 1e-3


@pytest.mark.parametrize("order", ["one_sweep", "layer_by_layer"])
def test_keeps_weights_and_leaves_no_patch(order):
    stages, batches = make_stages(), make_inputs()
    model, norms = chain_model(stages)
    statistics = {id(v) for norm in norms for v in (norm.moving_mean, norm.moving_variance)}
    before = {id(v): v.numpy().copy() for v in model.weights if id(v) not in statistics}
    precise_batch_norm(model, batches, num_batches=len(batches), order=order)
    for variable in model.weights:
        if id(variable) in before:
            np.testing.assert_array_equal(variable.numpy(), before[id(variable)], variable.path)
    assert all("call" not in norm.__dict__ for norm in norms)
    assert all(norm.trainable for norm in norms)


@pytest.mark.parametrize("kind", ["trainable_false", "frozen_layer"])
@pytest.mark.parametrize("order", ["one_sweep", "layer_by_layer"])
def test_frozen_layers_keep_statistics_and_run_in_inference_mode(order, kind):
    stages, batches = make_stages(), make_inputs()
    if kind == "trainable_false":
        model, norms = chain_model(stages, frozen=(0,))
    else:
        frozen_first = iter([kc_layers.FrozenBatchNormalization, keras.layers.BatchNormalization])
        model, norms = chain_model(stages, batch_norm=lambda **kw: next(frozen_first)(**kw))
    result = precise_batch_norm(model, batches, num_batches=len(batches), order=order)
    np.testing.assert_array_equal(moving(norms[0])[0], stages[0]["moving_mean"])
    np.testing.assert_array_equal(moving(norms[0])[1], stages[0]["moving_variance"])
    assert list(result) == [norms[1].path]
    mean, variance = reference_statistics(stages, batches, order, frozen=(0,))[1]
    assert_all_close(norms[1].moving_mean.numpy(), mean)
    assert_all_close(norms[1].moving_variance.numpy(), variance)


class DenseNorm(keras.layers.Layer):
    """A layer holding a Dense and a BN layer (a BN inside a layer)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units)
        self.norm = keras.layers.BatchNormalization(epsilon=EPSILON)

    def call(self, inputs, training=None):
        return self.norm(self.dense(inputs), training=training)


@pytest.mark.parametrize("order", ["one_sweep", "layer_by_layer"])
def test_nested_models_and_layers(order):
    # Sequential[functional(Dense → keras_contrast BN), DenseNorm].
    stages, batches = make_stages(relu=False), make_inputs()
    inner_input = keras.Input((INPUT_DIM,))
    inner_dense = keras.layers.Dense(4)
    inner_norm = kc_layers.BatchNormalization(epsilon=EPSILON)
    inner = keras.Model(inner_input, inner_norm(inner_dense(inner_input)))
    block = DenseNorm(3)
    model = keras.Sequential([keras.Input((INPUT_DIM,)), inner, block])
    set_stage(inner_dense, inner_norm, stages[0])
    set_stage(block.dense, block.norm, stages[1])
    result = precise_batch_norm(model, batches, num_batches=len(batches), order=order)
    assert set(result) == {inner_norm.path, block.norm.path}
    expected = reference_statistics(stages, batches, order)
    for norm, (mean, variance) in zip((inner_norm, block.norm), expected):
        assert_all_close(norm.moving_mean.numpy(), mean, msg=norm.name)
        assert_all_close(norm.moving_variance.numpy(), variance, msg=norm.name)


def single_layer_model(norm):
    inputs = keras.Input((INPUT_DIM,))
    dense = keras.layers.Dense(4)
    model = keras.Model(inputs, norm(dense(inputs)))
    stage = make_stages(units=(4,))[0]
    dense.set_weights([stage["kernel"], stage["bias"]])
    return model, stage


@pytest.mark.parametrize(
    "make_norm",
    [
        lambda: keras.layers.BatchNormalization(epsilon=EPSILON, renorm=True),
        lambda: keras.layers.BatchNormalization(epsilon=EPSILON, synchronized=True),
        lambda: kc_layers.GhostBatchNormalization(virtual_batch_size=2, epsilon=EPSILON),
    ],
    ids=["renorm", "synchronized", "ghost"],
)
def test_batch_norm_variants_get_population_statistics(make_norm):
    norm = make_norm()
    model, stage = single_layer_model(norm)
    batches = make_inputs()
    precise_batch_norm(model, batches, num_batches=len(batches))
    a = np.concatenate([x @ stage["kernel"].astype(np.float64) + stage["bias"] for x in batches])
    assert_all_close(norm.moving_mean.numpy(), a.mean(axis=0))
    assert_all_close(norm.moving_variance.numpy(), a.var(axis=0))
    if getattr(norm, "renorm", False):
        stddev = np.sqrt(a.var(axis=0) + EPSILON)
        assert_all_close(norm.moving_stddev.numpy(), stddev)
        assert_all_close(norm.renorm_mean.numpy(), a.mean(axis=0))
        assert_all_close(norm.renorm_stddev.numpy(), stddev)


class SplitModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.split = kc_layers.SplitBatchNormalization(num_domains=3, epsilon=EPSILON)

    def call(self, inputs, training=None):
        x, domain = inputs
        return self.split(self.dense(x), training=training, domain=domain)


def test_split_batch_norm_gets_per_domain_statistics():
    batches = make_inputs()
    rng = np.random.default_rng(2)
    # Domains 0 and 1 only: domain 2 sees no sample and keeps its statistics.
    ids = [rng.integers(0, 2, size=len(x)).astype("int32") for x in batches]
    model = SplitModel()
    model((batches[0], ids[0]))
    stage = make_stages(units=(4,))[0]
    model.dense.set_weights([stage["kernel"], stage["bias"]])
    untouched = moving(model.split.domain_layers[2])
    data = [((x, d), np.zeros(len(x))) for x, d in zip(batches, ids)]
    with pytest.warns(UserWarning, match="no sample of its domain"):
        result = precise_batch_norm(model, data, num_batches=len(data))
    a = np.concatenate([x @ stage["kernel"].astype(np.float64) + stage["bias"] for x in batches])
    domain = np.concatenate(ids)
    for index in (0, 1):
        layer = model.split.domain_layers[index]
        assert_all_close(layer.moving_mean.numpy(), a[domain == index].mean(axis=0))
        assert_all_close(layer.moving_variance.numpy(), a[domain == index].var(axis=0))
        np.testing.assert_array_equal(result[layer.path]["count"], np.sum(domain == index))
    np.testing.assert_array_equal(moving(model.split.domain_layers[2])[0], untouched[0])
    np.testing.assert_array_equal(moving(model.split.domain_layers[2])[1], untouched[1])


def test_leaves_model_unchanged_on_error():
    stages, batches = make_stages(), make_inputs()
    model, norms = chain_model(stages)
    bad = batches[:2] + [np.ones((4, INPUT_DIM + 1), "float32")]
    with pytest.raises(Exception):
        precise_batch_norm(model, bad, num_batches=3)
    for norm, stage in zip(norms, stages):
        np.testing.assert_array_equal(moving(norm)[0], stage["moving_mean"])
        np.testing.assert_array_equal(moving(norm)[1], stage["moving_variance"])
        assert "call" not in norm.__dict__


def test_warns_when_dataset_has_fewer_batches():
    stages, batches = make_stages(), make_inputs()
    model, norms = chain_model(stages)
    with pytest.warns(UserWarning, match="has 5 batches, fewer than num_batches=200"):
        precise_batch_norm(model, batches)
    mean, variance = reference_statistics(stages, batches, "one_sweep")[0]
    assert_all_close(norms[0].moving_mean.numpy(), mean)
    assert_all_close(norms[0].moving_variance.numpy(), variance)


def no_batch_norm_model():
    return keras.Sequential([keras.Input((INPUT_DIM,)), keras.layers.Dense(2)])


def all_frozen_model():
    model, _ = chain_model(make_stages(), frozen=(0, 1))
    return model


@pytest.mark.parametrize(
    "make_model, dataset, kwargs, match",
    [
        (None, None, {"num_batches": 0}, "num_batches"),
        (None, None, {"num_batches": -2}, "num_batches"),
        (None, None, {"num_batches": 2.5}, "num_batches"),
        (None, None, {"num_batches": True}, "num_batches"),
        (None, None, {"order": "sweep"}, "order"),
        (no_batch_norm_model, None, {}, "model"),
        (all_frozen_model, None, {}, "model.*frozen"),
        (lambda: keras.Sequential([keras.layers.BatchNormalization()]), None, {}, "model.*built"),
        (lambda: (lambda x: x), None, {}, "model"),
        (None, 3, {}, "dataset"),
        (None, [], {}, "dataset"),
        (None, "generator", {"order": "layer_by_layer"}, "dataset.*re-iterable"),
    ],
)
def test_rejects_bad_arguments(make_model, dataset, kwargs, match):
    model = make_model() if make_model else chain_model(make_stages())[0]
    if dataset is None:
        dataset = make_inputs()
    elif dataset == "generator":
        dataset = (x for x in make_inputs())
    with pytest.raises(ValueError, match=match):
        precise_batch_norm(model, dataset, **kwargs)


def test_adapt_batch_norm_names_its_arguments():
    model, _ = chain_model(make_stages())
    with pytest.raises(ValueError, match="target_dataset"):
        adapt_batch_norm(model, [])
    with pytest.raises(ValueError, match="num_batches"):
        adapt_batch_norm(model, make_inputs(), num_batches=0)


# --- Digits: a stale EMA, recovered by Precise BN / Adaptive BN ------------

BATCH = 100


@pytest.fixture(scope="module")
def digits():
    """An MLP with BN (momentum 0.99) trained for only 12 steps on raw
    digits pixels (0..16): its EMA has moved ~11% of the way from its
    initial (0, 1) towards the batch statistics."""
    data = load_digits()
    x, y = data.data.astype("float32"), data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64),
            keras.layers.BatchNormalization(momentum=0.99),
            keras.layers.ReLU(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.03),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:1200], y[:1200], batch_size=BATCH, epochs=1, verbose=0)
    return model, model.get_weights(), (x[:1200], y[:1200]), (x[1200:], y[1200:])


def accuracy(model, x, y, training=False):
    return float(np.mean(np.argmax(model(x, training=training).numpy(), axis=-1) == y))


def batches_of(x):
    return tf.data.Dataset.from_tensor_slices(x).batch(BATCH)


def test_precise_bn_recovers_accuracy_of_stale_ema(digits):
    model, weights, (x_train, _), (x_test, y_test) = digits
    model.set_weights(weights)
    ema_accuracy = accuracy(model, x_test, y_test)
    batch_statistics_accuracy = accuracy(model, x_test, y_test, training=True)
    model.set_weights(weights)  # undo the EMA step of the training-mode call
    precise_batch_norm(model, batches_of(x_train), num_batches=12)
    precise_accuracy = accuracy(model, x_test, y_test)
    # Measured with seed 0: EMA 0.858, batch statistics 0.940, precise 0.943
    # (seeds 0-9: EMA <= 0.883 and >= 0.06 below; |precise - batch| <= 0.005).
    assert ema_accuracy <= batch_statistics_accuracy - 0.04
    assert precise_accuracy >= 0.9
    assert abs(precise_accuracy - batch_statistics_accuracy) <= 0.015


def test_adapt_batch_norm_removes_domain_shift(digits):
    # Target domain: contrast halved, brightness +6. The first BN sees an
    # affine image of the source activations per channel, so the target
    # statistics undo the shift exactly.
    model, weights, (x_train, _), (x_test, y_test) = digits
    model.set_weights(weights)
    precise_batch_norm(model, batches_of(x_train), num_batches=12)
    source_accuracy = accuracy(model, x_test, y_test)
    shift = lambda x: 0.5 * x + 6.0  # noqa: E731
    shifted_accuracy = accuracy(model, shift(x_test), y_test)
    adapt_batch_norm(model, batches_of(shift(x_train)), num_batches=12)
    adapted_accuracy = accuracy(model, shift(x_test), y_test)
    # Measured with seed 0: source 0.943, shifted 0.717, adapted 0.943.
    assert shifted_accuracy <= source_accuracy - 0.05
    assert abs(adapted_accuracy - source_accuracy) <= 0.005
