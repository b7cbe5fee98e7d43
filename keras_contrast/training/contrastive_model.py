"""The base of keras_contrast's ready models and its contract with the train
steps that fit them (its own, or a wrapping `GradCache`'s; docs/design.md
§7): the network to evaluate (`encoder`), the once-per-step hook
(`after_optimizer_step`), the optimizer that counts the steps
(`training_optimizer`), the metrics it updates itself (`model_metrics`) and
the one way to assemble its loss (`assemble_loss`)."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import reduce_contrastive
from keras_contrast.training.step import TrainStep
from keras_contrast.training.step import Untracked
from keras_contrast.training.step import logs_for_strategy
from keras_contrast.training.step import training_loss

# The reductions `assemble_loss` takes: each gives a scalar whose replica
# sum is the loss of the global batch.
TRAINING_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum")


@keras_contrast_export("keras_contrast.training.regularization_loss")
def regularization_loss(model, dtype="float32"):
    """This replica's share of `model.losses` (weight regularizers, losses
    added in `call`): their sum divided by the number of replicas R.

    Keras' TensorFlow trainer scales every entry of `model.losses` by 1/R
    (`_aggregate_additional_loss`) and the optimizer sums the replicas'
    gradients, so each regularizer's gradient is applied once in total, as
    on one device. This is the same rule.

    Args:
        model: the model whose `losses` to add.
        dtype: dtype of the result.

    Returns:
        A scalar tensor (0 when the model has no such losses).

    Example:
    >>> loss = data_loss + keras_contrast.training.regularization_loss(model)
    """
    terms = [tf.reduce_sum(tf.cast(value, dtype)) for value in model.losses]
    if not terms:
        return tf.zeros((), dtype)
    total = tf.add_n(terms)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return total / tf.cast(replicas, dtype) if replicas > 1 else total


@keras_contrast_export("keras_contrast.training.assemble_loss")
def assemble_loss(model, per_sample, sample_weight=None, reduction="sum_over_batch_size",
                  dtype="float32", loss_name="loss"):
    """This replica's share of the training loss, assembled once, in order:

    1. the per-sample losses of this replica's samples, `(batch,)`;
    2. times `sample_weight`, if given;
    3. reduced over the *global* batch: this replica's sum divided by the
       global number of samples (or, for `"mean_with_sample_weight"`, the
       global sum of the weights); `"sum"` keeps this replica's sum. The
       replicas' shares (which the optimizer sums, through their
       gradients) add up to the loss of the global batch for any split of
       it, the uneven last batch of an epoch included;
    4. plus the model's `losses` (weight regularizers) divided by the number
       of replicas R, Keras' rule, so each counts once in total.

    No other replica scaling happens: step 3 already yields the replica's
    share, where Keras' own mean losses divide a per-replica mean by R
    (exact only for equal per-replica batches). A model overriding
    `compute_loss` returns this (`DualEncoder`, `MoCo`); `GradCache`
    delegates to that override.

    Args:
        model: the model being trained (its `losses` are added).
        per_sample: `(batch,)` per-sample losses of this replica.
        sample_weight: None, or `(batch,)` weights.
        reduction: one of `"sum_over_batch_size"` (= `"mean"`),
            `"mean_with_sample_weight"`, `"sum"`.
        dtype: dtype of the result.
        loss_name: how error messages name the loss.

    Returns:
        A scalar tensor.

    Example:
    >>> def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
    ...                  training=True):
    ...     per_sample = self.loss.contrast(y, y_pred, self.temperature())
    ...     return keras_contrast.training.assemble_loss(
    ...         self, per_sample, sample_weight, self.loss.reduction)
    """
    check_training_reduction(reduction, loss_name)
    data = reduce_contrastive(tf.convert_to_tensor(per_sample), sample_weight, reduction)
    data = tf.cast(data, dtype)
    return data + regularization_loss(model, dtype)


def check_training_reduction(reduction, loss_name="loss"):
    """Raises a ValueError unless `reduction` gives a scalar training loss."""
    if reduction not in TRAINING_REDUCTIONS:
        raise ValueError(
            f"{loss_name}: `reduction`={reduction!r} cannot train this model, which "
            f"needs a scalar loss: use one of {TRAINING_REDUCTIONS}."
        )



class _Required:
    """An attribute that subclasses must provide, as an attribute set in
    `__init__` or as a property; reading it where they did not raises an
    AttributeError that says so. (A non-data descriptor: an instance
    attribute of the same name takes its place.)"""

    def __init__(self, doc):
        self.__doc__ = doc

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        raise AttributeError(
            f"{type(instance).__name__} has no `{self.name}`: {self.__doc__} Set "
            f"`self.{self.name}` in `__init__` or define an `{self.name}` property."
        )


@keras_contrast_export("keras_contrast.training.ContrastiveModel")
class ContrastiveModel(TrainStep, keras.Model):
    """Base class of the ready contrastive models (`SimCLR`, `MoCoV3`, ...).

    Keras' training step, written once for this class and `GradCache`
    (`keras_contrast.training.step`), plus the contract between a model and
    the train step that fits it, its own or a wrapping `GradCache`'s:

    - `encoder`: the network to evaluate and export (the backbone). Every
      ready model but `DualEncoder` (two towers) has one; a subclass sets
      `self.encoder` or defines the property, and reading it where neither
      was done raises an AttributeError saying so.
    - `after_optimizer_step()`: override it for work that must happen once
      per optimizer step, after the weights changed (a momentum encoder's
      EMA update). The step calls it exactly once; `GradCache` calls the
      wrapped model's hook the same way.
    - `training_optimizer`: the optimizer whose `iterations` count this
      model's training steps, for per-step schedules and per-step
      randomness (Shuffle BN's seed): the model's own, or the one a wrapping
      train step declared with `set_training_optimizer` (`GradCache` does in
      `compile`).
    - `model_metrics`: metrics the model updates itself in `compute_loss`
      (MoCo's `pretext_accuracy`), which a wrapping `GradCache` logs too.
    - `compute_loss`: a subclass may override it to feed weights of its own
      (a learnable temperature) to the loss; the override returns
      `keras_contrast.training.assemble_loss(...)`, which reduces over the
      global batch and adds the weight regularizers once, as Keras' own
      `compute_loss` would. `GradCache` delegates to that override.
    - gradient infinity norms: after `watch_gradient_norms(model, layers)`
      (what `keras_contrast.callbacks.GradientNormMonitor` does), the step
      adds `grad_inf_norm/<layer>` = max |g| of the global-batch gradient
      of those layers to the logs (docs/design.md §5: spikes show in the
      first layer before the last).

    Subclasses implement `call`, returning the `(batch, views, dim)`
    embeddings the contrastive losses take.

    Example:
    >>> class Siamese(keras_contrast.training.ContrastiveModel):
    ...     def __init__(self, encoder, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.encoder = encoder
    ...     def call(self, views, training=None):  # (b, 2, ...) -> (b, 2, d)
    ...         b = keras.ops.shape(views)[0]
    ...         flat = keras.ops.reshape(views, (-1,) + tuple(views.shape[2:]))
    ...         return keras.ops.reshape(self.encoder(flat, training=training), (b, 2, -1))
    """

    encoder = _Required("the network to evaluate and export (e.g. the backbone).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._training_optimizer = Untracked(None)

    @property
    def model_metrics(self):
        """The metrics this model updates itself (in `compute_loss`), e.g.
        MoCo's `pretext_accuracy`. Keras logs them from the model's own
        `fit`; a `GradCache` wrapping the model adds them to its metrics."""
        return []

    @property
    def training_optimizer(self):
        """The optimizer that trains this model, whose `iterations` count its
        steps: the one declared with `set_training_optimizer`, else the
        model's own (None before `compile`)."""
        # Keras' `.keras` saver walks properties too: under a GradCache the
        # optimizer's variables are saved under this name, which files
        # written since this property exists hold. Keep the name.
        optimizer = self._training_optimizer.value
        return optimizer if optimizer is not None else getattr(self, "optimizer", None)

    def set_training_optimizer(self, optimizer):
        """Declares the optimizer that trains this model when another model's
        train step fits it (`GradCache.compile` calls this with its own
        optimizer); None returns to the model's own.

        The optimizer stays the trainer's state: it is held untracked, so
        this model's checkpoint dependencies and weights do not change.

        Args:
            optimizer: a `keras.optimizers.Optimizer`, or None.
        """
        if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`optimizer` must be a keras.optimizers.Optimizer or None, got "
                f"{type(optimizer).__name__}."
            )
        self._training_optimizer = Untracked(optimizer)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            scaled_loss = training_loss(self, x, y, y_pred, sample_weight)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled_loss, variables) if variables else []
        return self.finish_train_step(gradients, variables, x, y, y_pred, sample_weight)

    def test_step(self, data):
        return logs_for_strategy(super().test_step(data))


@keras_contrast_export("keras_contrast.training.encoder_of")
def encoder_of(model):
    """The network to evaluate or export: the `encoder` of `model` (of the
    model a `GradCache` trains, when given one) when it has one, else that
    model.

    Args:
        model: a Keras model.

    Returns:
        A Keras model or layer.
    """
    if isinstance(model, TrainStep):
        model = model.trained_model()
    return getattr(model, "encoder", model)
