"""convert_batch_norm sets exactly the target's flags, from every source kind,
and copies the weights; split BN in the source model is refused by name."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.normalization import convert_batch_norm
from tests import test_case

SOURCES = {
    "batch": lambda: layers.BatchNormalization(momentum=0.8, epsilon=1e-2),
    "keras": lambda: keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-2),
    "sync": lambda: layers.BatchNormalization(synchronized=True, momentum=0.8, epsilon=1e-2),
    "renorm": lambda: layers.BatchNormalization(
        renorm=True, renorm_clipping={"rmax": 2.0}, renorm_momentum=0.5, momentum=0.8,
        epsilon=1e-2,
    ),
    "ghost": lambda: layers.GhostBatchNormalization(3, momentum=0.8, epsilon=1e-2),
    "frozen": lambda: layers.FrozenBatchNormalization(
        momentum=0.8, epsilon=1e-2, affine_trainable=False
    ),
}
TARGETS = {
    "batch": {},
    "sync": {},
    "renorm": {"renorm_clipping": {"rmax": 3.0, "dmax": 1.0}, "renorm_momentum": 0.7},
    "ghost": {"virtual_batch_size": 2},
    "frozen": {"affine_trainable": True},
    "split": {"num_domains": 2},
}
EXPECTED_TYPE = {
    "batch": layers.BatchNormalization,
    "sync": layers.BatchNormalization,
    "renorm": layers.BatchNormalization,
    "ghost": layers.GhostBatchNormalization,
    "frozen": layers.FrozenBatchNormalization,
    "split": layers.SplitBatchNormalization,
}


def source_model(kind):
    inputs = keras.Input((6,))
    norm = SOURCES[kind]()
    model = keras.Model(inputs, norm(keras.layers.Dense(5, name="dense")(inputs)))
    rng = np.random.default_rng(0)
    norm.gamma.assign(rng.uniform(0.5, 1.5, 5))
    norm.beta.assign(rng.normal(size=5))
    norm.moving_mean.assign(rng.normal(size=5))
    norm.moving_variance.assign(rng.uniform(0.5, 2.0, 5))
    return model, norm


def numpy_weights(layer, names=("gamma", "beta", "moving_mean", "moving_variance")):
    return {name: keras.ops.convert_to_numpy(getattr(layer, name)) for name in names}


@pytest.mark.parametrize("to", sorted(TARGETS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_conversion_sets_exactly_the_target_flags_and_copies_weights(source, to):
    model, old = source_model(source)
    expected = numpy_weights(old)
    converted = convert_batch_norm(model, to, **TARGETS[to])
    if to == "split":
        converted = converted.model  # the functional copy inside the router
    new = converted.layers[-1]
    assert type(new) is EXPECTED_TYPE[to]
    assert new.axis == old.axis
    assert new.epsilon == pytest.approx(old.epsilon)
    assert new.momentum == pytest.approx(old.momentum)
    if to in ("batch", "sync", "renorm"):
        assert new.synchronized is (to == "sync")
        assert new.renorm is (to == "renorm")
        if to == "renorm":
            assert new.renorm_clipping == TARGETS["renorm"]["renorm_clipping"]
            assert new.renorm_momentum == TARGETS["renorm"]["renorm_momentum"]
        else:
            assert new.get_config()["renorm_clipping"] is None
            assert new.get_config()["renorm_momentum"] == 0.99  # Keras' default
    if to == "ghost":
        assert new.virtual_batch_size == 2
    if to == "frozen":
        assert new.affine_trainable is True
        assert {v.name for v in new.trainable_weights} == {"gamma", "beta"}
    if to == "split":
        assert new.num_domains == 2
        for name in ("gamma", "beta"):
            np.testing.assert_array_equal(numpy_weights(new, [name])[name], expected[name])
        for domain in new.domain_layers:
            got = numpy_weights(domain, ("moving_mean", "moving_variance"))
            for name, value in got.items():
                np.testing.assert_array_equal(value, expected[name])
        return
    for name, value in numpy_weights(new).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-7, err_msg=name)
    x = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    test_case.assert_all_close(converted(x, training=False), model(x, training=False))


def test_renorm_source_keeps_its_clipping_when_converted_to_renorm_without_arguments():
    model, _ = source_model("renorm")
    new = convert_batch_norm(model, "renorm").layers[-1]
    assert new.renorm and not new.synchronized
    assert new.renorm_clipping == {"rmax": 2.0}
    assert new.renorm_momentum == 0.5


@pytest.mark.parametrize("to", sorted(TARGETS))
def test_model_holding_a_split_batch_norm_raises_naming_that_layer(to):
    inputs = keras.Input((4,))
    outputs = layers.SplitBatchNormalization(2, name="domain_bn")(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'domain_bn' is a SplitBatchNormalization"):
        convert_batch_norm(model, to, **TARGETS[to])


@pytest.mark.parametrize(
    "to,kwargs",
    [("batch", {}), ("ghost", {"virtual_batch_size": 8}), ("split", {"num_domains": 1})],
)
def test_converted_masked_model_trains_like_the_original_on_axis_1(to, kwargs):
    """Masking → BN(axis=1): the converted layers read the mask as Keras'
    BN does (the inputs without the last axis)."""
    inputs = keras.Input((3, 4))
    norm = keras.layers.BatchNormalization(axis=1, momentum=0.5)
    model = keras.Model(inputs, norm(keras.layers.Masking(0.0)(inputs)))
    x = np.random.default_rng(2).normal(2.0, 1.0, size=(6, 3, 4)).astype("float32")
    x[1, 0] = x[2, 2] = x[4, 1] = 0.0  # masked time steps
    converted = convert_batch_norm(model, to, **kwargs)
    fed = [x, np.zeros(6, "int32")] if to == "split" else x
    test_case.assert_all_close(converted(fed, training=True), model(x, training=True),
                               atol_scale=1e-5)
    new = [
        layer for layer in converted._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ][-1]
    for name in ("moving_mean", "moving_variance"):
        test_case.assert_all_close(getattr(new, name), getattr(norm, name), msg=name)


@pytest.mark.parametrize("to,kwargs", [("sync", {}), ("ghost", {"virtual_batch_size": 2})])
def test_converts_a_vit_whose_graph_holds_operations(to, kwargs):
    """ViTBackbone ends in `x[:, 0]`, an operation (not a layer) of its graph."""
    from keras_contrast.models import ViTBackbone

    model = ViTBackbone(hidden_dim=8, depth=1, num_heads=2, mlp_dim=8, image_size=8,
                        patch_size=4, num_channels=1, norm="batch")
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=8))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, 8))
    converted = convert_batch_norm(model, to, **kwargs)
    kinds = {type(l) for l in converted.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert kinds == {EXPECTED_TYPE[to]}
    x = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    test_case.assert_all_close(converted(x, training=False), model(x, training=False))
