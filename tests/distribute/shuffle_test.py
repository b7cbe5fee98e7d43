"""shuffle_across_replicas: one shared, stratified permutation of the global
batch; unshuffle restores each replica's rows; gradients equal the identity's."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import distribute
from tests import test_case


def run(strategy, replica_fn, *per_replica_arrays):
    """Runs `replica_fn` on row-wise splits of the arrays in a tf.function and
    returns each output as the list of its per-replica NumPy values."""
    values = [test_case.split_per_replica(strategy, a) for a in per_replica_arrays]
    outputs = tf.function(lambda *v: strategy.run(replica_fn, args=v))(*values)
    return tf.nest.map_structure(
        lambda o: [t.numpy() for t in strategy.experimental_local_results(o)], outputs
    )


def row_ids(total, features=3):
    """Rows whose column 0 is the global row number."""
    x = np.random.default_rng(total).normal(size=(total, features)).astype("float32")
    x[:, 0] = np.arange(total)
    return x


def test_identity_outside_a_strategy_and_in_cross_replica_context():
    x = tf.constant(row_ids(6))
    shuffled, unshuffle = distribute.shuffle_across_replicas(x, seed=3)
    np.testing.assert_array_equal(shuffled, x)
    np.testing.assert_array_equal(unshuffle(x * 2), x * 2)
    with test_case.strategy(4).scope():
        shuffled, unshuffle = distribute.shuffle_across_replicas(x, seed=3)
    np.testing.assert_array_equal(shuffled, x)
    np.testing.assert_array_equal(unshuffle(x), x)


@pytest.mark.parametrize("num_replicas,local_batch", [(2, 8), (4, 8), (4, 6), (3, 7), (8, 3)])
def test_permutation_is_stratified(num_replicas, local_batch):
    """Every destination receives ⌊b/R⌋ or ⌈b/R⌉ rows of every block, b in all."""
    for seed in range(5):
        permutation = distribute.shuffle_permutation(seed, num_replicas, local_batch).numpy()
        total = num_replicas * local_batch
        np.testing.assert_array_equal(np.sort(permutation), np.arange(total))
        source_block = (permutation // local_batch).reshape(num_replicas, local_batch)
        counts = np.stack(
            [np.bincount(row, minlength=num_replicas) for row in source_block]
        )  # counts[destination, source]
        assert counts.min() == local_batch // num_replicas
        assert counts.max() == -(-local_batch // num_replicas)
        np.testing.assert_array_equal(counts.sum(axis=1), local_batch)


def test_different_seeds_give_different_permutations():
    permutations = {
        tuple(distribute.shuffle_permutation(seed, 4, 8).numpy()) for seed in range(20)
    }
    assert len(permutations) == 20
    step = tf.Variable(7, dtype=tf.int64)
    np.testing.assert_array_equal(
        distribute.shuffle_permutation(step, 4, 8), distribute.shuffle_permutation(7, 4, 8)
    )
    assert not np.array_equal(
        distribute.shuffle_permutation([7, 1], 4, 8), distribute.shuffle_permutation([7, 2], 4, 8)
    )


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_replicas_take_their_slices_of_one_permutation(num_replicas):
    local_batch = 6
    x = row_ids(num_replicas * local_batch)
    strategy = test_case.strategy(num_replicas)
    shuffled = run(
        strategy, lambda x: distribute.shuffle_across_replicas(x, seed=11)[0], x
    )
    assert all(s.shape == (local_batch, 3) for s in shuffled)
    ids = np.concatenate([s[:, 0] for s in shuffled]).astype(int)
    # Every global row exactly once: the replicas agreed on one permutation.
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(x)))
    np.testing.assert_array_equal(np.concatenate(shuffled), x[ids])
    # The one computed here, with no strategy, from the same seed.
    np.testing.assert_array_equal(
        ids, distribute.shuffle_permutation(11, num_replicas, local_batch).numpy()
    )


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_unshuffle_restores_the_original_rows(num_replicas):
    x = np.random.default_rng(0).normal(size=(num_replicas * 5, 2, 3)).astype("float32")
    strategy = test_case.strategy(num_replicas)

    def replica_fn(x):
        shuffled, unshuffle = distribute.shuffle_across_replicas(x, seed=tf.constant([4, 2]))
        return shuffled, unshuffle(shuffled)

    shuffled, restored = run(strategy, replica_fn, x)
    np.testing.assert_array_equal(np.concatenate(restored), x)
    assert not np.array_equal(np.concatenate(shuffled), x)


def test_statistics_of_the_shuffled_half_differ_from_the_unshuffled_half():
    """Per-replica BN of the shuffled half sees a mix of every replica's rows."""
    num_replicas, local_batch = 4, 8
    rng = np.random.default_rng(1)
    # Replica r's samples have mean 10·r: per-replica statistics tell the
    # replicas apart.
    x = rng.normal(size=(num_replicas * local_batch, 3)).astype("float32")
    x += 10.0 * np.repeat(np.arange(num_replicas), local_batch)[:, None]
    strategy = test_case.strategy(num_replicas)

    def replica_fn(x):
        shuffled, _ = distribute.shuffle_across_replicas(x, seed=5)
        return tf.reduce_mean(x, axis=0), tf.reduce_mean(shuffled, axis=0), shuffled

    original_means, shuffled_means, shuffled = run(strategy, replica_fn, x)
    blocks = x.reshape(num_replicas, local_batch, 3)
    for r in range(num_replicas):
        np.testing.assert_allclose(original_means[r], blocks[r].mean(0), rtol=1e-6)
        rows = np.array([np.flatnonzero((x == row).all(1))[0] for row in shuffled[r]])
        np.testing.assert_allclose(shuffled_means[r], x[rows].astype("float64").mean(0), rtol=1e-5)
        # b/R = 2 rows from each replica, so the mean is near the global one
        # and at least 5 away from every replica's own mean.
        np.testing.assert_array_equal(np.bincount(rows // local_batch), [2] * num_replicas)
        assert np.all(np.abs(shuffled_means[r] - original_means[r]) > 2.5)
        assert np.min(np.abs(shuffled_means[r][None] - blocks.mean(1)), axis=0).min() > 2.5


def test_gradients_through_shuffle_and_unshuffle_equal_the_identity():
    """d/dx and d/dW of Σ w·unshuffle(f(shuffle(x))) equal those of Σ w·f(x)
    on one device, f(v) = tanh(v W) row by row."""
    num_replicas, local_batch = 4, 4
    rng = np.random.default_rng(2)
    x = rng.normal(size=(num_replicas * local_batch, 3)).astype("float32")
    w = rng.normal(size=(num_replicas * local_batch, 2)).astype("float32")
    kernel = tf.constant(rng.normal(size=(3, 2)).astype("float32"))
    strategy = test_case.strategy(num_replicas)

    def replica_fn(x, w):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, kernel])
            shuffled, unshuffle = distribute.shuffle_across_replicas(x, seed=9)
            loss = tf.reduce_sum(w * unshuffle(tf.tanh(shuffled @ kernel)))
        return loss, tape.gradient(loss, x), tape.gradient(loss, kernel)

    losses, x_gradients, kernel_gradients = run(strategy, replica_fn, x, w)
    with tf.GradientTape(persistent=True) as tape:
        x_tensor = tf.constant(x)
        tape.watch([x_tensor, kernel])
        expected = tf.reduce_sum(w * tf.tanh(x_tensor @ kernel))
    test_case.assert_all_close(sum(losses), expected.numpy())
    test_case.assert_all_close(np.concatenate(x_gradients), tape.gradient(expected, x_tensor))
    test_case.assert_all_close(sum(kernel_gradients), tape.gradient(expected, kernel))


