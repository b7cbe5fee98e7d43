"""The pair kernels: each anchor's log-sum-exp over its denominator and its
positive's logit, dense or tiled (module `tiled`), never the loss itself.

A loss combines these `AnchorTerms` with its own formula (InfoNCE's
`softplus(lse⁻ - s⁺)`, DCL's `lse⁻ - w·s⁺`; docs/design.md §2). Columns
follow the layout of `GlobalBatch.candidates()`: with N global samples,
anchor i of view v (global row r = offset + i) and `negatives="all"`:

    columns   0 ........ N-1 | N ....... 2N-1
              z_0^(0) ... z_{N-1}^(0) | z_0^(1) ... z_{N-1}^(1)
    self      r + v·N             positive   r + (1-v)·N

`negatives="cross"` scores it against the N columns of the other view
only; the positive is column r and there is no self column.
"""

import math
from typing import NamedTuple

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.tiled import class_positive_logit
from keras_contrast.losses.tiled import tiled_logsumexp


class AnchorTerms(NamedTuple):
    """Per-anchor pieces of a contrastive loss, `(b,)` each.

    Attributes:
        log_denominator: log Σ exp(s_ak) over the anchor's denominator
            columns: its negatives, plus its class-id positives when the
            loss keeps them there.
        positive_logit: s_ap = <a, p>/τ of the one positive, or the mean
            logit of the class-id positives.
    """

    log_denominator: tf.Tensor
    positive_logit: tf.Tensor


@keras_contrast_export("keras_contrast.losses.one_positive_terms")
def one_positive_terms(anchors, positives, candidates, temperature, excluded_columns,
                       logits=None, tile_size=None, candidate_gradient=True):
    """Terms of anchors that have exactly one positive each.

    `log_denominator` is `lse⁻ = log Σ_{k ∉ excluded} exp(<a, c_k>/τ)`:
    the positive's column is among the excluded ones, so a loss that keeps
    the positive in its denominator adds it back (InfoNCE's softplus). The
    positive's logit comes from a row-wise dot product and the excluded
    columns are scattered to -inf, so no `(b, M)` masks are built.

    Args:
        anchors: `(b, dim)` float.
        positives: `(b, dim)`, each anchor's positive.
        candidates: `(M, dim)`, the columns scored.
        temperature: scalar tensor, same dtype.
        excluded_columns: list of int32 `(b,)` tensors, the columns of each
            row left out (its positive, itself).
        logits: `(b, M)` or None, `anchors · candidatesᵀ / τ` if already
            computed.
        tile_size: None (dense `(b, M)` logits) or int: the log-sum-exp
            runs over tiles of that many columns (`tiled_logsumexp`).
        candidate_gradient: bool, False when the candidates are
            stop-gradient (the tiled path then skips their gradient).

    Returns:
        `AnchorTerms`; `log_denominator` is -inf for an anchor without
        negatives.
    """
    if tile_size is not None:
        log_negatives = tiled_logsumexp(anchors, candidates, temperature, excluded_columns,
                                        tile_size, candidate_gradient=candidate_gradient)
    else:
        if logits is None:
            logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
        rows = tf.range(tf.shape(anchors)[0])
        indices = tf.concat([tf.stack([rows, c], axis=1) for c in excluded_columns], 0)
        minus_infinity = tf.fill(tf.shape(indices)[:1], tf.constant(-math.inf, logits.dtype))
        negative_logits = tf.tensor_scatter_nd_update(logits, indices, minus_infinity)
        log_negatives = tf.reduce_logsumexp(negative_logits, axis=1)
    positive_logit = tf.reduce_sum(anchors * positives, axis=1) / temperature
    return AnchorTerms(log_negatives, positive_logit)


