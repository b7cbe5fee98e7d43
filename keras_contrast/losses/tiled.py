"""Contrastive log-sum-exps computed tile by tile, never holding the
`(b, M)` logits: memory O(b · tile_size) instead of O(b · M).

The forward pass streams over column tiles with the online log-sum-exp
(running max m and running sum s, rescaled by exp(m_old - m_new) when the
max grows, as in Milakov & Gimelshein 2018 and Inf-CL, Cheng et al. 2024).
The backward pass recomputes each tile's logits instead of storing them:
with p_ik = exp(s_ik - lse_i) and upstream gradient g_i,

    ∂L/∂a_i = Σ_k g_i p_ik c_k / τ,   ∂L/∂c_k = Σ_i g_i p_ik a_i / τ,
    ∂L/∂τ   = -Σ_ik g_i p_ik s_ik / τ = -Σ_i g_i (lse_i + Σ_k p_ik (s_ik - lse_i)) / τ,

the last form summing the small terms p (s - lse) instead of the large
p·s (precision at large logits).

The tile loops are `tf.while_loop`s with `parallel_iterations=1`, so one
tile at a time is alive (TensorFlow would otherwise run up to 10 iterations
ahead, each with its own tile buffers). They hold no collective op (the
cross-replica gather happens before), so they also run under
`MirroredStrategy`.
"""

import math

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_tile_size


def _excluded(anchors, excluded_columns, anchor_labels, candidate_labels, start, size,
              num_columns):
    """bool `(b, size)`: the tile's columns left out of each row's sum (and
    the padding columns at and past `num_columns`)."""
    tile_columns = start + tf.range(size)
    mask = tf.broadcast_to(tile_columns[None, :] >= num_columns, [tf.shape(anchors)[0], size])
    for excluded in excluded_columns:
        mask = tf.logical_or(mask, excluded[:, None] == tile_columns[None, :])
    if anchor_labels is not None:
        tile_labels = tf.slice(candidate_labels, [start], [size])
        mask = tf.logical_or(mask, anchor_labels[:, None] == tile_labels[None, :])
    return mask


def padded_tiles(candidates, tile_size, *columns):
    """`(num_tiles, candidates, *columns)` with the rows padded by zeros to
    `num_tiles · tile_size`, so every tile has the static size `tile_size`.

    XLA needs static sizes in a loop body (a last tile of
    `num_columns - start` columns is a dynamic `Range`/slice, which
    `jit_compile=True` and TPUs refuse); the padding columns are masked."""
    num_columns = tf.shape(candidates)[0]
    num_tiles = (num_columns + tile_size - 1) // tile_size
    padding = num_tiles * tile_size - num_columns
    padded = [tf.pad(candidates, [[0, padding], [0, 0]])]
    padded += [None if c is None else tf.pad(c, [[0, padding]]) for c in columns]
    return (num_tiles, *padded)


