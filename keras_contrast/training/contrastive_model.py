"""The base of keras_contrast's ready models: Keras' training step with a
once-per-step hook and gradient infinity-norm logs (docs/design.md §5)."""

import warnings

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import reduce_contrastive

# Where a model keeps the variable groups whose gradient inf-norm its train
# step logs: {log name: [variables]}, set by `watch_gradient_norms`.
_GROUPS_ATTRIBUTE = "_kc_gradient_norm_groups"
LOG_PREFIX = "grad_inf_norm/"


def _layer_path(variable):
    path = getattr(variable, "path", None) or variable.name
    return path.rsplit("/", 1)[0] if "/" in path else path


def resolve_gradient_norm_groups(model, layers="first_last"):
    """The variable groups whose gradient inf-norm to log.

    Args:
        model: a Keras model (a `GradCache` resolves through its wrapped
            model: both hold the same variables).
        layers: `"first_last"`: the layer owning the first trainable
            variable and the one owning the last (in `trainable_variables`
            order, which follows the layers' order in a functional model);
            or a list of layers or layer names (a name matches every
            trainable variable whose path has it as a component).

    Returns:
        A dict `{log name: [variables]}` with log names
        `grad_inf_norm/<layer>` (`grad_inf_norm/first` and
        `grad_inf_norm/last` for `"first_last"`).
    """
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError("The model has no trainable variables to monitor.")
    if layers == "first_last":
        first, last = _layer_path(variables[0]), _layer_path(variables[-1])
        return {
            LOG_PREFIX + "first": [v for v in variables if _layer_path(v) == first],
            LOG_PREFIX + "last": [v for v in variables if _layer_path(v) == last],
        }
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(
            f'`layers` must be "first_last" or a non-empty list of layers or '
            f"layer names, got {layers!r}."
        )
    groups = {}
    for layer in layers:
        if isinstance(layer, keras.layers.Layer):
            watched = {id(v) for v in layer.trainable_variables}
            group = [v for v in variables if id(v) in watched]
            name = layer.name
        elif isinstance(layer, str):
            group = [
                v
                for v in variables
                if layer in (getattr(v, "path", None) or v.name).split("/")[:-1]
            ]
            name = layer
        else:
            raise ValueError(f"`layers` entries must be layers or names, got {layer!r}.")
        if not group:
            raise ValueError(f"Layer {name!r} has no trainable variables in the model.")
        groups[LOG_PREFIX + name] = group
    return groups


@keras_contrast_export("keras_contrast.training.watch_gradient_norms")
def watch_gradient_norms(model, layers="first_last"):
    """Makes the train step of `model` log gradient infinity norms.

    Works for `ContrastiveModel` subclasses and `GradCache`; the next
    `fit` retraces the step. `keras_contrast.callbacks.GradientNormMonitor`
    calls it; use `layers=None` to stop.

    Args:
        model: a `ContrastiveModel` or `GradCache`.
        layers: see `resolve_gradient_norm_groups`, or None to stop.

    Returns:
        The dict `{log name: [variables]}` now watched (empty for None).
    """
    groups = {} if layers is None else resolve_gradient_norm_groups(model, layers)
    # A plain attribute: Keras would track a dict of variables as new state.
    object.__setattr__(model, _GROUPS_ATTRIBUTE, groups)
    # Keras reuses a traced train function across `fit` calls.
    model.train_function = None
    return groups


def gradient_norm_logs(model, gradients, variables):
    """`{log name: max |g|}` of the watched groups, for the gradient of the
    whole global batch: under a strategy each replica holds the gradient of
    its share of the loss, so they are summed across replicas first (every
    replica then logs the same value). Loss scaling is undone.

    Args:
        model: the model whose train step calls this.
        gradients: the (loss-scaled) gradients of `variables`.
        variables: the variables, as given to the optimizer.
    """
    groups = getattr(model, _GROUPS_ATTRIBUTE, None)
    if not groups:
        return {}
    by_id = {id(v): g for v, g in zip(variables, gradients)}
    optimizer = getattr(model, "optimizer", None)
    scale = None
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # The scale the loss was multiplied by (`scale_loss` uses the
        # initial scale until the optimizer is built, at its first apply).
        scale = optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
        scale = tf.cast(scale, tf.float32)
    names, flat = [], []
    for name, group in groups.items():
        for variable in group:
            gradient = by_id.get(id(variable))
            names.append(name)
            if gradient is None:
                flat.append(tf.zeros(variable.shape, tf.float32))
            else:
                flat.append(tf.cast(tf.convert_to_tensor(gradient), tf.float32))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        flat = context.all_reduce(tf.distribute.ReduceOp.SUM, flat)
    logs = {}
    for name, gradient in zip(names, flat):
        value = tf.reduce_max(tf.abs(gradient)) if gradient.shape.num_elements() else 0.0
        if scale is not None:
            value = value / scale
        logs[name] = value if name not in logs else tf.maximum(logs[name], value)
    return logs


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


