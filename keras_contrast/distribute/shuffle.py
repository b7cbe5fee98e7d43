"""Shuffle BN: one permutation of the global batch shared by every replica."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.distribute.replica import all_gather
from keras_contrast.distribute.replica import gathered_sizes
from keras_contrast.distribute.replica import num_replicas
from keras_contrast.distribute.replica import replica_id

# Second seed word when the caller passes a scalar seed (any constant works;
# it only has to be the same on every replica).
_SEED_SALT = 0x5EED
# Random sort keys below 2**40 leave the high bits of an int64 key free for
# the destination replica (up to 2**23 replicas).
_KEY_BITS = 40


def _seed_pair(seed):
    """`seed` as the int64 `(2,)` seed of TensorFlow's stateless ops."""
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(
            f"`seed` must be an integer or an integer tensor, got dtype {seed.dtype.name}."
        )
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(_SEED_SALT, tf.int64)])
    if seed.shape.as_list() != [2]:
        raise ValueError(
            f"`seed` must be a scalar or have shape (2,), got shape {seed.shape}."
        )
    return seed


def _random_keys(shape, seed):
    return tf.random.stateless_uniform(
        shape, seed, minval=0, maxval=2**_KEY_BITS, dtype=tf.int64,
        # Not "auto_select", which picks ThreeFry on TPU and Philox
        # elsewhere: replicas on different hardware must draw the same keys.
        alg="philox",
    )


def _gather_rows(x, rows):
    """`x` of every replica, concatenated, at the global `rows`."""
    return tf.gather(all_gather(x), rows)


@keras_contrast_export("keras_contrast.distribute.shuffle_permutation")
def shuffle_permutation(seed, num_replicas, local_batch):
    """The permutation of the global batch that `shuffle_across_replicas` uses.

    A pure function of its arguments (stateless random ops), so every
    replica computes the same permutation without communicating.

    Construction, for R replicas holding b rows each (row i of replica s is
    global row s·b + i):

    1. each replica's block is put in a random order; the row at rank j of
       block s is sent to replica (s + j + k) mod R, with one random offset
       k ∈ [0, R). Ranks j ≡ c (mod R) form a random ⌊b/R⌋- or ⌈b/R⌉-row
       subset, and distinct blocks use distinct residues for a given
       destination, so every replica receives exactly b rows:

           block 0: a a a a ──► replicas 0 1 2 3 0 1 ...   (k = 0)
           block 1: b b b b ──► replicas 1 2 3 0 1 2 ...

    2. each replica's received rows are put in a random order.

    Args:
        seed: int, or integer tensor of shape `()` or `(2,)`.
        num_replicas: int >= 1, R.
        local_batch: int or scalar integer tensor, b.

    Returns:
        `(R·b,)` int32 `permutation`: row p of the shuffled global batch is
        row `permutation[p]` of the original, and replica r holds shuffled
        rows r·b … r·b + b - 1.
    """
    check_positive_int(num_replicas, "num_replicas", "an int >= 1")
    order_seed, offset_seed, placement_seed = tf.unstack(
        tf.random.experimental.stateless_split(_seed_pair(seed), 3)
    )
    replicas = tf.constant(num_replicas, tf.int64)
    local_batch = tf.cast(local_batch, tf.int64)
    # order[s, j]: local index of the row of block s ranked j.
    order = tf.argsort(_random_keys(tf.stack([replicas, local_batch]), order_seed), axis=1)
    block = tf.range(replicas)[:, None]
    rank = tf.range(local_batch)[None, :]
    source_rows = tf.reshape(block * local_batch + tf.cast(order, tf.int64), [-1])
    offset = tf.random.stateless_uniform(
        [], offset_seed, minval=0, maxval=replicas, dtype=tf.int64, alg="philox"
    )
    destination = tf.reshape((block + rank + offset) % replicas, [-1])
    # One int64 sort key: destination in the high bits, a random tie-break
    # below, so rows are grouped by destination in random order.
    keys = destination * 2**_KEY_BITS + _random_keys(tf.shape(destination), placement_seed)
    return tf.cast(tf.gather(source_rows, tf.argsort(keys)), tf.int32)


