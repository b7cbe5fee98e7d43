"""ResNetBackbone: parameter counts of the reference ResNets, shapes, every
norm, round trip, sync-BN fit under 2 replicas."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.models.resnet import ResNetBackbone
from tests import test_case


def trainable_parameters(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


@pytest.mark.parametrize(
    "depth,expected",
    # torchvision resnet18 / resnet50 minus their 1000-way fc (513,000 /
    # 2,049,000 parameters): 11,689,512 - 513,000 and 25,557,032 - 2,049,000.
    [(18, 11_176_512), (50, 23_508_032)],
)
def test_parameter_count_equals_torchvision_trunk(depth, expected):
    model = ResNetBackbone(depth, input_shape=(224, 224, 3))
    assert trainable_parameters(model) == expected
    assert model.output_dim == (512 if depth == 18 else 2048)


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("stem,size,expected_side", [("imagenet", 32, 1), ("cifar", 16, 2)])
def test_output_shapes(depth, stem, size, expected_side):
    model = ResNetBackbone(depth, stem=stem, width=4, input_shape=(size, size, 3))
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    assert model(x).shape == (2, model.output_dim)
    assert model.output_dim == 4 * 8 * (4 if depth == 50 else 1)
    # The last stage sees side/32 (imagenet stem) or side/8 (cifar stem).
    last = model.get_layer(model.layers[-2].name).output
    assert last.shape[1] == expected_side


NORM_CLASSES = {
    "batch": layers.BatchNormalization,
    "sync": layers.BatchNormalization,
    "renorm": layers.BatchNormalization,
    "ghost": layers.GhostBatchNormalization,
    "frozen": layers.FrozenBatchNormalization,
    "split": layers.SplitBatchNormalization,
    "layer": keras.layers.LayerNormalization,
    "group": keras.layers.GroupNormalization,
}
NORM_KWARGS = {"ghost": {"virtual_batch_size": 2}, "split": {"num_domains": 2}}


@pytest.mark.parametrize("norm", list(NORM_CLASSES))
def test_every_norm_is_used(norm):
    model = ResNetBackbone(18, stem="cifar", norm=norm, norm_kwargs=NORM_KWARGS.get(norm),
                           width=4, input_shape=(8, 8, 3))
    norms = [l for l in model.layers if "norm" in l.name]
    assert len(norms) == 1 + 8 * 2 + 3  # stem, 2 per block, 3 shortcuts
    assert all(type(l) is NORM_CLASSES[norm] for l in norms)
    assert not any(type(l) is keras.layers.BatchNormalization for l in model.layers)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    with layers.domain_scope(np.array([0, 1, 0, 1])):  # only "split" reads it
        assert np.all(np.isfinite(model(x, training=True)))


def test_callable_norm_and_zero_init_residual():
    model = ResNetBackbone(
        18, stem="cifar", width=4, input_shape=(8, 8, 3), zero_init_residual=True,
        norm=lambda name, **kw: keras.layers.BatchNormalization(name=name, **kw),
    )
    last_norms = [l for l in model.layers if l.name.endswith("_norm2")]
    assert len(last_norms) == 8
    assert all(np.all(l.gamma.numpy() == 0) for l in last_norms)
    first_norms = [l for l in model.layers if l.name.endswith("_norm1")]
    assert all(np.all(l.gamma.numpy() == 1) for l in first_norms)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"depth": 101}, "depth"), ({"stem": "cifar10"}, "stem"), ({"width": 0}, "width"),
     ({"norm": "instance"}, "norm"), ({"input_shape": (8, 8)}, "input_shape")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetBackbone(**kwargs)


@pytest.mark.parametrize(
    "input_shape",
    [(0, 8, 3), (8, 0, 3), (8, 8, 0), (8, 8, None), (-1, 8, 3), (8.0, 8, 3), (True, 8, 3),
     ("8", 8, 3), 8, "883", None, (8, 8, 3, 1)],
    ids=repr,
)
def test_rejects_input_shape_with_a_zero_or_non_integer_size(input_shape):
    with pytest.raises(ValueError, match="`input_shape` must be \\(height, width, channels\\)"):
        ResNetBackbone(18, stem="cifar", width=4, input_shape=input_shape)


def test_accepts_unknown_height_and_width_and_numpy_sizes():
    model = ResNetBackbone(18, stem="cifar", width=4, input_shape=(None, np.int64(8), 3))
    assert model.get_config()["input_shape"] == [None, 8, 3]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"depth": 18.0}, "`depth`"), ({"depth": True}, "`depth`"),
     ({"norm_kwargs": ["momentum"]}, "`norm_kwargs`")],
    ids=repr,
)
def test_rejects_non_integer_depth_and_non_dict_norm_kwargs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetBackbone(**{"stem": "cifar", "width": 4, "input_shape": (8, 8, 3), **kwargs})


def test_keras_file_round_trip():
    model = ResNetBackbone(18, stem="cifar", norm="sync", width=4, input_shape=(8, 8, 3))
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    model(x, training=True)  # moving statistics move
    restored = test_case.keras_file_round_trip(model)
    assert isinstance(restored, ResNetBackbone) and restored.norm == "sync"
    test_case.assert_all_close(restored(x, training=False), model(x, training=False))


# slow: ~40 s idle; sync BN under replicas is tested in
# tests/layers/synchronized_batch_norm_test.py.
@pytest.mark.slow
def test_sync_norm_fits_under_two_replicas():
    with test_case.strategy(2).scope():
        backbone = ResNetBackbone(18, stem="cifar", norm="sync", width=4, input_shape=(8, 8, 3))
        model = keras.Sequential([backbone, keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    before = [w.copy() for w in backbone.get_weights()]
    history = model.fit(x, rng.normal(size=(8, 3)), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(backbone.get_weights(), before))
