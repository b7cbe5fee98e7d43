"""ProjectionHead: structure, a NumPy reference forward pass, errors and
serialization."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from tests import test_case


def test_forward_equals_numpy_in_inference_mode():
    head = layers.ProjectionHead((6, 3), norm="batch", last_norm=True, last_norm_affine=False)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    head(x)
    rng = np.random.default_rng(1)
    for variable in head.weights:  # non-trivial statistics and affine terms
        value = rng.uniform(0.5, 1.5, size=variable.shape).astype("float32")
        variable.assign(value)
    d0, d1 = head.dense_layers
    n0, n1 = head.norm_layers

    def bn(x, layer, affine):
        y = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
        return y * layer.gamma.numpy() + layer.beta.numpy() if affine else y

    hidden = np.maximum(bn(x @ d0.kernel.numpy(), n0, True), 0.0)
    expected = bn(hidden @ d1.kernel.numpy(), n1, False)
    test_case.assert_all_close(head(x, training=False), expected, rtol=1e-5)


def test_structure_biases_and_affine_terms():
    head = layers.ProjectionHead((8, 8, 4), norm="batch", last_norm=True, last_norm_affine=False)
    head.build((None, 5))
    assert [d.use_bias for d in head.dense_layers] == [False, False, False]
    assert head.norm_layers[0].gamma is not None and head.norm_layers[2].gamma is None
    plain = layers.ProjectionHead((8, 4), norm=None)
    plain.build((None, 5))
    assert [d.use_bias for d in plain.dense_layers] == [True, True]
    assert plain.norm_layers == [None, None]
    simclr = layers.ProjectionHead((8, 4))  # last layer: Dense with bias, no norm
    simclr.build((None, 5))
    assert simclr.dense_layers[-1].use_bias and simclr.norm_layers[-1] is None
    assert simclr.compute_output_shape((None, 5)) == (None, 4)


def test_sync_and_layer_norm_and_callable():
    sync = layers.ProjectionHead((4, 2), norm="sync")
    sync.build((None, 3))
    assert sync.norm_layers[0].synchronized
    layer_norm = layers.ProjectionHead((4, 2), norm="layer")
    layer_norm.build((None, 3))
    assert isinstance(layer_norm.norm_layers[0], keras.layers.LayerNormalization)
    custom = layers.ProjectionHead((4, 2), norm=lambda name: keras.layers.GroupNormalization(2, name=name))
    custom.build((None, 3))
    assert isinstance(custom.norm_layers[0], keras.layers.GroupNormalization)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"units": ()}, "units"), ({"units": (4, 0)}, "units"), ({"norm": "ghost"}, "norm")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.ProjectionHead(**kwargs)


def test_serialization_round_trip():
    head = layers.ProjectionHead((6, 3), norm="sync", activation="gelu", last_norm=True)
    restored = test_case.serialization_round_trip(head)
    assert restored.get_config() == head.get_config()
    x = np.random.default_rng(2).normal(size=(4, 5)).astype("float32")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, head(inputs))
    loaded = test_case.keras_file_round_trip(model)
    test_case.assert_all_close(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