@keras_contrast_export("keras_contrast.distribute.shuffle_across_replicas")
def shuffle_across_replicas(x, seed):
    """Shuffles a batch across replicas, returning the rows and an unshuffle.

    Shuffle BN (MoCo v1, docs/design.md §4): when the key encoder has
    BatchNorm with per-replica statistics, a query and its positive key
    must not be normalised with statistics of the same subset of samples,
    or the network learns to recognise the positive by its statistics.
    Feed the key encoder the shuffled rows, then `unshuffle` its output:

    - every replica computes the same permutation of the global batch from
      `seed` with stateless random ops (no communication, no host round
      trip) and takes its slice of the permuted batch, gathered with
      gradients;
    - the permutation is stratified (see `shuffle_permutation`): each
      replica's shuffled batch holds b/R of every replica's rows
      (⌊b/R⌋ or ⌈b/R⌉ when R does not divide b), so no shuffled batch is
      closer to one replica's original batch than to another's;
    - `unshuffle(y)` gathers `y` (the rows computed from the shuffled
      batch) from every replica and returns, in this replica's original
      row order, the rows computed from this replica's samples. Gradients
      flow through the shuffle and the unshuffle to the replica that owns
      each sample.

    Note that sending every sample to *another* replica is not the goal:
    batch statistics depend on which samples are pooled, not on the device
    that pools them. Rotating whole blocks between replicas, for example,
    sends every sample away and changes no statistic at all.

    With one replica, outside a strategy, or in a cross-replica context,
    the shuffle and the unshuffle are the identity.

    Args:
        x: tensor `(local_batch, ...)`, this replica's rows. Every replica
            must hold the same number of rows (batch the dataset with
            `drop_remainder=True`); otherwise the call fails at run time
            with an `InvalidArgumentError` naming the sizes.
        seed: int, or integer tensor of shape `()` or `(2,)`. Must be the
            same on every replica and should change at every step, or the
            same samples are pooled again step after step: derive it from
            a step counter, e.g. `self.optimizer.iterations` in a
            `train_step` (a mirrored variable, equal on every replica).
            Do not use a stateful random op, which draws differently on
            each replica.

    Returns:
        `(x_shuffled, unshuffle)`: this replica's `local_batch` rows of the
        shuffled global batch, and a function mapping a tensor
        `(local_batch, ...)` of rows computed from `x_shuffled` to the
        same rows for this replica's original samples, in their order.

    Raises:
        ValueError: `x` is a scalar, or `seed` is not an integer scalar or
            `(2,)` tensor.

    Example:
    >>> def train_step(self, data):
    ...     step = self.optimizer.iterations
    ...     x_key, unshuffle = keras_contrast.distribute.shuffle_across_replicas(
    ...         data[:, 1], seed=step
    ...     )
    ...     keys = tf.stop_gradient(unshuffle(self.key_encoder(x_key, training=True)))
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 0:
        raise ValueError("`x` must have a batch axis, got a scalar.")
    seed = _seed_pair(seed)
    replicas = num_replicas()
    if replicas == 1:
        return x, lambda y: y

    local_batch = tf.shape(x, out_type=tf.int32)[0]
    sizes_checked = tf.debugging.assert_equal(
        gathered_sizes(local_batch),
        local_batch,
        message=(
            "shuffle_across_replicas needs the same local batch size on every "
            "replica (batch the dataset with drop_remainder=True); "
            "per-replica sizes vs this replica's size"
        ),
    )
    with tf.control_dependencies([sizes_checked] if sizes_checked is not None else []):
        permutation = shuffle_permutation(seed, replicas, local_batch)
    # Sizes are equal (checked above), so replica r's rows start at r·b.
    mine = replica_id() * local_batch + tf.range(local_batch)
    x_shuffled = _gather_rows(x, tf.gather(permutation, mine))
    x_shuffled.set_shape(x.shape)
    # Where each of this replica's original rows sits in the shuffled batch.
    home_positions = tf.gather(tf.math.invert_permutation(permutation), mine)

    def unshuffle(y):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 0:
            raise ValueError("`y` must have a batch axis, got a scalar.")
        if None not in (y.shape[0], x.shape[0]) and y.shape[0] != x.shape[0]:
            # The static counterpart of the assertion below, which XLA drops.
            raise ValueError(
                f"unshuffle expects as many rows as shuffle_across_replicas returned "
                f"({x.shape[0]}), got `y` with {y.shape[0]}."
            )
        size_checked = tf.debugging.assert_equal(
            tf.shape(y, out_type=tf.int32)[0],
            local_batch,
            message="unshuffle expects as many rows as shuffle_across_replicas returned",
        )
        with tf.control_dependencies([size_checked] if size_checked is not None else []):
            y_home = _gather_rows(y, home_positions)
        y_home.set_shape(x.shape[:1].concatenate(y.shape[1:]))
        return y_home

    return x_shuffled, unshuffle
