"""Shared machinery of the contrastive losses: checks, gather, masked softmax."""

import math

import keras
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast.losses.tiled import check_tile_size
from keras_contrast.losses.tiled import class_positive_logit
from keras_contrast.losses.tiled import tiled_logsumexp

NEGATIVES = ("all", "cross")
_REDUCTIONS_MEAN = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def check_positive(name, value):
    """Raises a ValueError unless a Python number `value` is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # Tensors are checked at run time.
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}.")


def check_negatives(negatives):
    if negatives not in NEGATIVES:
        raise ValueError(
            f"`negatives` must be one of {NEGATIVES}, got {negatives!r}."
        )


def check_embeddings(y_pred, num_views, loss_name, gather=True):
    """Static checks of the `(batch, views, dim)` layout."""
    shape = y_pred.shape
    if shape.rank != 3:
        raise ValueError(
            f"{loss_name}: `y_pred` must have rank 3 (batch, views, dim), got "
            f"shape {tuple(shape) if shape.rank is not None else 'unknown'}."
        )
    if shape[1] != num_views:
        raise ValueError(
            f"{loss_name}: `y_pred` must hold {num_views} views on axis 1 "
            f"(batch, {num_views}, dim), got shape {tuple(shape)}."
        )
    if shape[0] == 1 and (not gather or distribute.num_replicas() == 1):
        raise ValueError(
            f"{loss_name}: a batch of one sample has no negatives; `y_pred` "
            f"has shape {tuple(shape)}. Use a batch of at least 2 samples."
        )


def check_labels(y_true, y_pred, loss_name):
    """Returns class ids as int32 `(batch,)`, or None when `y_true` is None."""
    if y_true is None:
        return None
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 2 and y_true.shape[1] == 1:
        y_true = tf.squeeze(y_true, axis=1)
    if y_true.shape.rank is not None and y_true.shape.rank != 1:
        raise ValueError(
            f"{loss_name}: `y_true` must be None or integer class ids of shape "
            f"(batch,), got shape {tuple(y_true.shape)}."
        )
    batch, label_batch = y_pred.shape[0], y_true.shape[0]
    if batch is not None and label_batch is not None and batch != label_batch:
        raise ValueError(
            f"{loss_name}: `y_true` has {label_batch} labels but `y_pred` "
            f"holds {batch} samples."
        )
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    return tf.cast(y_true, tf.int32)


def prepare_embeddings(y_pred, normalize, loss_name):
    """Casts to float32 (softmax precision under mixed policies), checks for
    non-finite values, and L2-normalises the last axis if asked."""
    z = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    z = tf.debugging.assert_all_finite(
        z, f"{loss_name}: `y_pred` contains NaN or Inf embeddings."
    )
    if normalize:
        squared_norm = tf.reduce_sum(tf.square(z), axis=-1, keepdims=True)
        z = z * tf.math.rsqrt(tf.maximum(squared_norm, 1e-12))
    return z


def temperature_tensor(temperature, loss_name):
    """Temperature as a scalar float32 tensor, asserted > 0 at run time."""
    temperature = tf.cast(temperature, tf.float32)
    if temperature.shape.rank:
        raise ValueError(
            f"{loss_name}: `temperature` must be a scalar, got shape "
            f"{tuple(temperature.shape)}."
        )
    check = tf.debugging.assert_positive(
        temperature, message=f"{loss_name}: `temperature` must be > 0."
    )
    with tf.control_dependencies([check]):
        return tf.identity(temperature)


class GlobalBatch:
    """The global (gathered) view of this replica's local embeddings.

    Attributes:
        local: list of `(b, dim)` float32 tensors, one per view, this replica.
        views: list of `(N, dim)` tensors, every replica's rows (with
            gradients), identical to `local` outside a strategy.
        offset: int32 scalar, first global row of this replica.
        size: int32 scalar, N.
        labels: int32 `(N,)` gathered class ids, or None.
        local_labels: int32 `(b,)`, or None.
    """

    def __init__(self, z, labels, gather, loss_name, gathered_views=None,
                 stop_gradient_views=()):
        self.local = [z[:, v] for v in range(z.shape[1])]
        if gathered_views is None:
            gathered_views = range(len(self.local))
        local_batch = tf.shape(z)[0]
        self.views = list(self.local)
        self.offset = tf.constant(0, tf.int32)
        if gather:
            # Only the views used as candidates are gathered: an unused
            # collective would still have to be matched by every replica.
            for v in gathered_views:
                view = self.local[v]
                if v in stop_gradient_views:
                    view = tf.stop_gradient(view)
                self.views[v] = distribute.all_gather(view)
            self.offset = distribute.local_batch_offset(local_batch)
        self.size = tf.shape(self.views[gathered_views[0]])[0]
        self.local_labels = labels
        self.labels = None
        if labels is not None:
            self.labels = distribute.all_gather(labels) if gather else labels
        # Asserts are stateful ops: tf.function runs them without explicit
        # control dependencies.
        tf.debugging.assert_greater_equal(
            self.size,
            2,
            message=(
                f"{loss_name}: the global batch holds fewer than 2 samples, so "
                "there are no negatives."
            ),
        )

    def rows(self):
        """Global row index of each local sample, int32 `(b,)`."""
        return tf.range(tf.shape(self.local[0])[0]) + self.offset


def masked_contrast(
    anchors,
    candidates,
    temperature,
    positive_mask,
    self_mask=None,
    drop_positives_from_denominator=False,
):
    """Per-anchor contrastive loss with class-id positives (masks).

    For anchor a with logits s_ak = <a, c_k>/τ and positives P(a):

        L_a = -mean_{p ∈ P(a)} s_ap + log Σ_{k ∈ D(a)} exp(s_ak)

    with D(a) = all candidates but a itself (SupCon L_out), or without the
    positives as well (DCL). Masked logits are -inf in a stable log-sum-exp.

    Args:
        anchors: `(b, dim)` float32.
        candidates: `(M, dim)` float32.
        temperature: scalar float32 tensor.
        positive_mask: bool `(b, M)`.
        self_mask: bool `(b, M)` or None, the anchor's own column.
        drop_positives_from_denominator: bool, DCL.

    Returns:
        `(b,)` float32 per-anchor losses.
    """
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    excluded = tf.zeros_like(positive_mask)
    if self_mask is not None:
        excluded = tf.logical_or(excluded, self_mask)
    if drop_positives_from_denominator:
        excluded = tf.logical_or(excluded, positive_mask)
    log_denominator = tf.reduce_logsumexp(
        tf.where(excluded, tf.constant(-math.inf, logits.dtype), logits), axis=1
    )
    positives = tf.cast(positive_mask, logits.dtype)
    positive_logit = tf.reduce_sum(positives * logits, axis=1) / tf.reduce_sum(
        positives, axis=1
    )
    return log_denominator - positive_logit


def pair_contrast(
    anchors,
    positives,
    candidates,
    temperature,
    excluded_columns,
    decoupled=False,
    positive_weight=None,
    logits=None,
    tile_size=None,
    candidate_gradient=True,
):
    """Per-anchor loss when each anchor has exactly one positive.

    With s_k = <a, c_k>/τ, the positive p's logit s_p = <a, p>/τ, and
    lse_neg = log Σ_{k ∉ {self, p}} exp(s_k):

        InfoNCE:  log(e^{s_p} + e^{lse_neg}) - s_p = softplus(lse_neg - s_p)
        DCL(W):   lse_neg - w · s_p                                (DCL eq. 6)

    The softplus form is exact near a loss of 0, where the plain difference
    of two ≈1/τ terms cancels in float32. The positive's logit comes from a
    row-wise dot product and the excluded columns are scattered to -inf, so
    no `(b, M)` masks are built.

    Args:
        anchors: `(b, dim)` float32.
        positives: `(b, dim)` float32, each anchor's positive.
        candidates: `(M, dim)` float32, the columns scored.
        temperature: scalar float32 tensor.
        excluded_columns: list of int32 `(b,)` tensors, the columns of each
            row left out of the negatives (its positive, itself).
        decoupled: bool, DCL's denominator.
        positive_weight: `(b,)` or None, DCLW's w_i.
        logits: `(b, M)` or None, `anchors · candidatesᵀ / τ` if already
            computed.
        tile_size: None (dense `(b, M)` logits) or int: the log-sum-exp
            runs over tiles of that many columns (`tiled_logsumexp`).
        candidate_gradient: bool, False when the candidates are
            stop-gradient (the tiled path then skips their gradient).

    Returns:
        `(b,)` float32.
    """
    if tile_size is not None:
        log_negatives = tiled_logsumexp(anchors, candidates, temperature, excluded_columns,
                                        tile_size, candidate_gradient=candidate_gradient)
    else:
        if logits is None:
            logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
        rows = tf.range(tf.shape(anchors)[0])
        indices = tf.concat([tf.stack([rows, c], axis=1) for c in excluded_columns], 0)
        minus_infinity = tf.fill(tf.shape(indices)[:1], tf.constant(-math.inf))
        negative_logits = tf.tensor_scatter_nd_update(logits, indices, minus_infinity)
        log_negatives = tf.reduce_logsumexp(negative_logits, axis=1)
    positive_logit = tf.reduce_sum(anchors * positives, axis=1) / temperature
    if not decoupled:
        return tf.nn.softplus(log_negatives - positive_logit)
    if positive_weight is not None:
        positive_logit = positive_weight * positive_logit
    return log_negatives - positive_logit


def pair_columns(batch, anchor_view, negatives):
    """Candidates and excluded columns of the two-view losses, without labels.

    With N global samples, anchor i of view v (global row r = offset + i),
    `negatives="all"` scores it against the 2N columns [view 0 | view 1]:

        columns   0 ........ N-1 | N ....... 2N-1
                  z_0^(0) ... z_{N-1}^(0) | z_0^(1) ... z_{N-1}^(1)
        self      r + v·N             positive   r + (1-v)·N

    `negatives="cross"` scores it against the N columns of the other view
    only; the positive is column r and there is no self column.

    Returns:
        (candidates `(M, dim)`, excluded columns: list of int32 `(b,)`).
    """
    rows = batch.rows()
    other = 1 - anchor_view
    if negatives == "cross":
        return batch.views[other], [rows]
    candidates = tf.concat(batch.views, axis=0)
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
    candidates = tf.concat(batch.views, axis=0)
    columns = tf.range(2 * batch.size)
    self_column = batch.rows() + anchor_view * batch.size
    self_mask = self_column[:, None] == columns[None, :]
    candidate_labels = tf.concat([batch.labels, batch.labels], axis=0)
    same_class = batch.local_labels[:, None] == candidate_labels[None, :]
    positive_mask = tf.logical_and(same_class, tf.logical_not(self_mask))
    return candidates, positive_mask, self_mask


def tiled_class_contrast(batch, anchor_view, negatives, temperature, decoupled, tile_size):
    """`masked_contrast` with class-id positives (columns as in
    `pair_masks`), tile by tile: the denominator is a `tiled_logsumexp`
    and the positives' mean logit comes from per-class sums, so no `(b, M)`
    tensor is built.

    Returns:
        `(b,)` float32.
    """
    anchors = batch.local[anchor_view]
    if negatives == "cross":
        candidates, candidate_labels = batch.views[1 - anchor_view], batch.labels
        self_columns = None
    else:
        candidates = tf.concat(batch.views, axis=0)
        candidate_labels = tf.concat([batch.labels, batch.labels], axis=0)
        self_columns = batch.rows() + anchor_view * batch.size
    log_denominator = tiled_logsumexp(
        anchors, candidates, temperature, [] if self_columns is None else [self_columns],
        tile_size, anchor_labels=batch.local_labels if decoupled else None,
        candidate_labels=candidate_labels)
    positive_logit = class_positive_logit(anchors, candidates, temperature, batch.local_labels,
                                          candidate_labels, self_columns)
    return log_denominator - positive_logit


def reduce_contrastive(values, sample_weight, reduction):
    """Reduces per-sample losses so that the strategy's sum is exact.

    Keras divides each replica's mean by the number of replicas R and sums
    the replicas' gradients; that equals the global mean only when every
    replica holds the same number of samples. Dividing this replica's sum
    by the *global* sample count (or weight) instead is exact for any
    split, including the uneven last batch of an epoch.
    """
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, values.dtype)
        sample_weight = tf.reshape(sample_weight, [-1])
        values = values * sample_weight
    if reduction is None or reduction == "none":
        return values
    total = tf.reduce_sum(values)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        local_count = tf.reduce_sum(sample_weight)
        global_count = tf.reduce_sum(
            tf.stop_gradient(distribute.all_gather(tf.reshape(local_count, [1])))
        )
    else:
        global_count = tf.cast(
            tf.reduce_sum(distribute.gathered_sizes(tf.shape(values)[0])),
            values.dtype,
        )
    return tf.math.divide_no_nan(total, global_count)


class ContrastiveLoss(keras.losses.Loss):
    """Base class of the contrastive losses: `(batch, views, dim)` in,
    per-sample losses out, exact under a `tf.distribute` strategy.

    Like `keras.losses.LossFunctionWrapper`: a subclass passes its pure
    per-sample function `fn(y_true, y_pred, temperature, gather, normalize,
    **fn_kwargs)` and the function's own arguments; each argument becomes an
    attribute and a `get_config` entry.

    Args:
        fn: the per-sample loss function.
        temperature: float > 0.
        gather: bool. Gather embeddings across replicas (with gradients).
        normalize: bool. L2-normalise the embeddings first.
        reduction: a Keras reduction. The mean reductions divide by the
            global number of samples, so they stay exact when replicas
            hold different numbers of samples.
        name: str.
        dtype: dtype of the returned loss (computation is float32).
        **fn_kwargs: further arguments of `fn`.
    """

    def __init__(
        self,
        fn,
        temperature=0.1,
        gather=True,
        normalize=True,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
        **fn_kwargs,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        check_positive("temperature", temperature)
        check_tile_size(fn_kwargs.get("tile_size"))
        self.fn = fn
        self.temperature = temperature
        self.gather = bool(gather)
        self.normalize = bool(normalize)
        self._fn_kwargs = fn_kwargs
        for key, value in fn_kwargs.items():
            setattr(self, key, value)

    def __call__(self, y_true, y_pred, sample_weight=None, temperature=None):
        """Computes the reduced loss.

        Unlike `keras.losses.Loss.__call__`, accepts `y_true=None` (what
        `model.fit(x)` without labels passes) and an optional `temperature`
        tensor that overrides the configured one (a learnable temperature
        fed by a model's `compute_loss`).
        """
        with tf.name_scope(self.name):
            if temperature is None:
                temperature = self.temperature
            values = self.contrast(y_true, y_pred, temperature)
            values = reduce_contrastive(values, sample_weight, self.reduction)
            return tf.cast(values, self.dtype)

    def call(self, y_true, y_pred):
        return self.contrast(y_true, y_pred, self.temperature)

    def contrast(self, y_true, y_pred, temperature):
        """Per-sample `(batch,)` losses at the given temperature."""
        return self.fn(
            y_true,
            y_pred,
            temperature=temperature,
            gather=self.gather,
            normalize=self.normalize,
            **self._fn_kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "temperature": self.temperature,
                "gather": self.gather,
                "normalize": self.normalize,
                **self._fn_kwargs,
            }
        )
        return config


def two_view_loss(
    y_true,
    y_pred,
    temperature,
    negatives,
    gather,
    normalize,
    loss_name,
    use_labels=True,
    decoupled=False,
    positive_weight_fn=None,
    tile_size=None,
):
    """Per-sample mean of the two anchor losses (view 0 → 1, view 1 → 0).

    Shared by InfoNCE, DCL, DCLW and CLIP, which differ only in the
    denominator (`decoupled`), the positive's weight and the defaults.
    `tile_size` switches to the tiled log-sum-exp (module `tiled`).

    Returns:
        `(batch,)` float32.
    """
    check_positive("temperature", temperature)
    check_negatives(negatives)
    check_tile_size(tile_size)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 2, loss_name, gather)
    labels = check_labels(y_true, y_pred, loss_name) if use_labels else None
    z = prepare_embeddings(y_pred, normalize, loss_name)
    tau = temperature_tensor(temperature, loss_name)
    batch = GlobalBatch(z, labels, gather, loss_name)
    positive_weight = positive_weight_fn(batch) if positive_weight_fn else None
    cross_logits = None
    gathered = any(g is not l for g, l in zip(batch.views, batch.local))
    if negatives == "cross" and labels is None and not gathered and tile_size is None:
        # Without a gather the B→A logits are the transpose of the A→B ones.
        view_0_to_1 = tf.matmul(batch.local[0], batch.local[1], transpose_b=True) / tau
        cross_logits = (view_0_to_1, tf.transpose(view_0_to_1))
    anchor_losses = []
    for view in (0, 1):
        if labels is not None and tile_size is not None:
            anchor_losses.append(
                tiled_class_contrast(batch, view, negatives, tau, decoupled, tile_size))
            continue
        if labels is not None:
            candidates, positive_mask, self_mask = pair_masks(batch, view, negatives)
            anchor_losses.append(
                masked_contrast(
                    batch.local[view],
                    candidates,
                    tau,
                    positive_mask,
                    self_mask,
                    drop_positives_from_denominator=decoupled,
                )
            )
            continue
        candidates, excluded_columns = pair_columns(batch, view, negatives)
        anchor_losses.append(
            pair_contrast(
                batch.local[view],
                batch.local[1 - view],
                candidates,
                tau,
                excluded_columns,
                decoupled=decoupled,
                positive_weight=positive_weight,
                logits=cross_logits[view] if cross_logits else None,
                tile_size=tile_size,
            )
        )
    return (anchor_losses[0] + anchor_losses[1]) / 2.0
