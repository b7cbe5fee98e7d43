"""normalization_layer: every name makes the documented layer; errors."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.normalization.factory import NORMALIZATIONS
from keras_contrast.normalization.factory import normalization_layer

EXPECTED = {
    "batch": (layers.BatchNormalization, {}),
    "sync": (layers.BatchNormalization, {}),
    "renorm": (layers.BatchNormalization, {}),
    "ghost": (layers.GhostBatchNormalization, {"virtual_batch_size": 2}),
    "frozen": (layers.FrozenBatchNormalization, {}),
    "split": (layers.SplitBatchNormalization, {"num_domains": 2}),
    "layer": (keras.layers.LayerNormalization, {}),
    "group": (keras.layers.GroupNormalization, {"groups": 2}),
}


@pytest.mark.parametrize("norm", NORMALIZATIONS)
def test_each_name_makes_its_layer(norm):
    cls, kwargs = EXPECTED[norm]
    layer = normalization_layer(norm, name="n", epsilon=1e-3, **kwargs)
    assert type(layer) is cls and layer.name == "n"
    assert getattr(layer, "synchronized", False) == (norm == "sync")
    assert getattr(layer, "renorm", False) == (norm == "renorm")
    with layers.domain_scope(0):  # only SplitBatchNormalization reads it
        y = layer(np.random.default_rng(0).normal(size=(4, 6)).astype("float32"), training=False)
    assert y.shape == (4, 6)


def test_kind_arguments_and_callable():
    assert normalization_layer("ghost", virtual_batch_size=8).virtual_batch_size == 8
    assert normalization_layer("batch", momentum=0.5).momentum == 0.5
    layer = normalization_layer(lambda name: keras.layers.LayerNormalization(name=name), name="x")
    assert isinstance(layer, keras.layers.LayerNormalization) and layer.name == "x"


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (("instance",), {}, "`norm` must be one of"),
        (("ghost",), {}, "virtual_batch_size"),
        (("split",), {}, "num_domains"),
        (("group",), {}, "groups"),
        (("layer",), {"momentum": 0.9}, "does not take"),
        ((lambda name: "not a layer",), {}, "keras.layers.Layer"),
    ],
)
def test_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        normalization_layer(*args, **kwargs)
