"""The shipped SavedModel loads without Keras and embeds Fashion-MNIST-shaped
images into unit vectors."""

import os

import numpy as np
import tensorflow as tf

from tests import test_case

PATH = os.path.join(test_case.ROOT, "saved_models", "simclr_fashion_mnist", "saved_model")


def test_shipped_encoder_serves_unit_embeddings():
    loaded = tf.saved_model.load(PATH)
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    embeddings = loaded.serve(images).numpy()
    assert embeddings.shape[0] == 3 and np.all(np.isfinite(embeddings))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # Batch-polymorphic and deterministic (inference-mode BN).
    np.testing.assert_allclose(loaded.serve(images[:1]).numpy(), embeddings[:1], rtol=1e-5,
                               atol=1e-6)
