"""Linear evaluation of frozen features."""

import keras
import numpy as np

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number
from keras_contrast.evaluation.knn import _Split
from keras_contrast.evaluation.knn import check_encoder
from keras_contrast.evaluation.knn import check_feature_dtype
from keras_contrast.evaluation.knn import encode

# Rows standardised at once (bounds the float32 temporaries).
_STANDARDIZE_ROWS = 8192


def _train_features(encoder, split, dtype):
    """The features (`dtype`) and labels of `split`, encoded batch by batch."""
    features, labels, dimension = [], [], None
    for x, y in split:
        batch = encode(encoder, x)
        if dimension is None:
            dimension = batch.shape[1]
        elif batch.shape[1] != dimension:
            raise ValueError(f"The features of `{split.name}` change dimension from "
                             f"{dimension} to {batch.shape[1]} between batches.")
        batch = batch.astype(dtype)
        if not np.all(np.isfinite(batch)):
            raise ValueError(f"The features of `{split.name}` are not all finite in "
                             f"`feature_dtype`={dtype!r} (float16 overflows above 65504).")
        features.append(batch)
        labels.append(y)
    return np.concatenate(features), np.concatenate(labels)


def _standardize(features, mean, std, dtype):
    """`(features - mean) / std` in float32, as `dtype`."""
    return ((features.astype("float32") - mean) / std).astype(dtype, copy=False)


@keras_contrast_export("keras_contrast.evaluation.linear_probe")
def linear_probe(encoder, train, test, epochs=100, learning_rate=1e-2, batch_size=256,
                 weight_decay=0.0, seed=0, feature_dtype="float32"):
    """Test accuracy of a linear softmax classifier on frozen features.

    Features are extracted once (inference mode, batch by batch),
    standardised with the training split's mean and standard deviation,
    and a `Dense(num_classes)` layer is trained with Adam on the
    cross-entropy. The training split's features are kept (the classifier
    trains on them for `epochs`); the test split is encoded and classified
    a batch at a time, so a test dataset is never all in memory.

    Args:
        encoder: a Keras model, or None for the flattened inputs.
        train: `(x, y)` arrays or a finite `tf.data.Dataset` of `(x, y)`
            batches; `y` int class ids >= 0, one per sample.
        test: the same for the evaluation split.
        epochs: int > 0, training epochs of the classifier.
        learning_rate: float > 0, Adam learning rate.
        batch_size: int > 0, batch size of training, and of extraction
            from arrays (a dataset is read as it batches).
        weight_decay: float >= 0, AdamW decoupled weight decay.
        seed: int, initialisation seed.
        feature_dtype: "float32" or "float16", the dtype the training
            features are kept in (standardised in float32).

    Returns:
        `(accuracy, classifier)`: float in [0, 1] and the trained
        `keras.Sequential` (it expects standardised features). It has
        `max label + 1` outputs, the labels of both splits counted when the
        test split is arrays, those of `train` when it is a dataset (a test
        class never seen in training is then always an error, as before).

    Example:
    >>> accuracy, _ = linear_probe(model.encoder, (x_train, y_train), (x_test, y_test))
    >>> accuracy, _ = linear_probe(model.encoder, train_dataset, test_dataset)
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if not (is_number(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a number > 0, got {learning_rate!r}.")
    if not (is_number(weight_decay) and weight_decay >= 0):
        raise ValueError(f"`weight_decay` must be a number >= 0, got {weight_decay!r}.")
    if not is_int(seed):
        raise ValueError(f"`seed` must be an int, got {seed!r}.")
    check_encoder(encoder)
    feature_dtype = check_feature_dtype(feature_dtype, "feature_dtype")
    train_split = _Split(train, "train", batch_size)
    test_split = _Split(test, "test", batch_size)
    f_train, y_train = _train_features(encoder, train_split, feature_dtype)
    mean = f_train.mean(axis=0, dtype="float32")
    std = f_train.std(axis=0, dtype="float32") + 1e-6
    for start in range(0, len(f_train), _STANDARDIZE_ROWS):  # in place
        rows = slice(start, start + _STANDARDIZE_ROWS)
        f_train[rows] = _standardize(f_train[rows], mean, std, feature_dtype)
    num_classes = int(y_train.max()) + 1
    if test_split.arrays is not None:
        num_classes = max(num_classes, int(test_split.arrays[1].max()) + 1)
    classifier = keras.Sequential(
        [
            keras.Input((f_train.shape[1],)),
            keras.layers.Dense(
                num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ]
    )
    classifier.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(f_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    del f_train
    correct = total = 0
    for x, y in test_split:
        features = encode(encoder, x)
        if features.shape[1] != len(mean):
            raise ValueError(
                f"The features of `test` have dimension {features.shape[1]} but those of "
                f"`train` {len(mean)}; both splits must pass through the same encoder."
            )
        features = _standardize(features.astype(feature_dtype), mean, std, feature_dtype)
        logits = classifier.predict(features, batch_size=batch_size, verbose=0)
        correct += int(np.sum(np.argmax(logits, axis=1) == y))
        total += len(y)
    return correct / total, classifier
