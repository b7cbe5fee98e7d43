"""How much a model gains from per-replica BatchNorm statistics."""

import keras
import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.layers.statistics import frozen_statistics
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.training.step import TrainStep


def _check_views(views):
    if isinstance(views, tf.data.Dataset) or not hasattr(views, "shape"):
        raise TypeError(
            "`views` must be one held-out batch as an array or tensor of shape "
            f"(batch, views, ...), got {type(views).__name__}.")
    views = np.asarray(views)
    if views.ndim < 3:
        raise ValueError(
            f"`views` must have shape (batch, views, ...), got shape {views.shape}.")
    return views


# Holds its held-out batch, so it is not registered for serialization (as KNNMonitor).
@keras_contrast_export("keras_contrast.callbacks.BNLeakMonitor")
class BNLeakMonitor(keras.callbacks.Callback):
    """Logs `bn_leak`: how much lower the contrastive loss of a held-out batch
    is when R groups of it are normalised separately, as R replicas with
    per-replica BatchNorm would, than with the statistics of the whole batch.

    With per-replica BN both views of an image are normalised with the same
    few samples' statistics, which a model can learn to use to find its
    positive ("information leakage"; SimCLR's global BN, MoCo's shuffling
    BN). Every `every_n_epochs` epochs, on one fixed held-out batch:

        bn_leak = L(model(views)) − mean_s L(concat_g model(views[g_s]))

    where the groups g_s are `num_splits` random partitions of the batch
    into `num_groups` equal groups (emulated on one device, one model call
    per group), L is the model's compiled contrastive loss (per-sample
    mean over the whole batch, the same negatives in both terms) and the
    model runs in training mode inside `frozen_statistics()`. No moving
    statistic moves: non-trainable variables (a plain Keras
    `BatchNormalization`'s statistics too) are restored afterwards. Also
    logged: `bn_leak_spread`, the standard deviation of the per-split
    leaks (from 2 splits on), the scale against which a leak is judged.
    A model without batch statistics (LayerNorm) logs 0. A BN model that
    has learnt nothing from its groups (synchronised BN, or untrained) logs
    a value within about its spread of 0, often slightly below (a small
    group's statistics are noisier than the batch's, which costs a little
    loss); a leak well above the spread (5x) means the model uses its
    group's statistics.

    Args:
        views: one held-out batch as the model takes it, `(batch, views,
            ...)`; `batch` a multiple of `num_groups`, at least 2 per group.
        num_groups: int >= 2, R, the replicas to emulate.
        num_splits: int >= 1, random partitions averaged (fixed by `seed`,
            the same every epoch).
        loss: a `keras_contrast.losses.ContrastiveLoss`, or None for the
            model's compiled one (that of the model a `GradCache` wraps).
        every_n_epochs: int > 0.
        seed: int, the partitions' seed.

    Example:
    >>> monitor = keras_contrast.callbacks.BNLeakMonitor(x_val[:256], num_groups=4)
    >>> model.fit(data, epochs=100, callbacks=[monitor])   # logs["bn_leak"]
    """

    def __init__(self, views, num_groups=4, num_splits=5, loss=None, every_n_epochs=1,
                 seed=0):
        super().__init__()
        views = _check_views(views)
        check_positive_int(num_splits, "num_splits")
        check_positive_int(every_n_epochs, "every_n_epochs")
        if not is_int(num_groups) or num_groups < 2:
            raise ValueError(f"`num_groups` must be an integer >= 2, got {num_groups!r}.")
        batch = len(views)
        if batch % num_groups or batch // num_groups < 2:
            raise ValueError(
                f"The held-out batch of {batch} samples (`views`) must split into "
                f"`num_groups`={num_groups} equal groups of at least 2 samples.")
        if loss is not None and not isinstance(loss, ContrastiveLoss):
            raise TypeError("`loss` must be None or a keras_contrast.losses.ContrastiveLoss, "
                            f"got {type(loss).__name__}.")
        if not is_int(seed):
            raise TypeError(f"`seed` must be an integer, got {seed!r}.")
        self.views = views
        self.num_groups = int(num_groups)
        self.num_splits = int(num_splits)
        self.loss = loss
        self.every_n_epochs = every_n_epochs
        rng = np.random.default_rng(seed)
        self.splits = [rng.permutation(batch).reshape(self.num_groups, -1)
                       for _ in range(self.num_splits)]
        self.history = []

    def _model_and_loss(self):
        model = self.model.trained_model() if isinstance(self.model, TrainStep) else self.model
        loss = self.loss if self.loss is not None else getattr(model, "loss", None)
        if not isinstance(loss, ContrastiveLoss):
            raise ValueError(
                "BNLeakMonitor scores with a keras_contrast.losses.ContrastiveLoss: compile "
                f"the model with one or pass `loss`, got {type(loss).__name__}.")
        return model, loss

    def _forward(self, model):
        """`model(views, training=True)` as one traced function (traced for
        the batch's and the groups' sizes): called eagerly, a ResNet's
        hundreds of ops cost more than the rest of an epoch of a small run.
        The frozen-statistics switch is read when the function runs."""
        if getattr(self, "_forward_model", None) is not model:
            self._forward_model = model
            self._forward_function = tf.function(
                lambda views: model(views, training=True), reduce_retracing=True)
        return self._forward_function

    def leaks(self):
        """The per-split leaks `(num_splits,)` of the model being trained,
        leaving all of its variables as they were."""
        model, loss = self._model_and_loss()
        forward = self._forward(model)

        def mean_loss(embeddings):
            return float(tf.reduce_mean(loss.contrast(None, embeddings, loss.temperature)))

        state = [v.numpy() for v in model.non_trainable_variables]
        try:
            with frozen_statistics():
                whole = mean_loss(forward(self.views))
                leaks = []
                for groups in self.splits:
                    grouped = tf.concat([forward(self.views[g]) for g in groups], axis=0)
                    # Back to the batch's order: the loss sums in the same order.
                    original_order = np.argsort(np.concatenate(groups))
                    leaks.append(whole - mean_loss(tf.gather(grouped, original_order)))
        finally:
            for variable, value in zip(model.non_trainable_variables, state):
                variable.assign(value)
        return np.asarray(leaks)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        leaks = self.leaks()
        value = float(np.mean(leaks))
        spread = float(np.std(leaks, ddof=1)) if len(leaks) > 1 else None
        self.history.append((epoch, value, spread))
        if logs is not None:
            logs["bn_leak"] = value
            if spread is not None:
                logs["bn_leak_spread"] = spread
