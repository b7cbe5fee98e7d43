"""Moving statistics of a non-synchronised BatchNorm under a strategy: what is
read, saved and checkpointed is the mean over replicas.

What Keras does (Keras 3.15, TensorFlow 2.21 backend)
----------------------------------------------------
`keras.layers.BatchNormalization` creates `moving_mean` and
`moving_variance` with `add_weight(trainable=False)` and the default
`aggregation="none"`. Under `MirroredStrategy` (or
`MultiWorkerMirroredStrategy`) they become `tf.distribute` mirrored variables
(synchronisation ON_WRITE, aggregation NONE). With `synchronized=False` each
replica's training call assigns the moving average of *its own* batch
statistics to *its own* copy, so the copies drift apart, and everything that
reads the variable outside the replicas — `get_weights()`,
`variable.numpy()`, checkpoints, `model.save()` — reads the first replica's
copy: the other replicas' statistics never reach the saved model. (Keras 2
created these variables ON_READ with MEAN aggregation, as below.)

Policy
------
Each replica keeps the running average of its own batch statistics while
training (no communication, so per-replica BN stays communication-free);
reading the variable outside the replicas gives the mean of the copies, and
writing it there (`set_weights`, loading, restoring a checkpoint) sets every
copy. The update is linear, so with momentum m and per-replica batch
statistics μ_r, σ²_r (local batch, biased variance) the value read is, step
after step, exactly

    moving_mean     ← m·moving_mean     + (1 - m)·mean_r μ_r
    moving_variance ← m·moving_variance + (1 - m)·mean_r σ²_r

— the same numbers as an all-reduce of every update would give, without a
collective per layer and step. The moving variance averages per-replica
variances; it is not the variance of the global batch (which adds the
spread of the μ_r): the model is trained normalising with local-batch
statistics and this is the running average of exactly those. For global
statistics use `synchronized=True`, or Precise BN.

Distributed evaluation (`model.evaluate` under the strategy) normalises
each replica's rows with that replica's copy; `average_replica_statistics`
writes the mean back to every copy first if that matters.
"""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export

# Non-trainable BatchNormalization weights that are running averages of
# batch statistics (the last three exist with `renorm=True`).
MOVING_STATISTICS = (
    "moving_mean",
    "moving_variance",
    "moving_stddev",
    "renorm_mean",
    "renorm_stddev",
)


def _read_as_replica_mean(next_creator, **kwargs):
    # Keras' `add_weight` does not take a synchronization; the variable it
    # creates under a strategy passes through this creator.
    kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
    kwargs["aggregation"] = tf.VariableAggregation.MEAN
    return next_creator(**kwargs)


@keras_contrast_export("keras_contrast.layers.ReplicaMeanStatistics")
class ReplicaMeanStatistics:
    """Mixin: a BatchNormalization whose saved moving statistics are the
    mean over replicas.

    Put it before `keras.layers.BatchNormalization` (or a subclass) in the
    bases. Its moving statistics are created as sync-on-read variables with
    MEAN aggregation: each replica updates its own copy, and `get_weights()`,
    `.numpy()`, checkpoints and `model.save()` read the mean of the copies
    (see the module docstring for the formula), while `set_weights`,
    loading and checkpoint restores write every copy. Synchronised layers
    (`synchronized=True`) update every copy with the same value already and
    keep Keras' variables. Outside a strategy nothing changes.

    Under `MultiWorkerMirroredStrategy` reading these variables outside the
    replicas is a collective, as saving is: every worker must do it.

    Example:
    >>> class BatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    ...     pass
    """

    def add_weight(self, *args, **kwargs):
        if (
            kwargs.get("name") in MOVING_STATISTICS
            and not kwargs.get("trainable", True)
            and kwargs.get("aggregation") in (None, "none")
            and not getattr(self, "synchronized", False)
        ):
            kwargs["aggregation"] = "mean"
            with tf.variable_creator_scope(_read_as_replica_mean):
                return super().add_weight(*args, **kwargs)
        return super().add_weight(*args, **kwargs)


def _moving_statistics(layer):
    return [getattr(layer, n) for n in MOVING_STATISTICS if getattr(layer, n, None) is not None]


@keras_contrast_export("keras_contrast.layers.average_replica_statistics")
def average_replica_statistics(model, strategy=None):
    """Sets every copy of each BatchNorm moving statistic to the mean over
    replicas of the copies.

    For models holding Keras' own `BatchNormalization` layers, whose copies
    drift apart under a strategy and of which only the first replica's is
    saved (see the module docstring): call it after training — or at the
    end of each epoch — and before `model.save()`. For
    `ReplicaMeanStatistics` layers, whose saved value is already the mean,
    it makes the replicas evaluate with that mean too. Call it in a
    cross-replica context (outside `strategy.run`); under
    `MultiWorkerMirroredStrategy` it is a collective that every worker must
    call.

    Args:
        model: a Keras layer or model; every
            `keras.layers.BatchNormalization` in it (itself included) is
            averaged.
        strategy: the `tf.distribute.Strategy` the model was built under
            (default: the current one).

    Returns:
        The number of variables averaged (0 with one replica).

    Raises:
        ValueError: `model` is not a Keras layer.

    Example:
    >>> model.fit(dataset, epochs=10)
    >>> keras_contrast.layers.average_replica_statistics(model, strategy)
    >>> model.save("model.keras")  # the mean over replicas
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras layer or model, got {type(model).__name__}.")
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync == 1:
        return 0
    variables = [
        variable
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
        for variable in _moving_statistics(layer)
    ]
    if not variables:
        return 0

    @tf.function
    def average():
        # Read in a replica context: each replica's own copy.
        copies = strategy.run(lambda: [tf.identity(v.value) for v in variables])
        # One reduction per variable: under MultiWorkerMirroredStrategy a
        # reduction of the whole list packs the copies into one tensor,
        # which fails for variables of different shapes.
        means = [strategy.reduce(tf.distribute.ReduceOp.MEAN, copy, axis=None)
                 for copy in copies]
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    average()
    return len(variables)
