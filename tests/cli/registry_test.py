"""The command's one registry of models, losses and presets agrees with the
library: every name it lists exists there and builds what it says."""

import inspect

import keras
import pytest

from keras_contrast import losses
from keras_contrast import models
from keras_contrast.cli import _registry as registry
from keras_contrast.models.presets import PRESETS


@pytest.mark.parametrize("name", sorted(registry.MODELS))
def test_each_model_names_a_library_class_its_presets_and_losses(name):
    spec = registry.MODELS[name]
    model_class = getattr(models, spec.model_class)
    assert inspect.isclass(model_class) and issubclass(model_class, keras.Model)
    assert PRESETS[spec.default_preset]["model"] is model_class
    assert spec.default_preset in registry.presets_of(name)
    assert spec.default_loss in spec.losses
    assert set(spec.losses) <= set(registry.LOSSES)
    parameters = set(inspect.signature(model_class.__init__).parameters)
    if spec.backbone == "text":
        # from_preset shapes the dual encoders' text towers with these.
        parameters |= {"vocabulary_size", "sequence_length", "width"}
    if spec.backbone == "vit":
        # from_preset passes the ViT's arguments on to the backbone.
        parameters |= set(inspect.signature(models.ViTBackbone.__init__).parameters)
    for option in spec.options:  # the command line passes them to from_preset
        assert option in parameters, (name, option)
    if spec.backbone == "text":
        from keras_contrast.models import from_preset

        model = from_preset(spec.default_preset, vocabulary_size=11, width=4, sequence_length=3)
        embedding = model.tower_a.layers[1]
        assert (embedding.input_dim, embedding.output_dim) == (11, 4)
    assert set(spec.requirements) <= set(registry.REQUIREMENTS)


def test_presets_of_a_model_are_the_presets_that_build_its_class():
    for name, spec in registry.MODELS.items():
        expected = sorted(p for p, s in PRESETS.items() if s["model"].__name__ == spec.model_class)
        assert sorted(registry.presets_of(name)) == expected
    # Every preset of the library belongs to exactly one --model.
    owners = {p: [n for n in registry.MODELS if p in registry.presets_of(n)] for p in PRESETS}
    assert all(len(names) == 1 for names in owners.values()), owners


@pytest.mark.parametrize("name", sorted(registry.LOSSES))
def test_each_loss_names_a_library_loss_taking_the_temperature(name):
    loss_class = getattr(losses, registry.LOSSES[name])
    loss = registry.loss_class(name)(0.3)
    assert isinstance(loss, loss_class) and isinstance(loss, keras.losses.Loss)


def test_the_lists_of_the_command_line():
    # The names the command has always taken (README "Command line").
    assert list(registry.MODELS) == ["simclr", "moco", "mocov3", "dual"]
    assert registry.LOSS_NAMES == ("infonce", "dcl", "dclw", "clip", "mocov3", "siglip")
    assert registry.DATASETS == ("fashion_mnist", "digits", "wordnet")
    assert registry.models_taking("momentum") == ["moco", "mocov3"]
    assert registry.models_taking("shuffle_bn") == ["simclr", "moco"]
    assert registry.models_taking("queue_size") == ["moco"]
    assert registry.accepts("moco", "shuffle_bn") and not registry.accepts("mocov3", "shuffle_bn")


def test_the_sigmoid_loss_trains_the_dual_encoder_with_a_learnable_bias():
    spec = registry.MODELS["dual"]
    assert spec.losses == ("clip", "siglip") and spec.default_loss == "clip"
    assert registry.loss_class("siglip") is losses.SigLIPLoss
    # make_loss's call: the first argument is the temperature, SigLIP's bias stays -10.
    loss = registry.loss_class("siglip")(0.3)
    assert loss.temperature == 0.3 and loss.bias == -10.0
    # Without --preset (the model's default) --loss siglip trains SigLIP's preset.
    preset = registry.preset_for("dual", "siglip", spec.default_preset)
    assert preset == "siglip_dual_encoder_small"
    assert PRESETS[preset]["model_args"]["learnable_bias"] is True
    assert PRESETS[preset]["model_args"]["temperature"] == 0.1
    assert PRESETS[preset]["model_args"]["bias"] == -10.0
    assert registry.preset_for("dual", "clip", spec.default_preset) == spec.default_preset
    assert registry.check_preset_fits_loss("dual", "siglip", preset) is None
    assert registry.check_preset_fits_loss("dual", "clip", spec.default_preset) is None
    assert "--loss siglip" in registry.check_preset_fits_loss("dual", "clip", preset)
    assert "--loss siglip trains --preset siglip_dual_encoder_small" in (
        registry.check_preset_fits_loss("dual", "siglip", spec.default_preset))
    # Every preset a loss trains is one of the model's presets.
    for name, model in registry.MODELS.items():
        for loss_name, preset_name in model.loss_presets.items():
            assert loss_name in model.losses and preset_name in registry.presets_of(name)
