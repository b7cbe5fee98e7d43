"""k-NN accuracy of the encoder during training."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.evaluation.knn import _as_arrays
from keras_contrast.evaluation.knn import check_chunk_size
from keras_contrast.evaluation.knn import check_dataset
from keras_contrast.evaluation.knn import check_encoder
from keras_contrast.evaluation.knn import check_feature_dtype
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

    Datasets stream (see `knn_accuracy`): each evaluation reads them once,
    batch by batch, keeps only the bank's features (in `bank_dtype`) and
    scores the validation batches against bank chunks.

    Args:
        train_data: `(x, y)` arrays or a finite dataset of `(x, y)` batches
            (the memory bank).
        val_data: the same for the evaluation split.
        k: neighbours.
        temperature: vote temperature.
        every_n_epochs: int > 0.
        encoder: the model to evaluate; default `model.encoder` (of the
            model inside a `GradCache` too), else the model itself.
        batch_size: int > 0, batch size of feature extraction from arrays.
        bank_dtype: "float32" or "float16", dtype of the kept bank features.
        bank_chunk_size: int > 0 or None, bank rows scored at once (None:
            the whole bank for arrays, 16384 rows for a dataset).

    Example:
    >>> model.fit(data, epochs=100, callbacks=[KNNMonitor((x_tr, y_tr), (x_te, y_te))])
    >>> bank = tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).batch(512)
    >>> monitor = KNNMonitor(bank, val_dataset, bank_dtype="float16")
    """

    def __init__(self, train_data, val_data, k=200, temperature=0.1, every_n_epochs=1,
                 encoder=None, batch_size=256, bank_dtype="float32", bank_chunk_size=None):
        super().__init__()
        check_positive_int(every_n_epochs, "every_n_epochs")
        check_vote_arguments(k, temperature)
        check_encoder(encoder)
        check_positive_int(batch_size, "batch_size")
        bank_dtype = check_feature_dtype(bank_dtype, "bank_dtype")
        check_chunk_size(bank_chunk_size, "bank_chunk_size")
        # Checked now, not after the first epoch (a dataset's labels are
        # checked batch by batch as it is read).
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if isinstance(data, tf.data.Dataset):
                check_dataset(data, name)
            else:
                _as_arrays(data, name)
        self.train_data = train_data
        self.val_data = val_data
        self.k = k
        self.temperature = temperature
        self.every_n_epochs = every_n_epochs
        self.encoder = encoder
        self.batch_size = batch_size
        self.bank_dtype = bank_dtype
        self.bank_chunk_size = bank_chunk_size
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        encoder = self.encoder or encoder_of(self.model)
        accuracy = knn_accuracy(encoder, self.train_data, self.val_data, k=self.k,
                                temperature=self.temperature, batch_size=self.batch_size,
                                bank_dtype=self.bank_dtype,
                                bank_chunk_size=self.bank_chunk_size)
        self.history.append((epoch, accuracy))
        if logs is not None:
            logs["knn_accuracy"] = accuracy