def test_gradient_of_a_shuffled_row_returns_to_its_owner():
    """Σ_r Σ c_r·shuffle(x)_r: row perm[p] of x receives coefficient c[p]."""
    num_replicas, local_batch = 4, 3
    x = row_ids(num_replicas * local_batch)
    c = np.random.default_rng(3).normal(size=x.shape).astype("float32")
    strategy = test_case.strategy(num_replicas)

    def replica_fn(x, c):
        with tf.GradientTape() as tape:
            tape.watch(x)
            shuffled, _ = distribute.shuffle_across_replicas(x, seed=1)
            loss = tf.reduce_sum(c * shuffled)
        return shuffled, tape.gradient(loss, x)

    shuffled, gradients = run(strategy, replica_fn, x, c)
    ids = np.concatenate(shuffled)[:, 0].astype(int)  # read off the forward pass
    expected = np.zeros_like(x)
    expected[ids] = c
    np.testing.assert_allclose(np.concatenate(gradients), expected, rtol=1e-6)


def test_rejects_unequal_local_batches():
    strategy = test_case.strategy(2)
    values = test_case.split_per_replica(strategy, row_ids(8), sizes=[3, 5])
    step = tf.function(
        lambda v: strategy.run(lambda x: distribute.shuffle_across_replicas(x, 0)[0], args=(v,))
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same local batch size"):
        step(values)


@pytest.mark.parametrize(
    "seed,message",
    [(0.5, "integer"), ([1, 2, 3], r"shape \(2,\)"), (tf.constant([[1, 2]]), r"shape \(2,\)")],
)
def test_rejects_bad_seed(seed, message):
    with pytest.raises(ValueError, match=message):
        distribute.shuffle_across_replicas(tf.ones((4, 2)), seed)


def test_rejects_scalar_input():
    with pytest.raises(ValueError, match="batch axis"):
        distribute.shuffle_across_replicas(tf.constant(1.0), 0)
