"""ViTBackbone: parameter count of ViT-Tiny, sin-cos embedding against
NumPy, frozen random patch projection under fit, round trip, errors."""

import keras
import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.models.vit import ViTBackbone
from keras_contrast.models.vit import sincos_position_embedding
from tests import test_case

SMALL = dict(hidden_dim=16, depth=2, num_heads=2, image_size=8, patch_size=4, num_channels=1)


def trainable_parameters(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def test_vit_tiny_parameter_count():
    d, mlp, patches, blocks = 192, 768, (224 // 16) ** 2, 12
    projection = 16 * 16 * 3 * d + d
    tokens = d + (patches + 1) * d  # class token + learned positions
    attention = 4 * (d * d + d)  # query, key, value, output projections
    block = 2 * 2 * d + attention + (d * mlp + mlp) + (mlp * d + d)  # 2 LayerNorms
    expected = projection + tokens + blocks * block + 2 * d  # + final LayerNorm
    assert expected == 5_524_416  # timm vit_tiny_patch16_224 without its 193,000-param head
    assert trainable_parameters(ViTBackbone("tiny")) == expected


def test_sincos_embedding_equals_numpy_formula():
    table = sincos_position_embedding(3, 8)
    assert table.shape == (9, 8)
    for index in range(9):
        row, col = divmod(index, 3)
        omega = 1.0 / 10000 ** (np.arange(2) / 2)
        expected = np.concatenate(
            [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]
        )
        np.testing.assert_allclose(table[index], expected, rtol=1e-6, atol=1e-7)
    model = ViTBackbone(position_embedding="sincos", **SMALL)
    positions = model.get_layer("tokens").positions
    assert not positions.trainable
    np.testing.assert_allclose(positions.numpy()[0, 1:], sincos_position_embedding(2, 16))
    np.testing.assert_array_equal(positions.numpy()[0, 0], 0.0)


def test_shapes_and_batch_norm_variant():
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    assert ViTBackbone(**SMALL)(x).shape == (3, 16)
    model = ViTBackbone(norm="batch", **SMALL)
    assert sum(isinstance(l, layers.BatchNormalization) for l in model.layers) == 5
    assert model(x, training=True).shape == (3, 16)


# freeze=False (slow) is the control: the trainable projection moves.
@pytest.mark.parametrize("freeze", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_frozen_patch_projection_keeps_its_random_weights(freeze):
    backbone = ViTBackbone(freeze_patch_projection=freeze, **SMALL)
    model = keras.Sequential([backbone, keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    projection = [w.numpy().copy() for w in backbone.patch_projection.weights]
    others = [v.numpy().copy() for v in backbone.trainable_variables]
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(16, 8, 8, 1)), rng.normal(size=(16, 2)), batch_size=8,
              epochs=2, verbose=0)
    moved = [np.max(np.abs(w.numpy() - p)) for w, p in zip(backbone.patch_projection.weights,
                                                         projection)]
    if freeze:
        assert moved == [0.0, 0.0]
        assert len(backbone.trainable_variables) == len(others)
        assert all(id(v) not in {id(w) for w in backbone.patch_projection.weights}
                   for v in model.trainable_variables)
    else:
        assert min(moved) > 0
    assert all(np.max(np.abs(v.numpy() - o)) > 0
               for v, o in zip(backbone.trainable_variables, others)
               if v.name != "class_token")


def test_keras_file_round_trip_keeps_frozen_projection():
    model = ViTBackbone(freeze_patch_projection=True, position_embedding="sincos", **SMALL)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype("float32")
    restored = test_case.keras_file_round_trip(model)
    assert restored.freeze_patch_projection and not restored.patch_projection.trainable
    test_case.assert_all_close(restored(x), model(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"variant": "huge"}, "variant"), ({"image_size": 10, "patch_size": 4}, "patch_size"),
     ({"hidden_dim": 10, "num_heads": 3}, "num_heads"), ({"depth": 0}, "depth"),
     ({"position_embedding": "rope"}, "position_embedding")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTBackbone(**kwargs)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, "0.1", True, None, float("nan")], ids=repr)
def test_rejects_dropout_outside_zero_one(dropout):
    with pytest.raises(ValueError, match="`dropout` must be a number in \\[0, 1\\)"):
        ViTBackbone(dropout=dropout, **SMALL)


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"num_channels": 0}, {"patch_size": 0},
                                    {"image_size": True}], ids=repr)
def test_rejects_zero_sizes(kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}` must be an integer > 0"):
        ViTBackbone(**{**SMALL, **kwargs})


def test_rejects_norm_kwargs_that_are_not_a_dict():
    with pytest.raises(ValueError, match="`norm_kwargs` must be a dict"):
        ViTBackbone(norm_kwargs=[("epsilon", 1e-6)], **SMALL)
