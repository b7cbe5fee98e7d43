"""Preset folders: `save_to_preset` → `from_preset` is bit-exact for every
model, under a strategy too; overrides of the same shapes load, others and
damaged folders fail with a ValueError naming the problem."""

import json
import os

import keras
import numpy as np
import pytest

from keras_contrast import models
from keras_contrast.models import from_preset
from keras_contrast.models import list_presets
from keras_contrast.models import preset_files
from keras_contrast.models import save_to_preset
from tests import test_case


def small(kind):
    """A built small model of each kind with every variable (BN moving
    statistics, MoCo's queue and momentum encoder included) set to its own
    random values, so a loader that skipped or swapped any is caught."""
    if kind == "dual":
        model = from_preset("dual_encoder_small", vocabulary_size=40, sequence_length=6, width=8)
        model.build(((None, 6), (None, 6)))
    else:
        if kind == "simclr":
            model = from_preset("simclr_resnet_tiny", width=4, input_shape=(8, 8, 1),
                                projection_dims=(8, 4))
        elif kind == "moco":
            model = from_preset("moco_resnet_tiny", width=4, input_shape=(8, 8, 1),
                                projection_dims=(8, 4), queue_size=16)
        else:
            model = from_preset("mocov3_vit_tiny", image_size=8, patch_size=4, num_channels=1,
                                depth=1, projection_dims=(8, 8, 4), prediction_dims=(8, 4),
                                total_steps=4)
        model.build((None, 2, 8, 8, 1))
    rng = np.random.default_rng(0)
    for variable in model.variables:
        values = rng.uniform(0.1, 1.0, variable.shape)
        if "int" in str(variable.dtype):
            values = rng.integers(0, 3, variable.shape)
        variable.assign(values.astype(variable.dtype))
    return model


def outputs(model, kind):
    if kind == "dual":
        tokens = np.random.default_rng(1).integers(1, 40, (4, 6)).astype("int32")
        return [np.asarray(model.encode_a(tokens)), np.asarray(model.encode_b(tokens))]
    x = np.random.default_rng(1).uniform(size=(4, 8, 8, 1)).astype("float32")
    return [np.asarray(model.encoder(x, training=False))]


def assert_same_state(a, b):
    names_a = [v.path for v in a.variables]
    assert names_a == [v.path for v in b.variables]
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=va.path)


@pytest.mark.parametrize("kind", ["simclr", "moco", "mocov3", "dual"])
def test_round_trip_is_bit_exact(kind, tmp_path):
    model = small(kind)
    folder = save_to_preset(model, str(tmp_path / "p"), metadata={"task": kind})
    loaded = from_preset(folder)
    assert type(loaded) is type(model)
    assert_same_state(model, loaded)
    for expected, got in zip(outputs(model, kind), outputs(loaded, kind)):
        np.testing.assert_array_equal(got, expected)
    metadata = json.load(open(os.path.join(folder, "metadata.json")))
    assert metadata["task"] == kind
    assert metadata["format_version"] == preset_files.FORMAT_VERSION
    assert metadata["min_library_version"] == preset_files.library_version()
    import hashlib

    digest = hashlib.sha256(open(os.path.join(folder, "model.weights.h5"), "rb").read())
    assert metadata["weights"]["model.weights.h5"]["sha256"] == digest.hexdigest()
    assert os.path.getsize(os.path.join(folder, "README.md")) > 0
    # load_weights=False: the same architecture, fresh weights.
    fresh = from_preset(folder, load_weights=False)
    assert [v.shape for v in fresh.weights] == [v.shape for v in model.weights]
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights()))


def test_loads_inside_a_strategy_scope(tmp_path):
    import tensorflow as tf

    model = small("simclr")
    folder = save_to_preset(model, str(tmp_path / "p"))
    strategy = test_case.strategy(2)
    with strategy.scope():
        loaded = from_preset(folder)
    assert all(isinstance(v.value, tf.distribute.DistributedValues) for v in loaded.variables)
    assert_same_state(model, loaded)


