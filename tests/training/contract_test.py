"""The model–trainer contract: `ContrastiveModel` declares `encoder`,
`after_optimizer_step`, `training_optimizer` (set by a wrapping GradCache
through `set_training_optimizer`) and its gradient-norm groups; nothing is
set on a model behind its back, and wrapping a model in GradCache adds
nothing to what is saved."""

import os
import pathlib
import re
import tempfile
import zipfile
from unittest import mock

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast import models
from keras_contrast.callbacks import GradientNormMonitor
from keras_contrast.training import ContrastiveModel
from keras_contrast.training import GradCache
from keras_contrast.training import encoder_of
from keras_contrast.training import watch_gradient_norms

PACKAGE = pathlib.Path(__file__).absolute().parents[2] / "keras_contrast"
X = np.random.default_rng(0).normal(size=(8, 2, 4, 4, 1)).astype("float32")


def backbone():
    return keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(6)]
    )


def simclr():
    keras.utils.set_random_seed(0)
    return models.SimCLR(backbone(), projection_dims=(8, 4))


def fit(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.DCLW(0.5))
    model.fit(X, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[GradientNormMonitor()])
    return model


def h5_datasets(path, member=None):
    """{dataset path: shape} of a `.weights.h5` file (or of the weights
    inside a `.keras` archive, `member="model.weights.h5"`)."""
    with tempfile.TemporaryDirectory() as directory:
        if member is not None:
            with zipfile.ZipFile(path) as archive:
                path = archive.extract(member, directory)
        found = {}
        with h5py.File(path) as file:
            file.visititems(lambda name, obj: found.__setitem__(name, obj.shape)
                            if isinstance(obj, h5py.Dataset) else None)
    return found


def checkpoint_keys(model):
    with tempfile.TemporaryDirectory() as directory:
        path = tf.train.Checkpoint(model=model).write(os.path.join(directory, "ckpt"))
        return sorted(name for name, _ in tf.train.list_variables(path))


def test_no_hidden_attributes_in_the_package_source():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for pattern in (r"_kc_\w+", r"object\.__setattr__"):
            offenders += [f"{path.name}: {m}" for m in re.findall(pattern, text)]
    assert not offenders


def test_training_through_grad_cache_sets_no_hidden_attribute():
    inner = simclr()
    cached = fit(GradCache(inner, num_chunks=2))
    hidden = [name for model in (inner, cached) for name in vars(model) if "_kc_" in name]
    assert not hidden
    assert inner.training_optimizer is cached.optimizer
    assert set(cached.gradient_norm_groups) == {"grad_inf_norm/first", "grad_inf_norm/last"}
    assert inner.gradient_norm_groups == {}  # the monitor watched the model being fit


def test_every_ready_model_declares_its_encoder():
    ready = [
        models.SimCLR(backbone(), projection_dims=(8, 4)),
        models.MoCo(backbone(), projection_dims=(8, 4), queue_size=16),
        models.MoCoV3(backbone(), projection_dims=(8, 4), prediction_dims=(8, 4)),
    ]
    for model in ready:
        assert model.encoder is model.backbone
        assert encoder_of(GradCache(model, num_chunks=2)) is model.backbone
    dual = models.DualEncoder(backbone(), backbone(), 4)
    with pytest.raises(AttributeError, match="encode_a"):
        dual.encoder
    assert encoder_of(dual) is dual  # export_encoder then names export_dual_encoder


class Siamese(ContrastiveModel):
    def __init__(self, encoder=None, **kwargs):
        super().__init__(**kwargs)
        if encoder is not None:
            self.encoder = encoder

    def call(self, views, training=None):
        return views


def test_a_subclass_sets_its_encoder_or_is_told_it_has_none():
    encoder = keras.layers.Dense(3)
    encoder.build((None, 5))
    model = Siamese(encoder)
    assert model.encoder is encoder
    assert [id(v) for v in model.weights] == [id(v) for v in encoder.weights]  # tracked
    with pytest.raises(AttributeError, match=r"Siamese has no `encoder`.*self\.encoder"):
        Siamese().encoder


