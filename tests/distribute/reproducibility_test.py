"""Bit-identical multi-replica computations under 4 simulated replicas:
the gathered DCLW gradient, call after call, and SimCLR training runs.

The nondeterminism these tests catch comes from TensorFlow's CPU `AddN`
(tools/repro_mirrored_nondeterminism.py): it sums three or more gradient
terms in an order that depends on thread timing. Each gathered view's
gradient summed three terms in DCLW (two candidate concats and the weight);
the losses now build the candidates once. Before that, under 4 replicas of
128 rows, most identical calls differed in the last bit (27 of 30).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_contrast as kc
from tests import test_case

REPLICAS = 4
ROWS = 128  # per replica; with 16 rows the loss alone rarely differed (0 of 20)
DIM = 64
CALLS = 30
STEPS = 20


def embeddings(rows, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, 2, DIM)).astype("float32")


@pytest.mark.parametrize(
    "loss",
    [
        kc.losses.DCLW(0.1),
        kc.losses.DCLW(0.1, tile_size=64),
    ],
    ids=["dense", "tiled"],
)
def test_gathered_dclw_gradient_is_identical_at_every_call(loss):
    strategy = test_case.strategy(REPLICAS)
    z = embeddings(REPLICAS * ROWS)
    local = test_case.split_per_replica(strategy, z)

    step = test_case.replica_loss_step(strategy, loss)

    def run():
        values, gradients = step(local)
        return (np.stack([v.numpy() for v in strategy.experimental_local_results(values)]),
                np.concatenate([g.numpy() for g in
                                strategy.experimental_local_results(gradients)]))

    first_value, first_gradient = run()
    # The gradient is the one-device loss's (the reference for exactness).
    with tf.GradientTape() as tape:
        whole = tf.constant(z)
        tape.watch(whole)
        single = loss(None, whole)
    test_case.assert_all_close(first_gradient, tape.gradient(single, whole).numpy())
    for call in range(1, CALLS):
        value, gradient = run()
        np.testing.assert_array_equal(value, first_value, err_msg=f"call {call}")
        np.testing.assert_array_equal(gradient, first_gradient, err_msg=f"call {call}")


def test_simclr_with_sync_and_per_replica_batch_norm_trains_bit_identically():
    """SimCLR with a synchronised BN in the backbone and per-replica BN in
    the head (sync-on-read replica-mean moving statistics), gathered DCLW,
    AdamW: two runs of 20 steps of 4 x 128 rows from the same weights and
    optimizer state end with the same bits (one traced step serves both
    runs). Before the fix about one step in eight rounded differently."""
    strategy = test_case.strategy(REPLICAS)
    keras.utils.set_random_seed(7)
    with strategy.scope():
        backbone = keras.Sequential([
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(DIM),
            kc.layers.BatchNormalization(synchronized=True),
            keras.layers.ReLU(),
        ])
        model = kc.models.SimCLR(backbone, projection_dims=(DIM, DIM), projection_norm="batch")
        model.build((None, 2, 4, 4, 1))
        model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=kc.losses.DCLW(0.1))
        model.optimizer.build(model.trainable_variables)
    initial_weights = model.get_weights()
    initial_state = [v.numpy() for v in model.optimizer.variables]
    views = np.random.default_rng(7).uniform(
        size=(STEPS * REPLICAS * ROWS, 2, 4, 4, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(views).batch(REPLICAS * ROWS)
    runs = []
    for _ in range(2):
        model.set_weights(initial_weights)
        for variable, value in zip(model.optimizer.variables, initial_state):
            variable.assign(value)
        model.fit(dataset, epochs=1, verbose=0)
        runs.append(model.get_weights())
    assert int(model.optimizer.iterations.numpy()) == STEPS
    assert not np.array_equal(runs[0][0], initial_weights[0])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
