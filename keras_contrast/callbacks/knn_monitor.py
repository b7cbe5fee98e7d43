"""k-NN accuracy of the encoder during training."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.evaluation.knn import _as_arrays
from keras_contrast.evaluation.knn import check_vote_arguments
from keras_contrast.evaluation.knn import knn_accuracy
from keras_contrast.training.contrastive_model import encoder_of


# Holds its datasets, so it is not registered for serialization (as PreciseBN).
@keras_contrast_export("keras_contrast.callbacks.KNNMonitor")
class KNNMonitor(keras.callbacks.Callback):
    """Adds the weighted k-NN accuracy of the encoder to the epoch logs.

    Every `every_n_epochs` epochs the encoder embeds `train_data` (the
    memory bank) and `val_data`, and `knn_accuracy` (cosine, k neighbours,
    votes `exp(s/τ)`) is written to `logs["knn_accuracy"]`, which History,
    TensorBoard, EarlyStopping and ModelCheckpoint then see (place this
    callback before them).

    Args:
        train_data: `(x, y)` arrays or a dataset of `(x, y)` batches.
        val_data: the same for the evaluation split.
        k: neighbours.
        temperature: vote temperature.
        every_n_epochs: int > 0.
        encoder: the model to evaluate; default `model.encoder` (of the
            model inside a `GradCache` too), else the model itself.

    Example:
    >>> model.fit(data, epochs=100, callbacks=[KNNMonitor((x_tr, y_tr), (x_te, y_te))])
    """

    def __init__(self, train_data, val_data, k=200, temperature=0.1, every_n_epochs=1,
                 encoder=None):
        super().__init__()
        check_positive_int(every_n_epochs, "every_n_epochs")
        check_vote_arguments(k, temperature)
        if encoder is not None and not callable(encoder):
            raise ValueError(f"`encoder` must be a Keras model, a callable or None, "
                             f"got {encoder!r}.")
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if not isinstance(data, tf.data.Dataset):
                _as_arrays(data, name)  # arrays: checked now, not after the first epoch
        self.train_data = train_data
        self.val_data = val_data
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.encoder = encoder
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        encoder = self.encoder or encoder_of(self.model)
        accuracy = knn_accuracy(encoder, self.train_data, self.val_data, k=self.k,
                                temperature=self.temperature)
        self.history.append((epoch, accuracy))
        if logs is not None:
            logs["knn_accuracy"] = accuracy