def test_grad_cache_declares_its_optimizer_through_set_training_optimizer():
    inner = simclr()
    own = keras.optimizers.SGD(0.1)
    inner.compile(optimizer=own, loss=losses.DCLW(0.5))
    assert inner.training_optimizer is own
    cached = GradCache(inner, num_chunks=2)
    with mock.patch.object(ContrastiveModel, "set_training_optimizer", autospec=True,
                           side_effect=ContrastiveModel.set_training_optimizer) as spy:
        cached.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.DCLW(0.5))
    spy.assert_called_once_with(inner, cached.optimizer)
    assert inner.training_optimizer is cached.optimizer
    inner.set_training_optimizer(None)
    assert inner.training_optimizer is inner.optimizer
    with pytest.raises(TypeError, match="`optimizer`"):
        inner.set_training_optimizer("adam")


def test_watch_gradient_norms_needs_a_step_that_computes_them():
    with pytest.raises(TypeError, match="`model`.*ContrastiveModel or GradCache"):
        watch_gradient_norms(backbone())


def test_grad_cache_saves_what_the_unwrapped_model_saves():
    unwrapped = fit(simclr())
    inner = simclr()
    untouched = checkpoint_keys(simclr())  # built by nothing, attached to nothing
    cached = fit(GradCache(inner, num_chunks=2))
    assert [id(v) for v in cached.weights] == [id(v) for v in inner.weights]
    with tempfile.TemporaryDirectory() as directory:
        unwrapped.save(os.path.join(directory, "unwrapped.keras"))
        cached.save(os.path.join(directory, "cached.keras"))
        expected = h5_datasets(os.path.join(directory, "unwrapped.keras"), "model.weights.h5")
        saved = h5_datasets(os.path.join(directory, "cached.keras"), "model.weights.h5")
    count = len(inner.weights) + len(cached.optimizer.variables)
    assert len(saved) == len(expected) == count
    assert sorted(saved.values()) == sorted(expected.values())
    # The layout of files written before the contract was declared: the
    # wrapped model's state under its layer, the optimizer's where the saver
    # meets it first, the wrapped model's `training_optimizer`.
    assert {name.split("/vars/")[0] for name in saved} == {
        "layers/sim_clr/backbone/layers/dense",
        "layers/sim_clr/layers/projection_head/dense_layers/dense",
        "layers/sim_clr/layers/projection_head/dense_layers/dense_1",
        "layers/sim_clr/layers/projection_head/norm_layers/batch_normalization",
        "layers/sim_clr/training_optimizer",
    }
    # Attaching the trainer adds no checkpoint dependency to the wrapped model.
    assert checkpoint_keys(inner) == untouched
    assert checkpoint_keys(cached) == checkpoint_keys(unwrapped)


def test_backup_holds_the_unwrapped_models_variables(tmp_path):
    files = {}
    for name, model in (("unwrapped", simclr()), ("cached", GradCache(simclr(), num_chunks=2))):
        model.build((None,) + X.shape[1:])  # BackupAndRestore needs a built model
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.DCLW(0.5))
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / name), delete_checkpoint=False)
        model.fit(X, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[backup, GradientNormMonitor()])
        files[name] = h5_datasets(tmp_path / name / "latest.weights.h5")
        files[name + "_count"] = len(model.weights) + len(model.optimizer.variables)
    assert len(files["cached"]) == len(files["unwrapped"]) == files["cached_count"]
    assert sorted(files["cached"].values()) == sorted(files["unwrapped"].values())


class CountingHook(keras.Model):
    """A plain Keras model (not a ContrastiveModel) with a per-step hook."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="dense")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     name="count")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(inputs)

    def after_optimizer_step(self):
        self.count.assign_add(1.0)


def test_grad_cache_without_trainable_weights_warns_and_still_runs_the_hook():
    inner = CountingHook()
    inner.build((None, 2, 6))
    inner.dense.trainable = False
    model = GradCache(inner, num_chunks=2)
    model.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    views = np.random.default_rng(1).normal(size=(16, 2, 6)).astype("float32")
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        history = model.fit(views, batch_size=8, shuffle=False, verbose=0)
    assert inner.count.numpy() == 2
    assert np.isfinite(history.history["loss"][0])
