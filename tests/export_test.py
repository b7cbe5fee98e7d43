"""export_encoder / export_dual_encoder: SavedModels that reload without
Keras and give the Keras model's outputs; saved_model_cli lists them."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast.export import export_dual_encoder
from keras_contrast.export import export_encoder
from keras_contrast.models import DualEncoder
from keras_contrast.models import SimCLR
from keras_contrast.training import GradCache
from tests import test_case
from tests.models.common import tiny_backbone


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("wrap", ["backbone", "simclr", "grad_cache"])
def test_serve_equals_encoder(normalize, wrap, tmp_path):
    backbone = tiny_backbone()
    model = {"backbone": backbone, "simclr": SimCLR(backbone, (8, 4))}.get(wrap)
    if wrap == "grad_cache":
        model = GradCache(SimCLR(backbone, (8, 4)), num_chunks=2)
    export_encoder(model, tmp_path / "saved", normalize=normalize)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 8, 8, 1)).astype("float32")
        expected = backbone(x, training=False).numpy()
        if normalize:
            expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        test_case.assert_all_close(loaded.serve(tf.constant(x)).numpy(), expected)


# slow: a `saved_model_cli` child process (~15 s); the signature is tested by loading.
@pytest.mark.slow
def test_saved_model_cli_lists_the_signature(tmp_path):
    export_encoder(tiny_backbone(), tmp_path / "saved")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this Python")
    shown = subprocess.run([cli, "show", "--dir", str(tmp_path / "saved"), "--all"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serve']" in shown.stdout
    assert "(-1, 8, 8, 1)" in shown.stdout


def test_dual_encoder_signatures(tmp_path):
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4, "tanh")]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=6)
    model.build(((None, 5), (None, 3)))
    export_dual_encoder(model, tmp_path / "dual")
    loaded = tf.saved_model.load(str(tmp_path / "dual"))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")
    test_case.assert_all_close(loaded.encode_a(tf.constant(a)).numpy(), model.encode_a(a).numpy())
    test_case.assert_all_close(loaded.encode_b(tf.constant(b)).numpy(), model.encode_b(b).numpy())


def test_subclassed_encoder_needs_a_signature(tmp_path):
    class Encoder(keras.Model):
        def call(self, x):
            return x * 2.0

    with pytest.raises(ValueError, match="input_signature"):
        export_encoder(Encoder(), tmp_path / "e")
    export_encoder(Encoder(), tmp_path / "e",
                   input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    loaded = tf.saved_model.load(str(tmp_path / "e"))
    np.testing.assert_allclose(loaded.serve(tf.ones((2, 3))).numpy(), np.full((2, 3), 3**-0.5),
                               rtol=1e-6)


@pytest.mark.parametrize("target", ["/proc/keras_contrast_export", "under_a_file/saved", "file"])
def test_export_to_an_unwritable_path_names_the_path(target, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "under_a_file").write_text("not a folder")
    path = target if target.startswith("/") else str(tmp_path / target)
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    dual = DualEncoder(*towers, projection_dim=6)
    dual.build(((None, 5), (None, 3)))
    for export in (lambda: export_encoder(tiny_backbone(), path),
                   lambda: export_dual_encoder(dual, path)):
        with pytest.raises(ValueError, match="`path` .*(not writable|not a folder)"):
            export()


def test_export_dual_encoder_rejects_a_model_that_is_not_one(tmp_path):
    with pytest.raises(ValueError, match="`model` must be a keras_contrast.models.DualEncoder.*"
                                         "got SimCLR without tower_a"):
        export_dual_encoder(SimCLR(tiny_backbone(), (8, 4)), tmp_path / "dual")
    with pytest.raises(ValueError, match="`model` must be a keras_contrast.models.DualEncoder"):
        export_dual_encoder("model.keras", tmp_path / "dual")
    assert not os.path.exists(tmp_path / "dual")


def test_export_encoder_rejects_dual_encoders_and_bad_arguments(tmp_path):
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    with pytest.raises(ValueError, match="export it with `export_dual_encoder`"):
        export_encoder(DualEncoder(*towers, projection_dim=6), tmp_path / "e")
    with pytest.raises(ValueError, match="`normalize` must be a bool, got 'no'"):
        export_encoder(tiny_backbone(), tmp_path / "e", normalize="no")
    with pytest.raises(ValueError, match="`model_or_encoder` must be a Keras model"):
        export_encoder(lambda x: x, tmp_path / "e")
    with pytest.raises(ValueError, match="`input_signature` must be a list of one tf.TensorSpec"):
        export_encoder(tiny_backbone(), tmp_path / "e", input_signature=[(None, 8, 8, 1)])
    assert not os.path.exists(tmp_path / "e")


def siglip_dual(learnable_temperature=True):
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4, "tanh")]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=6, temperature=0.25, bias=-1.0,
                        learnable_temperature=learnable_temperature, learnable_bias=True)
    model.build(((None, 5), (None, 3)))
    return model


@pytest.mark.parametrize("wrap", [False, True], ids=["model", "grad_cache"])
def test_siglip_dual_encoder_exports_its_calibrated_pair_probability(wrap, tmp_path):
    from keras_contrast.losses import SigLIPLoss

    model = siglip_dual()
    model.temperature.log_scale.assign(1.7)
    model.logit_bias.assign(-0.75)
    trainer = GradCache(model, num_chunks=2) if wrap else model
    trainer.compile(optimizer="sgd", loss=SigLIPLoss())
    export_dual_encoder(trainer, tmp_path / "siglip")
    loaded = tf.saved_model.load(str(tmp_path / "siglip"))
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 5)).astype("float32"), rng.normal(size=(5, 3)).astype("float32")
    # NumPy float64 from the Keras model's embeddings and weights.
    za, zb = (np.asarray(z, np.float64) for z in (model.encode_a(a), model.encode_b(b)))
    t, bias = np.exp(1.7), -0.75
    expected = 1.0 / (1.0 + np.exp(-(t * np.sum(za * zb, axis=1) + bias)))
    test_case.assert_all_close(loaded.logit_scale().numpy(), np.exp(np.float32(1.7)))
    assert loaded.logit_bias().numpy() == np.float32(-0.75)
    probability = loaded.pair_probability(tf.constant(a), tf.constant(b)).numpy()
    # |s| <= 1 and t = e^1.7: every logit lies in [-6.2, 4.7], so no probability
    # saturates (σ in [0.002, 0.991]) and the comparison below is meaningful.
    assert probability.shape == (5,) and 1e-3 < probability.min() < probability.max() < 0.999
    test_case.assert_all_close(probability, expected)
    test_case.assert_all_close(loaded.encode_a(tf.constant(a)).numpy(), za)


def test_a_bias_without_a_learnable_temperature_takes_t_from_the_compiled_loss(tmp_path):
    from keras_contrast.losses import SigLIPLoss

    model = siglip_dual(learnable_temperature=False)
    with pytest.raises(ValueError, match="learns a logit bias but not its temperature"):
        export_dual_encoder(model, tmp_path / "uncompiled")
    assert not os.path.exists(tmp_path / "uncompiled")
    model.compile(optimizer="sgd", loss=SigLIPLoss(temperature=0.5))
    export_dual_encoder(model, tmp_path / "siglip")
    loaded = tf.saved_model.load(str(tmp_path / "siglip"))
    assert not hasattr(loaded, "logit_scale")  # the model does not learn t
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(3, 3)).astype("float32")
    za, zb = (np.asarray(z, np.float64) for z in (model.encode_a(a), model.encode_b(b)))
    expected = 1.0 / (1.0 + np.exp(-(2.0 * np.sum(za * zb, axis=1) - 1.0)))
    test_case.assert_all_close(loaded.pair_probability(tf.constant(a), tf.constant(b)).numpy(),
                               expected)


def test_clip_dual_encoder_exports_its_logit_scale_only(tmp_path):
    towers = [keras.Sequential([keras.Input((n,)), keras.layers.Dense(4)]) for n in (5, 3)]
    model = DualEncoder(*towers, projection_dim=6, temperature=0.07)
    model.build(((None, 5), (None, 3)))
    export_dual_encoder(model, tmp_path / "clip")
    loaded = tf.saved_model.load(str(tmp_path / "clip"))
    test_case.assert_all_close(loaded.logit_scale().numpy(), 1.0 / 0.07)
    assert not hasattr(loaded, "logit_bias") and not hasattr(loaded, "pair_probability")
