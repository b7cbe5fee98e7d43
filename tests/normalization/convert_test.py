"""convert_batch_norm / freeze_batch_norm on small and nested models and on
keras.applications.ResNet50(weights=None)."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.normalization.convert import convert_batch_norm
from keras_contrast.normalization.convert import freeze_batch_norm
from tests import test_case


def trained_statistics(model, x):
    """Gives every BN layer non-trivial moving statistics and affine weights."""
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=channels))
            layer.beta.assign(rng.normal(size=channels))
    return model


def nested_model():
    """Sequential → functional block with BN, plus a BN at the top level."""
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8)(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    block = keras.Model(inputs, keras.layers.Activation("relu")(hidden), name="block")
    model = keras.Sequential(
        [keras.Input((6,)), block, keras.layers.Dense(5), keras.layers.BatchNormalization()]
    )
    return trained_statistics(model, None)


def batch_norms(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.mark.parametrize(
    "to,kwargs,kind",
    [
        ("batch", {}, layers.BatchNormalization),
        ("sync", {}, layers.BatchNormalization),
        ("renorm", {"renorm_clipping": {"rmax": 2.0}}, layers.BatchNormalization),
        ("frozen", {}, "FrozenBatchNormalization"),
        ("ghost", {"virtual_batch_size": 2}, "GhostBatchNormalization"),
    ],
)
def test_nested_model_inference_unchanged(to, kwargs, kind):
    model = nested_model()
    converted = convert_batch_norm(model, to, **kwargs)
    kind = getattr(layers, kind) if isinstance(kind, str) else kind
    converted_norms = batch_norms(converted)
    assert len(converted_norms) == 2
    assert all(type(layer) is kind for layer in converted_norms)
    if to == "sync":
        assert all(layer.synchronized for layer in converted_norms)
    if to == "renorm":
        assert all(layer.renorm for layer in converted_norms)
    x = np.random.default_rng(1).normal(2.0, 1.5, size=(8, 6)).astype("float32")
    test_case.assert_all_close(
        converted(x, training=False), model(x, training=False), rtol=1e-5, atol_scale=1e-5
    )
    # The copy shares no variables with the original.
    original_ids = {id(v) for v in model.weights}
    assert not any(id(v) in original_ids for v in converted.weights)


def test_sync_copy_trains_with_batch_statistics():
    model = nested_model()
    converted = convert_batch_norm(model, "sync")
    x = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    outputs = keras.ops.convert_to_numpy(converted(x, training=True))
    block, dense, top = converted.layers
    pre = keras.ops.convert_to_numpy(dense(block(x, training=True))).astype("float64")
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in (top.gamma, top.beta))
    expected = gamma * (pre - pre.mean(0)) / np.sqrt(pre.var(0) + top.epsilon) + beta
    test_case.assert_all_close(outputs, expected, rtol=1e-4, atol_scale=1e-5)


def test_freeze_keeps_statistics_and_affine_through_fit():
    model = nested_model()
    frozen = freeze_batch_norm(model, affine_trainable=False)
    x = np.random.default_rng(3).normal(size=(16, 6)).astype("float32")
    # Training mode normalises with the moving statistics.
    test_case.assert_all_close(
        frozen(x, training=True), model(x, training=False), rtol=1e-5, atol_scale=1e-5
    )
    frozen.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [keras.ops.convert_to_numpy(w).copy() for n in batch_norms(frozen) for w in n.weights]
    frozen.fit(x, np.zeros((16, 5), "float32"), epochs=1, batch_size=8, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for n in batch_norms(frozen) for w in n.weights]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_frozen_statistics_reach_converted_layers_through_fit():
    model = convert_batch_norm(nested_model(), "batch")
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(4).normal(3.0, 2.0, size=(16, 6)).astype("float32")
    y = np.zeros((16, 5), "float32")
    before = [keras.ops.convert_to_numpy(n.moving_mean).copy() for n in batch_norms(model)]
    with layers.frozen_statistics():
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for b, n in zip(before, batch_norms(model)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(n.moving_mean), b)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # same traced function
    assert any(
        np.max(np.abs(keras.ops.convert_to_numpy(n.moving_mean) - b)) > 1e-3
        for b, n in zip(before, batch_norms(model))
    )


def test_split_routes_domains_and_copies_statistics():
    model = nested_model()
    converted = convert_batch_norm(model, "split", num_domains=3)
    x = np.random.default_rng(5).normal(size=(6, 6)).astype("float32")
    domain = np.array([0, 1, 2, 0, 1, 2], "int32")
    test_case.assert_all_close(
        converted([x, domain], training=False), model(x, training=False),
        rtol=1e-5, atol_scale=1e-5,
    )
    restored = test_case.keras_file_round_trip(converted)
    test_case.assert_all_close(
        restored([x, domain], training=False), model(x, training=False),
        rtol=1e-5, atol_scale=1e-5,
    )


def test_keras_file_round_trip_of_converted_model():
    converted = convert_batch_norm(nested_model(), "renorm")
    x = np.random.default_rng(6).normal(size=(4, 6)).astype("float32")
    restored = test_case.keras_file_round_trip(converted)
    test_case.assert_all_close(restored(x, training=False), converted(x, training=False))


# slow: ~20 s; conversion itself is tested on the small models above.
@pytest.mark.slow
def test_resnet50_conversion():
    resnet = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    trained_statistics(resnet, None)
    x = np.random.default_rng(7).normal(size=(2, 32, 32, 3)).astype("float32")
    reference = keras.ops.convert_to_numpy(resnet(x, training=False))
    assert len(batch_norms(resnet)) == 53
    for to in ("sync", "renorm", "frozen"):
        converted = convert_batch_norm(resnet, to)
        norms = batch_norms(converted)
        assert len(norms) == 53
        assert not any(type(n) is keras.layers.BatchNormalization for n in norms)
        assert len(converted.layers) == len(resnet.layers)
        test_case.assert_all_close(
            converted(x, training=False), reference, rtol=1e-5, atol_scale=1e-5
        )


def test_rejects_bad_arguments():
    model = nested_model()
    with pytest.raises(ValueError, match="`to`"):
        convert_batch_norm(model, "instance")
    with pytest.raises(ValueError, match="virtual_batch_size"):
        convert_batch_norm(model, "ghost")
    with pytest.raises(ValueError, match="does not take"):
        convert_batch_norm(model, "sync", virtual_batch_size=4)
    with pytest.raises(ValueError, match="functional or Sequential"):
        convert_batch_norm(keras.layers.Dense(3), "sync")


def test_rejects_batch_norm_hidden_in_a_subclassed_layer():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = keras.layers.BatchNormalization()

        def call(self, x):
            return self.norm(x)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Block()(inputs))
    with pytest.raises(ValueError, match="cannot reach"):
        convert_batch_norm(model, "sync")
