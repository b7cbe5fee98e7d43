"""Moving statistics of per-replica BatchNorm under MirroredStrategy: what
Keras saves, and the mean-over-replicas policy (ReplicaMeanStatistics,
average_replica_statistics)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics
from keras_contrast.layers.replica_statistics import average_replica_statistics
from tests import test_case

NUM_REPLICAS, LOCAL_BATCH, CHANNELS = 4, 8, 4
MOMENTUM, OLD_MEAN, OLD_VARIANCE = 0.9, 0.5, 2.0


@keras.saving.register_keras_serializable(package="keras_contrast_tests")
class MeanStatisticsBatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    pass


def global_batch():
    """Replica r's 8 rows have mean 3 + 2r and std 1 + r/2."""
    rng = np.random.default_rng(0)
    replica = np.repeat(np.arange(NUM_REPLICAS), LOCAL_BATCH)[:, None]
    x = rng.normal(size=(NUM_REPLICAS * LOCAL_BATCH, CHANNELS)) * (1 + replica / 2)
    return (x + 3 + 2 * replica).astype("float32")


def expected_statistics(x, replicas):
    """NumPy float64: one EMA step of the mean over `replicas` of the
    per-replica (biased) batch statistics."""
    blocks = x.astype("float64").reshape(NUM_REPLICAS, LOCAL_BATCH, CHANNELS)[replicas]
    mean = MOMENTUM * OLD_MEAN + (1 - MOMENTUM) * blocks.mean(1).mean(0)
    variance = MOMENTUM * OLD_VARIANCE + (1 - MOMENTUM) * blocks.var(1).mean(0)
    return mean, variance


def fit_one_step(layer_class):
    """A BN-only model trained for one step of 4 replicas x 8 rows."""
    strategy = test_case.strategy(NUM_REPLICAS)
    with strategy.scope():
        bn = layer_class(
            momentum=MOMENTUM,
            moving_mean_initializer=keras.initializers.Constant(OLD_MEAN),
            moving_variance_initializer=keras.initializers.Constant(OLD_VARIANCE),
        )
        model = keras.Sequential([keras.Input((CHANNELS,)), bn])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = global_batch()
    targets = np.zeros_like(x)
    model.fit(x, targets, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return strategy, model, bn


def replica_copies(strategy, variable):
    return [v.numpy() for v in strategy.experimental_local_results(variable.value)]


def assert_model_holds(model, mean, variance):
    for source in (model, test_case.keras_file_round_trip(model)):
        bn = source.layers[-1]
        test_case.assert_all_close(bn.moving_mean.numpy(), mean)
        test_case.assert_all_close(bn.moving_variance.numpy(), variance)
    weights = {w.name: v for w, v in zip(model.weights, model.get_weights())}
    test_case.assert_all_close(weights["moving_mean"], mean)
    test_case.assert_all_close(weights["moving_variance"], variance)


def test_keras_saves_the_first_replica_statistics_until_averaged():
    """Keras 3 behaviour: per-replica copies drift apart, and get_weights /
    .keras files hold replica 0's. average_replica_statistics repairs it."""
    strategy, model, bn = fit_one_step(keras.layers.BatchNormalization)
    x = global_batch()
    copies = replica_copies(strategy, bn.moving_mean)
    for r in range(NUM_REPLICAS):
        test_case.assert_all_close(copies[r], expected_statistics(x, [r])[0])
    assert_model_holds(model, *expected_statistics(x, [0]))

    assert average_replica_statistics(model, strategy) == 2
    mean, variance = expected_statistics(x, list(range(NUM_REPLICAS)))
    for copy in replica_copies(strategy, bn.moving_variance):
        test_case.assert_all_close(copy, variance)
    assert_model_holds(model, mean, variance)


@pytest.mark.parametrize(
    "layer_class",
    [
        MeanStatisticsBatchNormalization,
        layers.BatchNormalization,
    ],
    ids=["mixin", "library"],
)
def test_saved_model_holds_the_mean_over_replicas(layer_class):
    strategy, model, bn = fit_one_step(layer_class)
    x = global_batch()
    # Each replica trains with the running average of its own statistics...
    copies = replica_copies(strategy, bn.moving_variance)
    for r in range(NUM_REPLICAS):
        test_case.assert_all_close(copies[r], expected_statistics(x, [r])[1])
    # ...and what is read outside the replicas, and saved, is their mean.
    mean, variance = expected_statistics(x, list(range(NUM_REPLICAS)))
    assert_model_holds(model, mean, variance)
    # Written back to every replica on request.
    assert average_replica_statistics(model, strategy) == 2
    for copy in replica_copies(strategy, bn.moving_mean):
        test_case.assert_all_close(copy, mean)
    assert_model_holds(model, mean, variance)


def test_only_non_synchronized_moving_statistics_read_as_the_replica_mean():
    per_replica = MeanStatisticsBatchNormalization(renorm=True)
    synchronized = MeanStatisticsBatchNormalization(synchronized=True)
    per_replica.build((None, 3))
    synchronized.build((None, 3))
    averaged = {
        w.name
        for w in per_replica.weights
        if w.aggregation == "mean"
        and w.value.synchronization == tf.VariableSynchronization.ON_READ
    }
    assert averaged == {
        "moving_mean",
        "moving_variance",
        "moving_stddev",
        "renorm_mean",
        "renorm_stddev",
    }
    assert {w.aggregation for w in synchronized.weights} == {"none"}


def test_mixin_changes_nothing_outside_a_strategy():
    x = global_batch()
    ours = MeanStatisticsBatchNormalization(momentum=MOMENTUM)
    theirs = keras.layers.BatchNormalization(momentum=MOMENTUM)
    test_case.assert_all_close(ours(x, training=True), theirs(x, training=True))
    test_case.assert_all_close(ours.moving_variance.numpy(), theirs.moving_variance.numpy())
    assert average_replica_statistics(keras.Sequential([ours])) == 0


def test_average_rejects_a_non_layer():
    with pytest.raises(ValueError, match="`model`"):
        average_replica_statistics(object())
