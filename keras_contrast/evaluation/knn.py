"""k-nearest-neighbour evaluation of an encoder (cosine, weighted votes)."""

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_number


def _as_arrays(data, name="data"):
    """(x, y) NumPy arrays from an `(x, y)` tuple or a dataset of batches:
    at least one sample, as many labels as samples, integer labels >= 0."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for x, y in data:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        if not xs:
            raise ValueError(f"`{name}` is an empty dataset; it needs at least one sample.")
        x, y = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise ValueError(
            f"`{name}` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches, "
            f"got {type(data).__name__}."
        )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"`{name}` holds no samples (x has shape {x.shape}).")
    y = check_labels(y, len(x), f"the labels of `{name}`")
    return x, y


def check_labels(labels, count, name, num_classes=None):
    """`labels` as a flat int64 array of `count` class ids in
    `[0, num_classes)` (`num_classes` None: any id >= 0)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" and not (
        labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels))
    ):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}.")
    labels = labels.reshape(-1)
    if len(labels) != count:
        raise ValueError(f"{name}: {len(labels)} labels for {count} samples; one label per "
                         "sample expected.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be class ids >= 0, got {labels.min()}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"{name} must be class ids < `num_classes`={num_classes}, got {labels.max()}."
        )
    return labels.astype(np.int64)


@keras_contrast_export("keras_contrast.evaluation.extract_features")
def extract_features(encoder, x, batch_size=256):
    """`encoder` applied to `x` in inference mode, float32 `(n, d)`; the
    flattened inputs when `encoder` is None (e.g. raw pixels)."""
    check_positive_int(batch_size, "batch_size")
    if encoder is not None and not callable(encoder):
        raise ValueError(f"`encoder` must be a Keras model, a callable or None, got {encoder!r}.")
    x = np.asarray(x)
    if encoder is None:
        return x.reshape(len(x), -1).astype("float32")
    features = [
        np.asarray(encoder(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    features = np.concatenate(features).astype("float32")
    return features.reshape(len(features), -1)


def check_vote_arguments(k, temperature):
    """Static checks of the k-NN `k` and vote `temperature`."""
    check_positive_int(k, "k")
    if not (is_number(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")


def _features(features, name):
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (samples, dim), got shape "
                         f"{features.shape}.")
    if features.shape[1] == 0:
        raise ValueError(f"`{name}` has dimension 0; it needs at least one feature.")
    if features.dtype.kind not in "iuf":
        raise ValueError(f"`{name}` must be numbers, got dtype {features.dtype}.")
    return features


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
        test_features: `(m, d)` array (the same `d`).
        k: int > 0 (capped at n).
        temperature: float > 0.
        num_classes: int > 0; default `max(train_labels) + 1`.
        chunk_size: int > 0, test samples scored at once (bounds memory to
            `chunk_size x n` similarities).

    Returns:
        `(m, num_classes)` float32 vote sums; `argmax` is the prediction.
    """
    check_vote_arguments(k, temperature)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes", "an int > 0 or None")
    check_positive_int(chunk_size, "chunk_size")
    train_features = _features(train_features, "train_features")
    test_features = _features(test_features, "test_features")
    if len(train_features) == 0:
        raise ValueError("`train_features` is empty: the k-NN bank needs at least one sample.")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"`train_features` (the bank) has dimension {train_features.shape[1]} but "
            f"`test_features` {test_features.shape[1]}; both must come from the same encoder."
        )
    labels = check_labels(train_labels, len(train_features), "`train_labels`", num_classes)
    num_classes = num_classes or int(labels.max()) + 1
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    labels = tf.constant(labels, tf.int32)
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
        test: the same for the evaluation split. Labels are int class ids
            >= 0, one per sample.
        k: neighbours (SimCLR/MoCo monitors: 200).
        temperature: vote temperature (0.1).
        batch_size: batch size of feature extraction.

    Returns:
        float, accuracy in [0, 1].

    Example:
    >>> knn_accuracy(model.encoder, (x_train, y_train), (x_test, y_test))
    """
    check_vote_arguments(k, temperature)
    x_train, y_train = _as_arrays(train, "train")
    x_test, y_test = _as_arrays(test, "test")
    scores = knn_predict(
        extract_features(encoder, x_train, batch_size),
        y_train,
        extract_features(encoder, x_test, batch_size),
        k=k,
        temperature=temperature,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )
    return float(np.mean(np.argmax(scores, axis=1) == y_test.reshape(-1)))
