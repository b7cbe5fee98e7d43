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


BANK, LABELS, QUERIES = np.ones((3, 2)), np.array([0, 1, 1]), np.ones((1, 2))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"test_features": np.ones((1, 3))}, r"`train_features` \(the bank\) has dimension 2 "
                                             r"but `test_features` 3"),
        ({"train_features": np.ones((0, 2)), "train_labels": np.zeros(0, int)},
         "`train_features` is empty"),
        ({"train_labels": np.array([0, 1, 2]), "num_classes": 2},
         r"`train_labels` must be class ids < `num_classes`=2, got 2"),
        ({"train_labels": np.array([0, -1, 1])}, "`train_labels` must be class ids >= 0"),
        ({"train_labels": np.array([0, 1])}, "`train_labels`: 2 labels for 3 samples"),
        ({"train_labels": np.array(["a", "b", "c"])}, "`train_labels` must be integer class ids"),
        ({"train_features": np.ones((3, 0)), "test_features": np.ones((1, 0))},
         "`train_features` has dimension 0"),
        ({"temperature": True}, "`temperature` must be a number > 0, got True"),
        ({"temperature": "0.1"}, "`temperature` must be a number > 0, got '0.1'"),
        ({"temperature": None}, "`temperature` must be a number > 0, got None"),
        ({"k": True}, "`k` must be an int > 0, got True"),
        ({"num_classes": True}, "`num_classes` must be an int > 0"),
        ({"chunk_size": 0}, "`chunk_size` must be an int > 0"),
    ],
)
def test_knn_predict_rejects_inconsistent_inputs_naming_the_argument(kwargs, match):
    arguments = {"train_features": BANK, "train_labels": LABELS, "test_features": QUERIES,
                 **kwargs}
    with pytest.raises(ValueError, match=match):
        knn_predict(**arguments)


def test_labels_at_or_above_num_classes_are_not_dropped_silently():
    # A bank label 2 with num_classes=2 used to vanish from the votes
    # (one_hot of an out-of-range id is all zeros).
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(np.eye(3), np.array([0, 1, 2]), np.eye(3), k=1, num_classes=2)
    # Float labels holding whole numbers (e.g. from a dataset) are accepted.
    scores = knn_predict(np.eye(3), np.array([0.0, 1.0, 2.0]), np.eye(3), k=1)
    np.testing.assert_array_equal(np.argmax(scores, axis=1), [0, 1, 2])


@pytest.mark.parametrize(
    "train,test,match",
    [
        ((np.ones((4, 2)), np.zeros(3, int)), (np.ones((2, 2)), np.zeros(2, int)),
         "the labels of `train`: 3 labels for 4 samples"),
        ((np.ones((4, 2)), np.zeros(4, int)), (np.ones((2, 2)), np.zeros(5, int)),
         "the labels of `test`: 5 labels for 2 samples"),
        ((np.ones((0, 2)), np.zeros(0, int)), (np.ones((2, 2)), np.zeros(2, int)),
         "`train` holds no samples"),
        (np.ones((4, 2)), (np.ones((2, 2)), np.zeros(2, int)), "`train` must be"),
    ],
)
def test_knn_accuracy_rejects_label_counts_that_differ_from_samples(train, test, match):
    with pytest.raises(ValueError, match=match):
        knn_accuracy(None, train, test, k=1)


def test_knn_accuracy_rejects_a_bad_encoder_and_batch_size():
    data = (np.ones((4, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="`encoder` must be"):
        knn_accuracy("resnet", data, data, k=1)
    with pytest.raises(ValueError, match="`batch_size` must be an int > 0, got True"):
        knn_accuracy(None, data, data, k=1, batch_size=True)
