"""Presets: every preset builds, overrides are routed, the ResNet-18 SimCLR
parameter count is derived by hand."""

import numpy as np
import pytest

from keras_contrast import layers
from keras_contrast.models import DualEncoder
from keras_contrast.models import MoCo
from keras_contrast.models import MoCoV3
from keras_contrast.models import SimCLR
from keras_contrast.models import from_preset
from keras_contrast.models.presets import PRESETS


def trainable_parameters(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def test_simclr_resnet18_cifar_parameter_count():
    model = from_preset("simclr_resnet18_cifar")
    model.build((None, 2, 32, 32, 3))
    # CIFAR stem: conv 3x3x3x64 + BN (2x64) replaces 7x7x3x64 + BN.
    trunk = 11_176_512 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    # Projection: Dense 512→2048 (no bias) + BN (2x2048) + Dense 2048→128 (bias).
    head = 512 * 2048 + 2 * 2048 + 2048 * 128 + 128
    assert trainable_parameters(model) == trunk + head
    assert isinstance(model, SimCLR) and model.backbone.norm == "sync"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_small(name):
    if name.startswith("simclr"):
        model = from_preset(name, width=4, input_shape=(16, 16, 1), projection_dims=(8, 4))
        x = np.zeros((2, 2, 16, 16, 1), "float32")
        assert model(x).shape == (2, 2, 4)
    elif name.startswith("moco_"):
        model = from_preset(name, width=4, input_shape=(16, 16, 1), projection_dims=(8, 4),
                            queue_size=8)
        assert isinstance(model, MoCo) and model.backbone.norm == "batch"
        assert model(np.zeros((2, 2, 16, 16, 1), "float32")).shape == (2, 2, 4)
    elif name.startswith("mocov3"):
        model = from_preset(name, image_size=16, patch_size=8, num_channels=1, depth=1,
                            projection_dims=(8, 8, 4), prediction_dims=(8, 4))
        assert isinstance(model, MoCoV3)
        assert not model.backbone.patch_projection.trainable
        assert model(np.zeros((2, 2, 16, 16, 1), "float32")).shape == (2, 4, 4)
    else:
        model = from_preset(name, vocabulary_size=50, sequence_length=6, width=8)
        assert isinstance(model, DualEncoder)
        tokens = np.ones((3, 6), "int32")
        assert model((tokens, tokens)).shape == (3, 2, 128)
        assert isinstance(model.temperature, layers.LearnableTemperature)


def test_errors():
    with pytest.raises(ValueError, match="presets"):
        from_preset("simclr_resnet1000")
    with pytest.raises(ValueError, match="does not take"):
        from_preset("simclr_resnet_tiny", prediction_dims=(8, 4))


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"vocabulary_size": 0}, "`vocabulary_size` must be an int >= 2 .*got 0"),
        ({"vocabulary_size": -1}, "`vocabulary_size` must be an int >= 2"),
        ({"vocabulary_size": True}, "`vocabulary_size` must be an int >= 2"),
        ({"vocabulary_size": "32768"}, "`vocabulary_size` must be an int >= 2"),
        ({"sequence_length": 0}, "`sequence_length` must be an int > 0"),
        ({"width": 2.5}, "`width` must be an int > 0"),
    ],
)
def test_text_towers_reject_bad_sizes_naming_them(overrides, match):
    with pytest.raises(ValueError, match=match):
        from_preset("dual_encoder_small", **overrides)


def test_moco_presets_follow_moco_v2():
    from keras_contrast.models.presets import PRESETS

    # MoCo v2 (Chen et al., 2020): ResNet-50 with per-replica BN, MLP head
    # 2048-128 without BN, K = 65536, m = 0.999 (configuration only: building
    # a ResNet-50 and its momentum copy takes ~20 s here).
    preset = PRESETS["moco_resnet50"]
    assert preset["model"] is MoCo and preset["backbone_args"]["norm"] == "batch"
    assert preset["backbone_args"]["depth"] == 50
    assert preset["model_args"] == dict(projection_dims=(2048, 128), queue_size=65536,
                                        momentum=0.999)


def test_siglip_preset_has_siglips_initialisation():
    # SigLIP (Zhai et al., 2023): t' = log 10 (τ = 0.1), b = -10, both learned.
    model = from_preset("siglip_dual_encoder_small", vocabulary_size=50, sequence_length=6,
                        width=8)
    tokens = np.ones((3, 6), "int32")
    assert model((tokens, tokens)).shape == (3, 2, 128)
    assert model.learnable_bias and model.logit_bias.numpy() == -10.0
    np.testing.assert_allclose(model.temperature.log_scale.numpy(), np.log(10.0), rtol=1e-7)
    assert {v.path for v in model.logit_weights} <= {v.path for v in model.trainable_variables}
    # The CLIP preset has no bias.
    assert from_preset("dual_encoder_small", vocabulary_size=50, sequence_length=6,
                       width=8).logit_bias is None