def test_norm_override_of_the_same_shapes_and_encoder_only(tmp_path):
    model = small("simclr")
    folder = save_to_preset(model, str(tmp_path / "p"))
    batch = from_preset(folder, norm="batch")

    def synchronized(m):
        return [layer.synchronized for layer in m.backbone.layers if "norm" in layer.name]

    assert len(synchronized(model)) == 20 and all(synchronized(model))
    assert len(synchronized(batch)) == 20 and not any(synchronized(batch))
    np.testing.assert_array_equal(
        np.concatenate([w.ravel() for w in batch.get_weights()]),
        np.concatenate([w.ravel() for w in model.get_weights()]))
    encoder = from_preset(folder, encoder_only=True)
    x = np.random.default_rng(2).uniform(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(encoder(x, training=False)),
                                  np.asarray(model.encoder(x, training=False)))
    # A model argument that changes no weight: MoCo's momentum.
    moco_folder = save_to_preset(small("moco"), str(tmp_path / "m"))
    assert from_preset(moco_folder, momentum=0.5).momentum == 0.5


def test_overrides_that_change_shapes_or_do_not_exist(tmp_path):
    folder = save_to_preset(small("simclr"), str(tmp_path / "p"))
    with pytest.raises(ValueError, match=r"do not fit .*'width': 8"):
        from_preset(folder, width=8)
    with pytest.raises(ValueError, match=r"do not fit .*'norm': 'frozen'"):
        from_preset(folder, norm="frozen")
    with pytest.raises(ValueError, match=r"does not take \['queue_sizes'\]"):
        from_preset(folder, queue_sizes=3)
    # Without weights a shape override is just a new architecture.
    assert from_preset(folder, load_weights=False, width=8).backbone.width == 8
    dual = save_to_preset(small("dual"), str(tmp_path / "d"))
    with pytest.raises(ValueError, match="encoder_only=True.*DualEncoder"):
        from_preset(dual, encoder_only=True)


