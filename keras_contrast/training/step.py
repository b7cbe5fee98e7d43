"""One training step's bookkeeping, written once for `ContrastiveModel`'s and
`GradCache`'s train steps (docs/design.md §7): the training loss and Keras'
`loss` metric, gradient infinity-norm logs, the optimizer update, the
once-per-step hook, the metrics, and logs that several workers can reduce.

A train step computes `scaled_loss = training_loss(...)` under its tape,
takes the gradients its own way (one backward pass, or GradCache's chunked
passes) and returns `self.finish_train_step(...)`.
"""

import inspect
import warnings

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export

LOG_PREFIX = "grad_inf_norm/"


class Untracked:
    """Holds a reference that neither Keras nor TensorFlow tracks.

    An optimizer, or a dict of variables, assigned to an attribute of a
    layer becomes part of the layer: a TensorFlow checkpoint dependency, a
    Keras-tracked collection. Held through this object, the layer only
    points to it: its `weights`, `.keras` files and checkpoints stay its
    own.

    Args:
        value: what to hold (`.value`).
    """

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


def call_compute_loss(model, x, y, y_pred, sample_weight, training=True):
    """`model.compute_loss(...)`, with `training` passed only to overrides
    that take it (the argument came in Keras 3.3)."""
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(x, y, y_pred, sample_weight, training=training)
    return model.compute_loss(x, y, y_pred, sample_weight)


def training_loss(model, x, y, y_pred, sample_weight):
    """The step's loss, scaled for differentiation, with Keras' `loss`
    metric updated. Call it under the step's gradient tape.

    The one use of a Keras private in keras_contrast's train steps: the
    logged `loss` is Keras' own `Mean` metric, `model._loss_tracker`, which
    `compile` creates and `fit`/`evaluate` reset and report; no public API
    updates it, and a metric of our own would log a second `loss`. It is
    updated as Keras' TensorFlow train step does (checked against Keras
    3.15.1: `Trainer.compile` in keras/src/trainers/trainer.py,
    `TensorFlowTrainer.train_step` in keras/src/backend/tensorflow/trainer.py).

    Args:
        model: the model being fit (its `compute_loss` and `optimizer`).
        x, y, y_pred, sample_weight: as for `compute_loss`.

    Returns:
        The loss to differentiate: the loss times the loss scale of a
        `LossScaleOptimizer` (the loss itself otherwise).
    """
    loss = call_compute_loss(model, x, y, y_pred, sample_weight, training=True)
    model._loss_tracker.update_state(
        unscale_loss_for_distribution(loss),
        sample_weight=tf.shape(keras.tree.flatten(x)[0])[0],
    )
    return loss if model.optimizer is None else model.optimizer.scale_loss(loss)


def unscale_loss_for_distribution(loss):
    """Keras divides each replica's loss by the number of replicas; its loss
    tracker multiplies it back (as `keras.Model.train_step` does)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(replicas, loss.dtype)
    return loss


class TrainStep:
    """The part of a train step that `ContrastiveModel` and `GradCache`
    share (mixed in before `keras.Model`).

    Declares what a callback or a wrapper may set on the model being fit:

    - `gradient_norm_groups`: the variable groups whose gradient inf-norm
      the step logs, set with `set_gradient_norm_groups` (what
      `watch_gradient_norms` and `GradientNormMonitor` call);
    - `after_optimizer_step()`: runs once per step, after the update;
    - `trained_model()`: the model whose weights the step trains.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._gradient_norm_groups = Untracked({})

    @property
    def gradient_norm_groups(self):
        """`{log name: [variables]}`: the groups whose gradient infinity norm
        the train step logs (empty: none)."""
        return self._gradient_norm_groups.value

    def set_gradient_norm_groups(self, groups):
        """Makes the train step log the gradient inf-norm of `groups`
        (`{log name: [variables]}`; empty: stop). The next `fit` retraces
        the step (Keras reuses a traced train function across `fit` calls).
        The variables are held untracked, so they are not added to this
        model's state."""
        self._gradient_norm_groups = Untracked(dict(groups))
        self.train_function = None

    def after_optimizer_step(self):
        """Runs once per training step, after the optimizer update."""

    def trained_model(self):
        """The model whose weights this step trains: this model itself (a
        `GradCache` returns the model it wraps)."""
        return self

    def finish_train_step(self, gradients, variables, x, y, y_pred, sample_weight):
        """The end of every keras_contrast train step, given the gradients
        of the (scaled) loss: the gradient-norm logs, one optimizer update,
        `after_optimizer_step()`, the metrics, and the logs shaped for
        several workers.

        Args:
            gradients: gradients of `variables` (None where unconnected).
            variables: the trainable variables (empty: a warning, no update).
            x, y, y_pred, sample_weight: the step's data and predictions.

        Returns:
            The step's logs.
        """
        logs = {}
        if variables:
            logs = gradient_norm_logs(self, gradients, variables)
            self.optimizer.apply_gradients(zip(gradients, variables))
        else:
            warnings.warn("The model does not have any trainable weights.")
        self.after_optimizer_step()
        metrics = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return logs_for_strategy({**metrics, **logs})


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
    if not isinstance(model, TrainStep):
        raise TypeError(
            "`model` must be a keras_contrast.training.ContrastiveModel or GradCache, "
            f"whose train step computes gradient norms; got {type(model).__name__}."
        )
    groups = {} if layers is None else resolve_gradient_norm_groups(model, layers)
    model.set_gradient_norm_groups(groups)
    return groups


def gradient_norm_logs(model, gradients, variables):
    """`{log name: max |g|}` of the watched groups, for the gradient of the
    whole global batch: under a strategy each replica holds the gradient of
    its share of the loss, so they are summed across replicas first (every
    replica then logs the same value). Loss scaling is undone.

    Args:
        model: the model whose train step calls this (a `TrainStep`).
        gradients: the (loss-scaled) gradients of `variables`.
        variables: the variables, as given to the optimizer.
    """
    groups = model.gradient_norm_groups
    if not groups:
        return {}
    by_id = {id(v): g for v, g in zip(variables, gradients)}
    optimizer = model.optimizer
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
