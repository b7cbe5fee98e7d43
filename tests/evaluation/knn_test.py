"""Weighted cosine k-NN against a NumPy loop and scikit-learn."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.neighbors import KNeighborsClassifier

from keras_contrast.evaluation import knn_accuracy
from keras_contrast.evaluation import knn_predict


def numpy_knn(train, labels, test, k, temperature, num_classes):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    scores = np.zeros((len(test), num_classes))
    for i, row in enumerate(test):
        similarity = train @ row
        for j in np.argsort(-similarity)[:k]:
            scores[i, labels[j]] += np.exp(similarity[j] / temperature)
    return scores


def test_scores_equal_numpy_loop():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(50, 6)), rng.normal(size=(13, 6))
    labels = rng.integers(0, 4, size=50)
    expected = numpy_knn(train, labels, test, 7, 0.1, 4)
    actual = knn_predict(train, labels, test, k=7, temperature=0.1, chunk_size=5)
    np.testing.assert_allclose(actual, expected, rtol=1e-4)


def test_k1_equals_sklearn_cosine_neighbour():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(40, 5)), rng.normal(size=(20, 5))
    labels = rng.integers(0, 3, size=40)
    sklearn = KNeighborsClassifier(1, metric="cosine").fit(train, labels).predict(test)
    ours = np.argmax(knn_predict(train, labels, test, k=1), axis=1)
    np.testing.assert_array_equal(ours, sklearn)


def test_accuracy_with_encoder_raw_pixels_and_dataset():
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 4, 4)) * 5
    y = rng.integers(0, 3, size=60)
    x = (centers[y] + rng.normal(size=(60, 4, 4))).astype("float32")
    raw = knn_accuracy(None, (x[:40], y[:40]), (x[40:], y[40:]), k=5)
    assert raw == 1.0
    dataset = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(16)
    assert knn_accuracy(None, dataset, (x[40:], y[40:]), k=5) == raw
    flip = lambda images, training=False: -tf.reshape(images, (len(images), -1))  # noqa: E731
    assert knn_accuracy(flip, (x[:40], y[:40]), (x[40:], y[40:]), k=5) == raw


@pytest.mark.parametrize("kwargs,match", [({"k": 0}, "k"), ({"temperature": 0.0}, "temperature")])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_predict(np.ones((3, 2)), np.zeros(3, int), np.ones((1, 2)), **kwargs)