@keras_contrast_export("keras_contrast.losses.class_terms")
def class_terms(anchors, candidates, temperature, positive_mask, self_mask=None,
                drop_positives=False, has_negatives=None):
    """Terms of anchors whose positives are given by a mask (class ids).

    For anchor a with logits s_ak = <a, c_k>/τ and positives P(a):
    `positive_logit` = mean_{p ∈ P(a)} s_ap and `log_denominator` =
    log Σ_{k ∈ D(a)} exp(s_ak), with D(a) every candidate but a itself
    (SupCon L_out), or without the positives as well (`drop_positives`).
    Masked logits are -inf in a stable log-sum-exp.

    Args:
        anchors: `(b, dim)` float.
        candidates: `(M, dim)`, same dtype.
        temperature: scalar tensor, same dtype.
        positive_mask: bool `(b, M)`.
        self_mask: bool `(b, M)` or None, the anchor's own column.
        drop_positives: bool, the positives leave the denominator.
        has_negatives: None or a bool scalar tensor; when False, the
            positives stay in the denominator so that it is not empty (the
            caller replaces the loss: its gradient stays finite).

    Returns:
        `AnchorTerms`.
    """
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    excluded = tf.zeros_like(positive_mask)
    if self_mask is not None:
        excluded = tf.logical_or(excluded, self_mask)
    if drop_positives:
        dropped = positive_mask
        if has_negatives is not None:
            dropped = tf.logical_and(dropped, has_negatives)
        excluded = tf.logical_or(excluded, dropped)
    log_denominator = tf.reduce_logsumexp(
        tf.where(excluded, tf.constant(-math.inf, logits.dtype), logits), axis=1
    )
    positives = tf.cast(positive_mask, logits.dtype)
    positive_logit = tf.reduce_sum(positives * logits, axis=1) / tf.reduce_sum(
        positives, axis=1
    )
    return AnchorTerms(log_denominator, positive_logit)


def pair_columns(batch, anchor_view, negatives):
    """Candidates and excluded columns (positive, self) of one anchor view
    of a two-view batch without labels (layout in the module docstring).

    Returns:
        (candidates `(M, dim)`, excluded columns: list of int32 `(b,)`).
    """
    rows = batch.rows()
    other = 1 - anchor_view
    if negatives == "cross":
        return batch.views[other], [rows]
    candidates = batch.candidates()
    return candidates, [rows + anchor_view * batch.size, rows + other * batch.size]


def pair_masks(batch, anchor_view, negatives):
    """Candidates, positive and self masks with class-id positives: every
    other embedding of the anchor's class is a positive (columns as in
    `pair_columns`).

    Returns:
        (candidates `(M, dim)`, positive_mask `(b, M)`, self_mask or None).
    """
    if negatives == "cross":
        positive_mask = batch.local_labels[:, None] == batch.labels[None, :]
        return batch.views[1 - anchor_view], positive_mask, None
    candidates = batch.candidates()
    columns = tf.range(2 * batch.size)
    self_column = batch.rows() + anchor_view * batch.size
    self_mask = self_column[:, None] == columns[None, :]
    same_class = batch.local_labels[:, None] == batch.candidate_labels()[None, :]
    positive_mask = tf.logical_and(same_class, tf.logical_not(self_mask))
    return candidates, positive_mask, self_mask


def tiled_class_terms(batch, anchor_view, negatives, temperature, drop_positives, tile_size):
    """`class_terms` of one anchor view (columns as in `pair_masks`), tile
    by tile: the denominator is a `tiled_logsumexp` and the positives'
    mean logit comes from per-class sums, so no `(b, M)` tensor is built.

    Returns:
        `AnchorTerms`.
    """
    anchors = batch.local[anchor_view]
    if negatives == "cross":
        candidates, candidate_labels = batch.views[1 - anchor_view], batch.labels
        self_columns = None
    else:
        candidates, candidate_labels = batch.candidates(), batch.candidate_labels()
        self_columns = batch.rows() + anchor_view * batch.size
    log_denominator = tiled_logsumexp(
        anchors, candidates, temperature, [] if self_columns is None else [self_columns],
        tile_size, anchor_labels=batch.local_labels if drop_positives else None,
        candidate_labels=candidate_labels)
    positive_logit = class_positive_logit(anchors, candidates, temperature, batch.local_labels,
                                          candidate_labels, self_columns)
    return AnchorTerms(log_denominator, positive_logit)
