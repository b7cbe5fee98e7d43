"""Every keras_contrast layer and backbone under `set_floatx("float64")`,
in training and inference, against Keras' own BatchNormalization in
float64."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from keras_contrast.models import ResNetBackbone
from keras_contrast.models import ViTBackbone
from tests import test_case

# Both sides compute in float64: far tighter than float32's 1e-5.
RTOL = 1e-10


@pytest.fixture(autouse=True)
def float64():
    with test_case.float64_config():
        yield


def close(actual, expected, msg=""):
    assert keras.ops.convert_to_numpy(actual).dtype == np.float64, msg
    test_case.assert_all_close(actual, expected, rtol=RTOL, atol_scale=1e-12, msg=msg)


def inputs(shape, seed):
    return np.random.default_rng(seed).normal(3.0, 2.0, size=shape)


def set_weights(layer, shape, seed=7):
    layer.build(shape)
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
    layer.beta.assign(rng.normal(size=channels))
    stats = layer.domain_layers[0] if isinstance(layer, layers.SplitBatchNormalization) else layer
    stats.moving_mean.assign(rng.normal(size=channels))
    stats.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def statistics(layer):
    stats = layer.domain_layers[0] if isinstance(layer, layers.SplitBatchNormalization) else layer
    return stats.moving_mean, stats.moving_variance


def step(layer, x, training, upstream):
    kwargs = {"domain": 0} if isinstance(layer, layers.SplitBatchNormalization) else {}
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=training, **kwargs)
        loss = tf.reduce_sum(outputs * upstream)
    return [outputs] + tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])


LAYERS = {
    "batch": (lambda: layers.BatchNormalization(momentum=0.8),
              lambda: keras.layers.BatchNormalization(momentum=0.8)),
    "renorm": (
        lambda: layers.BatchNormalization(momentum=0.8, renorm=True, renorm_momentum=0.5),
        lambda: keras.layers.BatchNormalization(momentum=0.8, renorm=True, renorm_momentum=0.5),
    ),
    "ghost": (lambda: layers.GhostBatchNormalization(6, momentum=0.8),
              lambda: keras.layers.BatchNormalization(momentum=0.8)),
    "split": (lambda: layers.SplitBatchNormalization(1, momentum=0.8),
              lambda: keras.layers.BatchNormalization(momentum=0.8)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_batch_norms_train_like_keras_batch_norm_in_float64(kind):
    ours, theirs = (make() for make in LAYERS[kind])
    shape = (6, 3, 4)
    for layer in (ours, theirs):
        set_weights(layer, shape)
        assert all(v.dtype == "float64" for v in layer.weights)
    upstream = inputs(shape, 9)
    for index, training in enumerate((True, True, False)):
        x = inputs(shape, index)
        for name, a, b in zip(("outputs", "d/dx", "d/dgamma", "d/dbeta"),
                              step(ours, x, training, upstream),
                              step(theirs, x, training, upstream)):
            close(a, b, f"call {index}: {name}")
        for a, b in zip(statistics(ours), statistics(theirs)):
            close(a, b, f"call {index}: moving statistics")


def test_frozen_batch_norm_equals_keras_inference_in_float64():
    shape = (6, 4)
    frozen, reference = layers.FrozenBatchNormalization(), keras.layers.BatchNormalization()
    for layer in (frozen, reference):
        set_weights(layer, shape)
    x = inputs(shape, 1)
    close(frozen(x, training=True), reference(x, training=False))


@pytest.mark.parametrize("kind", ["batch", "renorm", "ghost", "split"])
def test_frozen_statistics_in_float64_inside_a_function(kind):
    layer = LAYERS[kind][0]()
    shape = (6, 4)
    set_weights(layer, shape)
    kwargs = {"domain": 0} if kind == "split" else {}
    # One plain step first: renorm then derives its moving variance from
    # its moving stddev, which a frozen step leaves as it is.
    layer(inputs(shape, 3), training=True, **kwargs)
    before = [keras.ops.convert_to_numpy(v).copy() for v in layer.non_trainable_weights]

    @tf.function
    def frozen_step(x):
        with layers.frozen_statistics():
            return layer(x, training=True, **kwargs)

    outputs = frozen_step(tf.constant(inputs(shape, 2)))
    assert outputs.dtype == tf.float64
    assert len(before) >= 2
    for value, variable in zip(before, layer.non_trainable_weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)


@pytest.mark.parametrize("synchronized", [True, False])
def test_two_replicas_in_float64(synchronized):
    """Synchronised: the one-device Keras BN on the global batch.
    Per replica: each half normalised by Keras' BN on that half, and the
    moving statistics read as the mean of the replicas' updates."""
    strategy = test_case.strategy(2)
    shape = (8, 4)
    x = inputs(shape, 3)
    with strategy.scope():
        layer = layers.BatchNormalization(momentum=0.8, synchronized=synchronized)
        set_weights(layer, shape)
    run = tf.function(lambda x: strategy.run(lambda x: layer(x, training=True), args=(x,)))
    outputs = run(test_case.split_per_replica(strategy, x))
    outputs = np.concatenate(
        [v.numpy() for v in strategy.experimental_local_results(outputs)]
    )
    halves = [x] if synchronized else [x[:4], x[4:]]
    references = []
    for half in halves:
        reference = keras.layers.BatchNormalization(momentum=0.8)
        set_weights(reference, shape)
        references.append((reference(half, training=True), reference))
    close(outputs, np.concatenate([keras.ops.convert_to_numpy(y) for y, _ in references]))
    for name in ("moving_mean", "moving_variance"):
        expected = np.mean(
            [keras.ops.convert_to_numpy(getattr(r, name)) for _, r in references], axis=0
        )
        close(getattr(layer, name).numpy(), expected, name)


