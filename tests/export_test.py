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
