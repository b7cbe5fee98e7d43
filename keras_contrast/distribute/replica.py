"""Replica-context helpers: replica ids, counts, all-gather with gradients."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export


def _multi_replica_context():
    """Returns the replica context if there are several replicas, else None.

    Outside any strategy, in the default replica context, and in a
    cross-replica context (inside `strategy.scope()` but outside
    `strategy.run`) there is nothing to gather from, so callers treat the
    computation as single-replica.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


@keras_contrast_export("keras_contrast.distribute.num_replicas")
def num_replicas():
    """Number of replicas in sync in the current replica context.

    Returns:
        Python int: 1 outside a strategy or in a cross-replica context.

    Example:
    >>> keras_contrast.distribute.num_replicas()
    1
    """
    context = _multi_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


@keras_contrast_export("keras_contrast.distribute.replica_id")
def replica_id():
    """Index of the current replica in its sync group, as an int32 tensor.

    Returns:
        A scalar `int32` tensor: 0 outside a strategy. Under `TPUStrategy`
        the id is only known at run time, which is why this is a tensor.
    """
    context = _multi_replica_context()
    if context is None:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32)


@keras_contrast_export("keras_contrast.distribute.all_gather")
def all_gather(x, axis=0):
    """Concatenates `x` from every replica, in replica order, with gradients.

    The backward pass sums the incoming gradients over replicas and returns
    to each replica the slice it contributed, so a loss computed on the
    gathered tensor trains every replica's encoder exactly as the
    single-device loss on the global batch would. Replicas may contribute
    different sizes along `axis` (the last batch of an epoch).

    Uses only `tf.distribute.ReplicaContext.all_gather`, so it runs under
    `MirroredStrategy`, `MultiWorkerMirroredStrategy` and `TPUStrategy`.

    Args:
        x: tensor. This replica's slice.
        axis: int. Axis along which to concatenate.

    Returns:
        The concatenated tensor; `x` itself outside a strategy or with one
        replica.

    Example:
    >>> z_global = keras_contrast.distribute.all_gather(z_local)
    """
    context = _multi_replica_context()
    if context is None:
        return x
    return _dense_gradient(context.all_gather(x, axis=axis))


@tf.custom_gradient
def _dense_gradient(x):
    """Identity whose gradient is a dense tensor.

    The gradient of `ReplicaContext.all_gather` all-reduces its incoming
    gradient and fails on `tf.IndexedSlices`, which is what arrives when a
    `tf.gather` reads the gathered tensor.
    """

    def gradient(upstream):
        return tf.convert_to_tensor(upstream)

    return tf.identity(x), gradient


@keras_contrast_export("keras_contrast.distribute.gathered_sizes")
def gathered_sizes(local_size):
    """The `local_size` of every replica, in replica order, as int32 `(R,)`.

    Args:
        local_size: int or scalar integer tensor.
    """
    local_size = tf.reshape(tf.cast(local_size, tf.int32), [1])
    context = _multi_replica_context()
    if context is None:
        return local_size
    # Gradients never flow through sizes: stop them so the gather's custom
    # gradient (an all-reduce) is not traced for an int tensor.
    return tf.stop_gradient(context.all_gather(local_size, axis=0))


@keras_contrast_export("keras_contrast.distribute.local_batch_offset")
def local_batch_offset(local_batch):
    """First global row of this replica's slice of the global batch.

    Computed as the exclusive cumulative sum of the gathered per-replica
    batch sizes. `replica_id() * local_batch` is wrong whenever replicas hold
    different numbers of samples, as they do on the last batch of an epoch.

    Args:
        local_batch: int or scalar integer tensor, this replica's batch size.

    Returns:
        A scalar `int32` tensor (0 outside a strategy).

    Example:
    >>> labels = tf.range(b) + keras_contrast.distribute.local_batch_offset(b)
    """
    sizes = gathered_sizes(local_batch)
    if _multi_replica_context() is None:
        return tf.constant(0, tf.int32)
    before_me = tf.range(tf.shape(sizes)[0]) < replica_id()
    return tf.reduce_sum(tf.where(before_me, sizes, tf.zeros_like(sizes)))
