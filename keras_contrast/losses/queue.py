"""Contrastive loss against a queue of negatives (MoCo v1/v2)."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export


@keras_contrast_export("keras_contrast.losses.queue_contrastive_loss")
def queue_contrastive_loss(query, key, queue, temperature=0.2, decoupled=False):
    """Per-sample InfoNCE (or DCL) of queries against their keys, with the
    queue as negatives (MoCo, He et al. 2020, eq. 1).

    With `s⁺ = q·k/τ` and `s⁻_j = q·n_j/τ` on L2-normalised vectors:
    InfoNCE `−s⁺ + log(e^{s⁺} + Σ_j e^{s⁻_j})`; DCL (`decoupled=True`,
    Yeh et al. 2021, eq. 6) drops the positive from the denominator:
    `−s⁺ + log Σ_j e^{s⁻_j}`.

    Args:
        query: `(batch, dim)`.
        key: `(batch, dim)`, the positives (treated as constants by MoCo).
        queue: `(queue_size, dim)` negatives.
        temperature: float or scalar tensor > 0.
        decoupled: bool. DCL instead of InfoNCE.

    Returns:
        float32 `(batch,)` losses.
    """
    query, key, queue = (tf.convert_to_tensor(t) for t in (query, key, queue))
    if query.shape.rank != 2 or key.shape.rank != 2 or queue.shape.rank != 2:
        raise ValueError(
            "queue_contrastive_loss takes query and key of shape (batch, dim) and a "
            f"queue (size, dim), got {query.shape}, {key.shape}, {queue.shape}."
        )
    if query.shape[-1] != queue.shape[-1] or key.shape[-1] != queue.shape[-1]:
        raise ValueError(
            f"query, key and queue must share the dimension, got {query.shape[-1]}, "
            f"{key.shape[-1]} and {queue.shape[-1]}."
        )
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
    q = tf.math.l2_normalize(tf.cast(query, tf.float32), axis=-1)
    k = tf.math.l2_normalize(tf.cast(key, tf.float32), axis=-1)
    n = tf.math.l2_normalize(tf.cast(queue, tf.float32), axis=-1)
    temperature = tf.cast(temperature, tf.float32)
    positive = tf.reduce_sum(q * k, axis=-1) / temperature
    negatives = tf.matmul(q, n, transpose_b=True) / temperature
    if not decoupled:
        negatives = tf.concat([positive[:, None], negatives], axis=1)
    return tf.reduce_logsumexp(negatives, axis=1) - positive
