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


def test_shipped_encoder_knn_accuracy_on_the_shipped_subset():
    """kNN (cosine, k=200, τ=0.1, the demo's protocol) on the Fashion-MNIST
    subset shipped for tests (`tests/data/fashion_mnist_subset.npz`: the
    first 2,000 training and 1,000 test images of the original IDX files),
    so CI needs no apt package."""
    from keras_contrast import evaluation

    subset = np.load(os.path.join(test_case.ROOT, "tests", "data", "fashion_mnist_subset.npz"))
    bank = (subset["x_train"][..., None] / 255.0, subset["y_train"])
    test = (subset["x_test"][..., None] / 255.0, subset["y_test"])
    assert bank[0].shape == (2000, 28, 28, 1) and test[0].shape == (1000, 28, 28, 1)
    loaded = tf.saved_model.load(PATH)

    def encoder(images, training=False):
        return loaded.serve(tf.constant(images, tf.float32))

    accuracy = evaluation.knn_accuracy(encoder, bank, test, k=200)
    raw_pixels = evaluation.knn_accuracy(None, bank, test, k=200)
    # Measured when the model was shipped (2026-11-29): 0.734 (raw pixels 0.678).
    assert abs(accuracy - 0.734) <= 0.005
    assert abs(raw_pixels - 0.678) <= 0.005
    assert accuracy > raw_pixels
