"""Linear evaluation of frozen features."""

import keras
import numpy as np

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number
from keras_contrast.evaluation.knn import _as_arrays
from keras_contrast.evaluation.knn import extract_features


@keras_contrast_export("keras_contrast.evaluation.linear_probe")
def linear_probe(encoder, train, test, epochs=100, learning_rate=1e-2, batch_size=256,
                 weight_decay=0.0, seed=0):
    """Test accuracy of a linear softmax classifier on frozen features.

    Features are extracted once (inference mode), standardised with the
    training split's mean and standard deviation, and a `Dense(num_classes)`
    layer is trained with Adam on the cross-entropy.

    Args:
        encoder: a Keras model, or None for the flattened inputs.
        train: `(x, y)` arrays or a `tf.data.Dataset` of `(x, y)` batches;
            `y` int class ids >= 0, one per sample.
        test: the same for the evaluation split.
        epochs: int > 0, training epochs of the classifier.
        learning_rate: float > 0, Adam learning rate.
        batch_size: int > 0, batch size of extraction and training.
        weight_decay: float >= 0, AdamW decoupled weight decay.
        seed: int, initialisation seed.

    Returns:
        `(accuracy, classifier)`: float in [0, 1] and the trained
        `keras.Sequential` (it expects standardised features).

    Example:
    >>> accuracy, _ = linear_probe(model.encoder, (x_train, y_train), (x_test, y_test))
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if not (is_number(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a number > 0, got {learning_rate!r}.")
    if not (is_number(weight_decay) and weight_decay >= 0):
        raise ValueError(f"`weight_decay` must be a number >= 0, got {weight_decay!r}.")
    if not is_int(seed):
        raise ValueError(f"`seed` must be an int, got {seed!r}.")
    x_train, y_train = _as_arrays(train, "train")
    x_test, y_test = _as_arrays(test, "test")
    f_train = extract_features(encoder, x_train, batch_size)
    f_test = extract_features(encoder, x_test, batch_size)
    mean, std = f_train.mean(axis=0), f_train.std(axis=0) + 1e-6
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    num_classes = int(max(y_train.max(), y_test.max())) + 1
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
    predictions = np.argmax(classifier.predict(f_test, batch_size=batch_size, verbose=0), axis=1)
    return float(np.mean(predictions == y_test.reshape(-1))), classifier
