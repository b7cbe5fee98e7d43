"""k-nearest-neighbour evaluation of an encoder (cosine, weighted votes)."""

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_positive_int


def _as_arrays(data):
    """(x, y) NumPy arrays from an `(x, y)` tuple or a dataset of batches."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for x, y in data:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        return np.concatenate(xs), np.concatenate(ys)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise ValueError(
        f"Expected (x, y) arrays or a tf.data.Dataset of (x, y) batches, got {type(data).__name__}."
    )


def extract_features(encoder, x, batch_size=256):
    """`encoder` applied to `x` in inference mode, float32 `(n, d)`; the
    flattened inputs when `encoder` is None (e.g. raw pixels)."""
    x = np.asarray(x)
    if encoder is None:
        return x.reshape(len(x), -1).astype("float32")
    features = [
        np.asarray(encoder(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    features = np.concatenate(features).astype("float32")
    return features.reshape(len(features), -1)


@keras_contrast_export("keras_contrast.evaluation.knn_predict")
def knn_predict(train_features, train_labels, test_features, k=200, temperature=0.1,
                num_classes=None, chunk_size=1024):
    """Class scores of a weighted k-NN classifier on cosine similarity.

    The protocol of InstDisc (Wu et al., 2018) used by SimCLR/MoCo kNN
    monitors: features are L2-normalised, each test sample takes its `k`
    most similar training samples, and neighbour j votes for its class with
    weight `exp(s_j / temperature)`.

    Args:
        train_features: `(n, d)` array.
        train_labels: `(n,)` int class ids in `[0, num_classes)`.
        test_features: `(m, d)` array.
        k: int > 0 (capped at n).
        temperature: float > 0.
        num_classes: int; default `max(train_labels) + 1`.
        chunk_size: test samples scored at once (bounds memory to
            `chunk_size x n` similarities).

    Returns:
        `(m, num_classes)` float32 vote sums; `argmax` is the prediction.
    """
    if not is_positive_int(k):
        raise ValueError(f"`k` must be an int > 0, got {k!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    labels = tf.constant(np.asarray(train_labels).reshape(-1), tf.int32)
    if train.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`train_features` has {train.shape[0]} rows but `train_labels` {labels.shape[0]}."
        )
    num_classes = int(num_classes or int(tf.reduce_max(labels)) + 1)
    k = min(k, int(train.shape[0]))
    test = tf.math.l2_normalize(tf.constant(test_features, tf.float32), axis=1)
    scores = []
    for start in range(0, int(test.shape[0]), chunk_size):
        similarity = tf.matmul(test[start : start + chunk_size], train, transpose_b=True)
        top, index = tf.math.top_k(similarity, k=k)
        weights = tf.exp(top / temperature)[..., None]
        votes = tf.one_hot(tf.gather(labels, index), num_classes) * weights
        scores.append(tf.reduce_sum(votes, axis=1).numpy())
    return np.concatenate(scores) if scores else np.zeros((0, num_classes), "float32")


@keras_contrast_export("keras_contrast.evaluation.knn_accuracy")
def knn_accuracy(encoder, train, test, k=200, temperature=0.1, batch_size=256):
    """Accuracy of the weighted cosine k-NN classifier on `encoder`'s
    features (see `knn_predict`).

    Args:
        encoder: a Keras model (run in inference mode), or None to use the
            flattened inputs (the raw-pixel baseline).
        train: `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)` batches.
        test: the same for the evaluation split.
        k: neighbours (SimCLR/MoCo monitors: 200).
        temperature: vote temperature (0.1).
        batch_size: batch size of feature extraction.

    Returns:
        float, accuracy in [0, 1].

    Example:
    >>> knn_accuracy(model.encoder, (x_train, y_train), (x_test, y_test))
    """
    x_train, y_train = _as_arrays(train)
    x_test, y_test = _as_arrays(test)
    scores = knn_predict(
        extract_features(encoder, x_train, batch_size),
        y_train,
        extract_features(encoder, x_test, batch_size),
        k=k,
        temperature=temperature,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )
    return float(np.mean(np.argmax(scores, axis=1) == y_test.reshape(-1)))