def test_safe_mode_refuses_python_code(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    folder = save_to_preset(model, str(tmp_path / "lambda"))
    with pytest.raises(ValueError, match="(?i)lambda"):
        from_preset(folder)


def test_damaged_folders(tmp_path):
    folder = save_to_preset(small("simclr"), str(tmp_path / "p"))
    with pytest.raises(ValueError, match="Unknown preset 'nope'.*simclr_resnet50"):
        from_preset("nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' has no config.json"):
        from_preset(str(empty))
    weights = os.path.join(folder, "model.weights.h5")
    data = bytearray(open(weights, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(weights, "wb") as handle:
        handle.write(data)
    with pytest.raises(ValueError, match="model.weights.h5 .* has sha256 .* damaged"):
        from_preset(folder)
    os.remove(weights)
    with pytest.raises(ValueError, match="has no model.weights.h5.*load_weights=False"):
        from_preset(folder)
    metadata_file = os.path.join(folder, "metadata.json")
    metadata = json.load(open(metadata_file))
    for key, value, message in (("format_version", 2, "format_version 2"),
                                ("format_version", True, "format_version True"),
                                ("min_library_version", "99.0", r"needs keras_contrast >= 99.0")):
        json.dump({**metadata, key: value}, open(metadata_file, "w"))
        with pytest.raises(ValueError, match=message):
            from_preset(folder, load_weights=False)


def test_bad_arguments(tmp_path):
    model = small("simclr")
    with pytest.raises(TypeError, match="load_weights must be a bool, got 'yes'"):
        from_preset("simclr_resnet_tiny", load_weights="yes")
    with pytest.raises(TypeError, match="encoder_only must be a bool, got 1"):
        from_preset("simclr_resnet_tiny", encoder_only=1)
    with pytest.raises(TypeError, match="name_or_path must be a preset name or a folder"):
        from_preset(3)
    with pytest.raises(ValueError, match="must be built"):
        save_to_preset(from_preset("simclr_resnet_tiny", width=4), str(tmp_path / "u"))
    with pytest.raises(TypeError, match="model must be a keras.Model, got str"):
        save_to_preset("model", str(tmp_path / "s"))
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_to_preset(model, str(tmp_path / "j"), metadata={"x": object()})
    with pytest.raises(ValueError, match=r"must not set \['weights'\]"):
        save_to_preset(model, str(tmp_path / "r"), metadata={"weights": 1})
    with pytest.raises(TypeError, match="metadata must be a dict, got list"):
        save_to_preset(model, str(tmp_path / "l"), metadata=[1])
    folder = save_to_preset(model, str(tmp_path / "p"))
    with pytest.raises(ValueError, match="already holds a preset; pass overwrite=True"):
        save_to_preset(model, folder)
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        save_to_preset(model, folder, overwrite="yes")
    assert save_to_preset(model, folder, overwrite=True, card="# card\n") == folder
    assert open(os.path.join(folder, "README.md")).read() == "# card\n"


def test_list_presets_says_which_carry_weights():
    listing = list_presets()
    assert listing["simclr_resnet50"] == {
        "description": models.presets.PRESETS["simclr_resnet50"]["description"],
        "weights": False}
    shipped = preset_files.shipped_presets()
    for name, folder in shipped.items():
        assert listing[name]["weights"] is os.path.isfile(os.path.join(folder, "model.weights.h5"))
    assert {n for n, p in listing.items() if p["weights"]} <= set(shipped)
    with pytest.raises(ValueError, match="No shipped preset with weights is named 'simclr_resnet50'"):
        models.preset_folder("simclr_resnet50")


def test_cli_evaluate_preset(tmp_path, capsys):
    from keras_contrast import cli
    from keras_contrast import evaluation
    from keras_contrast.cli._datasets import open_images

    model = from_preset("simclr_resnet_tiny", width=4, input_shape=(8, 8, 1),
                        projection_dims=(8, 4))
    model.build((None, 2, 8, 8, 1))
    folder = save_to_preset(model, str(tmp_path / "p"))
    capsys.readouterr()
    assert cli.main(["evaluate", "--preset", folder, "--dataset", "digits", "--knn-k", "10",
                     "--probe-epochs", "1"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (x, y), (xt, yt) = open_images("digits").train, open_images("digits").test
    expected = evaluation.knn_accuracy(model.encoder, (x / 255.0, y), (xt / 255.0, yt), k=10)
    assert scores["knn_accuracy"] == pytest.approx(expected)
    for argv, message in (
            (["evaluate", "--dataset", "digits"], "one of the two"),
            (["evaluate", folder, "--preset", folder, "--dataset", "digits"], "one of the two"),
            (["evaluate", "--preset", "simclr_resnet50", "--dataset", "digits"],
             "architecture without weights"),
            (["evaluate", "--preset", "nope", "--dataset", "digits"], "Unknown preset 'nope'")):
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["simclr", "dual"])
def test_a_compiled_model_saves_its_variables_without_the_optimizer(kind, tmp_path):
    # Keras' save_weights writes a compiled model's optimizer state too
    # (AdamW: 3x the file); a preset holds the model's variables only.
    import h5py

    model = small(kind)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.optimizer.build(model.trainable_variables)
    state = [np.asarray(v).copy() for v in model.variables]
    folder = save_to_preset(model, str(tmp_path / "p"))
    with h5py.File(os.path.join(folder, "model.weights.h5")) as handle:
        assert "optimizer" not in handle
        stored = []
        handle.visititems(lambda name, item: stored.append(item.size * item.dtype.itemsize)
                          if isinstance(item, h5py.Dataset) else None)
    assert sum(stored) == sum(v.size * v.dtype.itemsize for v in state)
    loaded = from_preset(folder)
    assert_same_state(model, loaded)
    for before, variable in zip(state, model.variables):  # the model itself is untouched
        np.testing.assert_array_equal(np.asarray(variable), before)
    assert model.optimizer is not None
    assert "compile_config" not in json.load(open(os.path.join(folder, "config.json")))
    assert getattr(loaded, "optimizer", None) is None  # loaded uncompiled, for the user's own compile