def test_projection_head_in_float64_equals_numpy():
    head = layers.ProjectionHead((5, 3), norm="batch")
    x = inputs((6, 4), 4)
    head(x)
    rng = np.random.default_rng(5)
    for variable in head.trainable_weights:
        variable.assign(rng.normal(size=variable.shape))
    d0, d1 = head.dense_layers
    n0 = head.norm_layers[0]
    outputs = head(x, training=True)
    h = x @ d0.kernel.numpy()
    h = n0.gamma.numpy() * (h - h.mean(0)) / np.sqrt(h.var(0) + n0.epsilon) + n0.beta.numpy()
    expected = np.maximum(h, 0.0) @ d1.kernel.numpy() + d1.bias.numpy()
    close(outputs, expected)
    close(head(x, training=False), _inference(head, x))


def _inference(head, x):
    d0, d1 = head.dense_layers
    n0 = head.norm_layers[0]
    h = x @ d0.kernel.numpy()
    h = n0.gamma.numpy() * (h - n0.moving_mean.numpy()) / np.sqrt(
        n0.moving_variance.numpy() + n0.epsilon
    ) + n0.beta.numpy()
    return np.maximum(h, 0.0) @ d1.kernel.numpy() + d1.bias.numpy()


def keras_batch_norm(name=None, **kwargs):
    return keras.layers.BatchNormalization(name=name, **kwargs)


BACKBONES = {
    "resnet": lambda norm: ResNetBackbone(18, stem="cifar", width=4, norm=norm,
                                          input_shape=(8, 8, 3)),
    "vit": lambda norm: ViTBackbone(hidden_dim=8, depth=1, num_heads=2, mlp_dim=8,
                                    image_size=8, patch_size=4, norm=norm),
}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_backbones_in_float64_equal_the_same_network_with_keras_batch_norm(backbone):
    ours = BACKBONES[backbone]("batch")
    theirs = BACKBONES[backbone](keras_batch_norm)
    assert all(v.dtype == "float64" for v in ours.weights)
    theirs.set_weights(ours.get_weights())
    x = inputs((4, 8, 8, 3), 6)

    def train(model):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_sum(tf.square(outputs))
        return [outputs] + tape.gradient(loss, model.trainable_variables)

    for index, (a, b) in enumerate(zip(train(ours), train(theirs))):
        test_case.assert_all_close(a, b, rtol=1e-8, atol_scale=1e-10, msg=f"tensor {index}")
        assert keras.ops.convert_to_numpy(a).dtype == np.float64
    for a, b in zip(ours.non_trainable_weights, theirs.non_trainable_weights):
        test_case.assert_all_close(a, b, rtol=1e-8, atol_scale=1e-10, msg=a.path)
    test_case.assert_all_close(ours(x, training=False), theirs(x, training=False), rtol=1e-8,
                               atol_scale=1e-10)


@pytest.mark.parametrize("norm,norm_kwargs", [
    ("sync", {}), ("renorm", {}), ("ghost", {"virtual_batch_size": 2}), ("frozen", {}),
    ("split", {"num_domains": 2}),
])
def test_resnet_trains_in_float64_with_every_batch_norm(norm, norm_kwargs):
    model = ResNetBackbone(18, stem="cifar", width=4, norm=norm, norm_kwargs=norm_kwargs,
                           input_shape=(8, 8, 3))
    x = tf.constant(inputs((4, 8, 8, 3), 7))
    with layers.domain_scope(np.array([0, 1, 0, 1])):  # only "split" reads it
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_sum(tf.square(outputs))
        gradients = tape.gradient(loss, model.trainable_variables)
        inference = model(x, training=False)
    for value in [outputs, inference] + gradients:
        assert value.dtype == tf.float64
        assert np.all(np.isfinite(value.numpy()))


def test_vit_with_layer_norm_in_float64():
    model = BACKBONES["vit"]("layer")
    x = inputs((2, 8, 8, 3), 8)
    for training in (True, False):
        outputs = model(x, training=training)
        assert outputs.dtype == tf.float64
        assert np.all(np.isfinite(outputs.numpy()))
