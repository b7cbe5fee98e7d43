"""Precise BN during `fit`: population BN statistics every n epochs."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.normalization.precise import check_arguments
from keras_contrast.normalization.precise import precise_batch_norm


@keras_contrast_export("keras_contrast.callbacks.PreciseBN")
class PreciseBN(keras.callbacks.Callback):
    """Re-estimates the model's BN statistics with Precise BN every n epochs.

    At the end of every `every_n_epochs`-th epoch (epochs `n, 2n, ...`,
    counted from 1) and of the last epoch of `fit`, runs
    `keras_contrast.normalization.precise_batch_norm` on the model, so that
    the moving statistics are the population statistics of the current
    weights instead of an EMA biased by the weights of the last iterations
    (docs/design.md §4).

    When it runs: after the epoch's last training step and **before** that
    epoch's validation (it runs in `on_test_begin` of the evaluation that
    `fit` starts for `validation_data`), so `val_*` metrics use the precise
    statistics; in epochs without validation it runs in `on_epoch_end`,
    after any callback listed before it. It does nothing in a standalone
    `evaluate()` or `predict()`.

    Args:
        dataset: a `tf.data.Dataset` or re-iterable of batches `x` or
            `(x, y[, sample_weight])` (usually the training data, without
            augmentation that inference does not use). Each run reads it
            from the start.
        num_batches: int >= 1. Batches per run.
        every_n_epochs: int >= 1.
        order: `"one_sweep"` or `"layer_by_layer"` (see
            `precise_batch_norm`).

    Attributes:
        epochs_run: the (0-based) epochs after which it ran.
        statistics: the dict returned by the last run, or None.

    Example:
    >>> model.fit(train_ds, validation_data=val_ds, epochs=90,
    ...           callbacks=[keras_contrast.callbacks.PreciseBN(
    ...               train_ds.take(200), num_batches=200, every_n_epochs=5)])
    """

    def __init__(self, dataset, num_batches=200, every_n_epochs=1, order="one_sweep"):
        super().__init__()
        check_arguments(num_batches, order)
        check_positive_int(every_n_epochs, "every_n_epochs", "an int >= 1", numpy_ints=True)
        self.dataset = dataset
        self.num_batches = num_batches
        self.every_n_epochs = every_n_epochs
        self.order = order
        self.epochs_run = []
        self.statistics = None
        self._epoch = None
        self._pending = False

    def _due(self, epoch):
        last = (self.params or {}).get("epochs")
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == last

    def _run_if_pending(self):
        if not self._pending:
            return
        self._pending = False
        self.statistics = precise_batch_norm(
            self.model, self.dataset, num_batches=self.num_batches, order=self.order
        )
        self.epochs_run.append(self._epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._pending = self._due(epoch)

    def on_test_begin(self, logs=None):
        # Inside `fit`, the validation of an epoch starts here, before any
        # validation batch runs.
        self._run_if_pending()

    def on_epoch_end(self, epoch, logs=None):
        self._run_if_pending()

    def on_train_end(self, logs=None):
        self._pending = False