@keras_contrast_export("keras_contrast.losses.tiled_logsumexp")
def tiled_logsumexp(anchors, candidates, temperature, excluded_columns, tile_size,
                    anchor_labels=None, candidate_labels=None, candidate_gradient=True):
    """`log Σ_{k not excluded} exp(<a_i, c_k> / τ)` for every anchor row.

    Equals `reduce_logsumexp` over the masked `(b, M)` logits, in memory
    O(b · tile_size).

    Args:
        anchors: `(b, dim)` float32 or float64.
        candidates: `(M, dim)`, same dtype.
        temperature: scalar tensor > 0, same dtype.
        excluded_columns: list of int32 `(b,)`: per row, columns left out
            (its positive, itself).
        tile_size: int >= 1, columns per tile (the last tile may be smaller).
        anchor_labels: int32 `(b,)` or None; with `candidate_labels`
            (`(M,)`), columns of the row's own label are left out as well.
        candidate_labels: int32 `(M,)` or None.
        candidate_gradient: bool. False skips ∂/∂candidates (stop-gradient
            keys), saving a matmul per tile.

    Returns:
        `(b,)`; -inf for a row whose every column is excluded (its
        gradient is 0).
    """
    check_tile_size(tile_size)
    dtype = anchors.dtype
    minus_infinity = tf.constant(-math.inf, dtype)
    zero = tf.constant(0.0, dtype)
    excluded_columns = [tf.convert_to_tensor(c, tf.int32) for c in excluded_columns]
    num_columns = tf.shape(candidates)[0]
    dim = candidates.shape[-1]

    @tf.custom_gradient
    def logsumexp(a, c, tau):
        num_tiles, padded, labels = padded_tiles(c, tile_size, candidate_labels)

        def tile(j):
            """Tile j's columns, logits and mask of excluded entries."""
            start = j * tile_size
            columns = tf.slice(padded, [start, 0], [tile_size, -1])
            logits = tf.matmul(a, columns, transpose_b=True) / tau
            mask = _excluded(a, excluded_columns, anchor_labels, labels, start, tile_size,
                             num_columns)
            return columns, logits, mask

        def forward(j, running_max, running_sum):
            _, logits, mask = tile(j)
            logits = tf.where(mask, minus_infinity, logits)
            new_max = tf.maximum(running_max, tf.reduce_max(logits, axis=1))
            shift = tf.where(tf.math.is_finite(new_max), new_max, zero)
            running_sum = (running_sum * tf.exp(running_max - shift)
                           + tf.reduce_sum(tf.exp(logits - shift[:, None]), axis=1))
            return j + 1, new_max, running_sum

        rows = tf.shape(a)[0]
        _, maximum, total = tf.while_loop(
            lambda j, *_: j < num_tiles, forward,
            (tf.constant(0), tf.fill([rows], minus_infinity), tf.zeros([rows], dtype)),
            parallel_iterations=1,
        )
        shift = tf.where(tf.math.is_finite(maximum), maximum, zero)
        result = tf.math.log(total) + shift

        def gradient(upstream):
            finite = tf.math.is_finite(result)
            lse = tf.where(finite, result, zero)
            weight = tf.where(finite, upstream, zero)

            def backward(j, grad_a, grad_tau, grad_c):
                columns, logits, mask = tile(j)
                probability = tf.where(mask, zero, tf.exp(logits - lse[:, None]))
                weighted = weight[:, None] * probability  # g_i p_ik
                grad_a += tf.matmul(weighted, columns) / tau
                # Masked entries have weight 0 and finite recomputed logits.
                # Σ_k p_ik s_ik = lse_i + Σ_k p_ik (s_ik - lse_i): the sum of
                # small terms here, lse_i after the loop (precision).
                grad_tau -= tf.reduce_sum(weighted * (logits - lse[:, None])) / tau
                if candidate_gradient:
                    grad_c = grad_c.write(j, tf.matmul(weighted, a, transpose_a=True) / tau)
                return j + 1, grad_a, grad_tau, grad_c

            columns_gradient = tf.TensorArray(dtype, size=num_tiles,
                                              element_shape=tf.TensorShape([tile_size, dim]))
            _, grad_a, grad_tau, columns_gradient = tf.while_loop(
                lambda j, *_: j < num_tiles, backward,
                (tf.constant(0), tf.zeros_like(a), tf.zeros([], dtype), columns_gradient),
                parallel_iterations=1,
            )
            grad_tau -= tf.reduce_sum(weight * lse) / tau
            grad_c = (columns_gradient.concat()[:num_columns] if candidate_gradient
                      else tf.zeros_like(candidates))
            return grad_a, grad_c, grad_tau

        return result, gradient

    return logsumexp(anchors, candidates, temperature)


def class_positive_logit(anchors, candidates, temperature, anchor_labels, candidate_labels,
                         self_columns=None):
    """Mean logit of each anchor's positives (same label, not itself):
    `<a_i, Σ_{k ∈ P(i)} c_k> / (τ |P(i)|)`, from per-class sums of the
    candidates instead of a `(b, M)` mask (SupCon L_out's positive term).

    Args:
        anchors: `(b, dim)`; candidates: `(M, dim)`.
        temperature: scalar tensor.
        anchor_labels: int32 `(b,)`; candidate_labels: int32 `(M,)`.
        self_columns: int32 `(b,)` or None, each anchor's own column.

    Returns:
        `(b,)`, the anchors' dtype.
    """
    classes, ids = tf.unique(tf.concat([candidate_labels, anchor_labels], axis=0))
    num_candidates = tf.shape(candidate_labels)[0]
    candidate_ids, anchor_ids = ids[:num_candidates], ids[num_candidates:]
    num_classes = tf.shape(classes)[0]
    class_sums = tf.math.unsorted_segment_sum(candidates, candidate_ids, num_classes)
    class_counts = tf.math.unsorted_segment_sum(
        tf.ones_like(candidate_ids, candidates.dtype), candidate_ids, num_classes)
    positive_sum = tf.gather(class_sums, anchor_ids)
    count = tf.gather(class_counts, anchor_ids)
    if self_columns is not None:
        positive_sum -= tf.gather(candidates, self_columns)
        count -= 1.0
    return tf.reduce_sum(anchors * positive_sum, axis=1) / (temperature * count)
