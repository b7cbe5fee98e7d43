"""Contrastive loss against a queue of negatives (MoCo v1/v2;
docs/design.md §2.7), on the same normalisation and formulas as the
batch losses (`l2_normalize`, `info_nce_from_logits`, `dcl_from_logits`)."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.dcl import dcl_from_logits
from keras_contrast.losses.global_batch import l2_normalize
from keras_contrast.losses.info_nce import info_nce_from_logits


def queue_logits(query, key, queue, temperature=0.2, normalize=True):
    """The logits of MoCo's queue loss: `s⁺ = q·k/τ` and `s⁻_j = q·n_j/τ`.

    Args:
        query: `(batch, dim)`.
        key: `(batch, dim)`, the positives.
        queue: `(queue_size, dim)` negatives.
        temperature: float or scalar tensor > 0.
        normalize: bool. L2-normalise query, key and queue rows first
            (cosine similarities, MoCo's choice).

    Returns:
        float32 `(positive (batch,), negatives (batch, queue_size))`.
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
    if isinstance(temperature, bool) or (
        isinstance(temperature, (int, float)) and not temperature > 0
    ):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")
    q, k, n = (tf.cast(t, tf.float32) for t in (query, key, queue))
    if normalize:
        q, k, n = (l2_normalize(t) for t in (q, k, n))
    temperature = tf.cast(temperature, tf.float32)
    positive = tf.reduce_sum(q * k, axis=-1) / temperature
    negatives = tf.matmul(q, n, transpose_b=True) / temperature
    return positive, negatives


def queue_loss_from_logits(positive, negatives, decoupled=False):
    """Per-sample InfoNCE `−s⁺ + log(e^{s⁺} + Σ_j e^{s⁻_j})`, or DCL
    `−s⁺ + log Σ_j e^{s⁻_j}` (`decoupled=True`), from `queue_logits`."""
    log_negatives = tf.reduce_logsumexp(negatives, axis=1)
    if decoupled:
        return dcl_from_logits(log_negatives, positive)
    return info_nce_from_logits(log_negatives, positive)


def queue_pretext_hits(positive, negatives):
    """1.0 where the positive has the highest logit among positive + queue
    (ties count for the positive, as an argmax over `[s⁺, s⁻]` does), else
    0.0: float32 `(batch,)`."""
    return tf.cast(positive >= tf.reduce_max(negatives, axis=1), tf.float32)


def queue_loss_with_hits(query, key, queue, temperature=0.2, decoupled=False,
                         normalize=True):
    """`queue_contrastive_loss` and `queue_pretext_hits` from one set of
    logits: what a MoCo step needs (the hits carry no gradient).

    Returns:
        float32 `(per-sample losses (batch,), hits (batch,))`.
    """
    positive, negatives = queue_logits(query, key, queue, temperature, normalize)
    per_sample = queue_loss_from_logits(positive, negatives, decoupled)
    hits = queue_pretext_hits(tf.stop_gradient(positive), tf.stop_gradient(negatives))
    return per_sample, hits


@keras_contrast_export("keras_contrast.losses.queue_contrastive_loss")
def queue_contrastive_loss(query, key, queue, temperature=0.2, decoupled=False,
                           normalize=True):
    """Per-sample InfoNCE (or DCL) of queries against their keys, with the
    queue as negatives (MoCo, He et al. 2020, eq. 1; docs/design.md §2.7).

    With `s⁺ = q·k/τ` and `s⁻_j = q·n_j/τ` (on L2-normalised vectors with
    `normalize=True`): InfoNCE `−s⁺ + log(e^{s⁺} + Σ_j e^{s⁻_j})`; DCL
    (`decoupled=True`, the DCL loss after Proposition 1 of Yeh et al.,
    ECCV 2022, arXiv 2110.06848) drops the positive from the denominator:
    `−s⁺ + log Σ_j e^{s⁻_j}`.

    Args:
        query: `(batch, dim)`.
        key: `(batch, dim)`, the positives (treated as constants by MoCo).
        queue: `(queue_size, dim)` negatives.
        temperature: float or scalar tensor > 0.
        decoupled: bool. DCL instead of InfoNCE.
        normalize: bool. L2-normalise query, key and queue rows.

    Returns:
        float32 `(batch,)` losses.

    Example:
    >>> queue_contrastive_loss(q, k, queue, temperature=0.2)  # (batch,)
    """
    positive, negatives = queue_logits(query, key, queue, temperature, normalize)
    return queue_loss_from_logits(positive, negatives, decoupled)