@keras_contrast_export("keras_contrast.training.ContrastiveModel")
class ContrastiveModel(keras.Model):
    """Base class of the ready contrastive models (`SimCLR`, `MoCoV3`, ...).

    Keras' own training step, plus two things contrastive training needs:

    - `after_optimizer_step()`: override it for work that must happen once
      per optimizer step, after the weights changed (a momentum encoder's
      EMA update). The step calls it exactly once; `GradCache` calls the
      wrapped model's hook the same way.
    - gradient infinity norms: after `watch_gradient_norms(model, layers)`
      (what `keras_contrast.callbacks.GradientNormMonitor` does), the step
      adds `grad_inf_norm/<layer>` = max |g| of the global-batch gradient
      of those layers to the logs (docs/design.md §5: spikes show in the first
      layer before the last).

    - `training_optimizer`: the optimizer whose `iterations` count this
      model's training steps (its own, or a wrapping `GradCache`'s), for
      per-step schedules and per-step randomness (Shuffle BN's seed).
    - `model_metrics`: metrics the model updates itself in `compute_loss`
      (MoCo's `pretext_accuracy`), which a wrapping `GradCache` logs too.

    Subclasses implement `call` (returning the `(batch, views, dim)`
    embeddings the contrastive losses take) and may override `compute_loss`
    to feed weights of their own (a learnable temperature) to the loss; such
    an override returns `keras_contrast.training.assemble_loss(...)`, which
    reduces over the global batch and adds the weight regularizers once, as
    Keras' own `compute_loss` would.

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

    def after_optimizer_step(self):
        """Runs once per training step, after the optimizer update."""

    @property
    def model_metrics(self):
        """The metrics this model updates itself (in `compute_loss`), e.g.
        MoCo's `pretext_accuracy`. Keras logs them from the model's own
        `fit`; a `GradCache` wrapping the model adds them to its metrics."""
        return []

    @property
    def training_optimizer(self):
        """The optimizer that trains this model: its own, or that of a
        `GradCache` wrapping it (whose `iterations` then count the steps)."""
        optimizer = getattr(self, "_kc_outer_optimizer", None)
        return optimizer if optimizer is not None else getattr(self, "optimizer", None)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            self._loss_tracker.update_state(
                unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(keras.tree.flatten(x)[0])[0],
            )
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        logs = {}
        trainable_weights = self.trainable_weights
        if trainable_weights:
            gradients = tape.gradient(loss, trainable_weights)
            logs = gradient_norm_logs(self, gradients, trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, trainable_weights))
        else:
            warnings.warn("The model does not have any trainable weights.")
        self.after_optimizer_step()
        metrics = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return logs_for_strategy({**metrics, **logs})

    def test_step(self, data):
        return logs_for_strategy(super().test_step(data))


def logs_for_strategy(logs):
    """The step's logs, shaped so that Keras can reduce them.

    With several workers Keras 3 averages every log with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars
    its own metrics return; a leading axis of length 1 gives the same mean.
    """
    strategy = tf.distribute.get_strategy()
    extended = strategy.extended
    if not getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return logs
    logs = {name: tf.convert_to_tensor(value) for name, value in logs.items()}
    return {name: tf.reshape(value, [1]) if value.shape.rank == 0 else value
            for name, value in logs.items()}


def unscale_loss_for_distribution(loss):
    """Keras divides each replica's loss by the number of replicas; its loss
    tracker multiplies it back (as `keras.Model.train_step` does)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(replicas, loss.dtype)
    return loss
