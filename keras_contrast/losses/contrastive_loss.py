"""Shared machinery of the contrastive losses: checks, gather, masked softmax."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast.losses.tiled import check_tile_size
from keras_contrast.losses.tiled import class_positive_logit
from keras_contrast.losses.tiled import tiled_logsumexp

NEGATIVES = ("all", "cross")
_REDUCTIONS_MEAN = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def _is_number(value):
    """A real Python or NumPy number; bools are not numbers here."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_tensor(value):
    return tf.is_tensor(value) or isinstance(value, (np.ndarray, keras.Variable))


def check_positive(name, value, allow_tensor=True):
    """Static checks of a hyperparameter that must be > 0 (`temperature`,
    `sigma`).

    A Python or NumPy number must be finite and > 0. With `allow_tensor`,
    a scalar integer or float tensor is accepted too; its value is checked
    here when it is known at trace time (an eager tensor, a constant) and
    by `positive_tensor` at run time otherwise. Booleans, strings and None
    are rejected (`True` is not the temperature 1).

    Raises:
        TypeError: `value` is not a number (or not a numeric scalar tensor).
        ValueError: `value` is not finite and > 0, or a tensor not scalar.
    """
    expected = "a finite number > 0" + (" or a scalar float tensor" if allow_tensor else "")
    if _is_number(value):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
        return
    if not (allow_tensor and _is_tensor(value)):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}.")
    dtype = tf.as_dtype(value.dtype)
    if not (dtype.is_floating or dtype.is_integer) or dtype.is_complex:
        raise TypeError(f"`{name}` must be {expected}, got a tensor of dtype {dtype.name}.")
    shape = tf.TensorShape(value.shape)
    if shape.rank:
        raise ValueError(f"`{name}` must be a scalar, got a tensor of shape {tuple(shape)}.")
    if isinstance(value, (tf.Variable, keras.Variable)):
        return  # Its value may change: checked at run time.
    static = tf.get_static_value(value)
    if static is not None and not (np.isfinite(static) and static > 0):
        raise ValueError(f"`{name}` must be {expected}, got a tensor holding {static}.")


def check_bool(name, value):
    """Raises a TypeError unless `value` is True or False (so that the
    string "False" is not taken as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_negatives(negatives):
    if not isinstance(negatives, str) or negatives not in NEGATIVES:
        raise ValueError(
            f"`negatives` must be one of {NEGATIVES}, got {negatives!r}."
        )


def compute_dtype(y_pred):
    """float64 for float64 embeddings or under `floatx() == "float64"`, else
    float32 (the softmax precision under mixed-precision policies)."""
    if y_pred.dtype == tf.float64 or keras.config.floatx() == "float64":
        return tf.float64
    return tf.float32


def check_embeddings(y_pred, num_views, loss_name, gather=True):
    """Static checks of the `(batch, views, dim)` layout and dtype."""
    shape = y_pred.shape
    if not (y_pred.dtype.is_floating or y_pred.dtype.is_integer) or y_pred.dtype.is_complex:
        raise TypeError(
            f"{loss_name}: `y_pred` must hold float embeddings, got dtype "
            f"{y_pred.dtype.name}."
        )
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
    if shape[2] == 0:
        raise ValueError(
            f"{loss_name}: `y_pred` has embedding dimension 0 (shape "
            f"{tuple(shape)}); the embeddings need at least one dimension."
        )
    if shape[0] is not None and shape[0] < 2 and (not gather or distribute.num_replicas() == 1):
        # Under a strategy with the gather, one replica may hold 0 or 1 of
        # the global batch's samples (the last batch of an epoch).
        what = "a batch of one sample" if shape[0] == 1 else "an empty batch"
        raise ValueError(
            f"{loss_name}: {what} has no negatives; `y_pred` "
            f"has shape {tuple(shape)}. Use a batch of at least 2 samples."
        )


def check_labels(y_true, y_pred, loss_name):
    """Returns class ids as int32 `(batch,)`, or None when `y_true` is None."""
    if y_true is None:
        return None
    try:
        y_true = tf.convert_to_tensor(y_true)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{loss_name}: `y_true` must be None or integer class ids of shape "
            f"(batch,), got {y_true!r}."
        ) from error
    dtype = y_true.dtype
    if not (dtype.is_integer or dtype.is_floating or dtype.is_bool) or dtype.is_complex:
        raise TypeError(
            f"{loss_name}: `y_true` must be None or integer class ids of shape "
            f"(batch,), got a tensor of dtype {dtype.name}."
        )
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


def prepare_embeddings(y_pred, normalize, loss_name, dtype=tf.float32):
    """Casts to `dtype` (float32: softmax precision under mixed policies),
    checks for non-finite values, and L2-normalises the last axis if asked."""
    z = tf.cast(tf.convert_to_tensor(y_pred), dtype)
    z = tf.debugging.assert_all_finite(
        z, f"{loss_name}: `y_pred` contains NaN or Inf embeddings."
    )
    if normalize:
        squared_norm = tf.reduce_sum(tf.square(z), axis=-1, keepdims=True)
        z = z * tf.math.rsqrt(tf.maximum(squared_norm, tf.constant(1e-12, dtype)))
    return z


def positive_tensor(value, name, loss_name, dtype=tf.float32):
    """A hyperparameter (`temperature`, `sigma`) as a scalar tensor of
    `dtype`, checked statically by `check_positive` and, when its value is
    only known at run time, by an assert (which XLA drops)."""
    check_positive(name, value)
    static = _is_number(value) or (
        not isinstance(value, (tf.Variable, keras.Variable))
        and tf.get_static_value(value) is not None
    )
    # A Python float goes straight to `dtype` (tf.cast would round it to
    # float32 first).
    value = tf.constant(value, dtype) if _is_number(value) else tf.cast(value, dtype)
    if static:
        return value
    check = tf.debugging.Assert(
        tf.logical_and(value > 0, tf.math.is_finite(value)),
        [f"{loss_name}: `{name}` must be finite and > 0, got", value],
    )
    with tf.control_dependencies([check]):
        return tf.identity(value)


def temperature_tensor(temperature, loss_name, dtype=tf.float32):
    """Temperature as a scalar tensor of `dtype` (see `positive_tensor`)."""
    return positive_tensor(temperature, "temperature", loss_name, dtype)


class GlobalBatch:
    """The global (gathered) view of this replica's local embeddings.

    Attributes:
        local: list of `(b, dim)` float tensors (the loss's compute dtype),
            one per view, this replica.
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
        self._candidates = None
        if labels is not None:
            self.labels = distribute.all_gather(labels) if gather else labels
        # Asserts are stateful ops: tf.function runs them without explicit
        # control dependencies. Under XLA, which drops it, a global batch of
        # one sample gives the losses' documented no-negatives value.
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

    def candidates(self):
        """Every view's global rows stacked, `(V * N, dim)`, built once.

        One concat shared by all anchor views keeps each gathered view's
        gradient a sum of at most two terms. With a concat per anchor view
        it gets three or more, and TensorFlow's CPU `AddN` with 3+ inputs
        sums them in thread-timing order, so two identical multi-replica
        runs would differ in the last bit.
        """
        if self._candidates is None:
            self._candidates = tf.concat(self.views, axis=0)
        return self._candidates


def masked_contrast(
    anchors,
    candidates,
    temperature,
    positive_mask,
    self_mask=None,
    drop_positives_from_denominator=False,
    has_negatives=None,
):
    """Per-anchor contrastive loss with class-id positives (masks).

    For anchor a with logits s_ak = <a, c_k>/τ and positives P(a):

        L_a = -mean_{p ∈ P(a)} s_ap + log Σ_{k ∈ D(a)} exp(s_ak)

    with D(a) = all candidates but a itself (SupCon L_out), or without the
    positives as well (DCL). Masked logits are -inf in a stable log-sum-exp.

    Args:
        anchors: `(b, dim)` float.
        candidates: `(M, dim)`, same dtype.
        temperature: scalar tensor, same dtype.
        positive_mask: bool `(b, M)`.
        self_mask: bool `(b, M)` or None, the anchor's own column.
        drop_positives_from_denominator: bool, DCL.
        has_negatives: None or a bool scalar tensor; when False, the
            positives stay in the denominator so that it is not empty (the
            caller replaces the result: its gradient stays finite).

    Returns:
        `(b,)` per-anchor losses.
    """
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    excluded = tf.zeros_like(positive_mask)
    if self_mask is not None:
        excluded = tf.logical_or(excluded, self_mask)
    if drop_positives_from_denominator:
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
        anchors: `(b, dim)` float.
        positives: `(b, dim)`, each anchor's positive.
        candidates: `(M, dim)`, the columns scored.
        temperature: scalar tensor, same dtype.
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
        `(b,)`, -inf (DCL) or 0 (InfoNCE) for an anchor without negatives.
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
        candidates = batch.candidates()
        candidate_labels = tf.concat([batch.labels, batch.labels], axis=0)
        self_columns = batch.rows() + anchor_view * batch.size
    log_denominator = tiled_logsumexp(
        anchors, candidates, temperature, [] if self_columns is None else [self_columns],
        tile_size, anchor_labels=batch.local_labels if decoupled else None,
        candidate_labels=candidate_labels)
    positive_logit = class_positive_logit(anchors, candidates, temperature, batch.local_labels,
                                          candidate_labels, self_columns)
    return log_denominator - positive_logit


def check_sample_weight(sample_weight, values, loss_name):
    """`sample_weight` as a tensor of `values`' dtype: a scalar, or one
    weight per sample (`(batch,)` or `(batch, 1)`). A length that differs
    from the batch is a ValueError when both are static, a run-time assert
    (dropped by XLA) otherwise."""
    try:
        weight = tf.convert_to_tensor(sample_weight)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{loss_name}: `sample_weight` must be None, a number or a float tensor of "
            f"shape (batch,), got {sample_weight!r}."
        ) from error
    dtype = weight.dtype
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool) or dtype.is_complex:
        raise TypeError(
            f"{loss_name}: `sample_weight` must be None, a number or a float tensor of "
            f"shape (batch,), got a tensor of dtype {dtype.name}."
        )
    if weight.shape.rank == 2 and weight.shape[1] == 1:
        weight = tf.squeeze(weight, axis=1)
    if weight.shape.rank is not None and weight.shape.rank > 1:
        raise ValueError(
            f"{loss_name}: `sample_weight` must be a scalar or hold one weight per "
            f"sample, shape (batch,), got shape {tuple(weight.shape)}."
        )
    weight = tf.cast(weight, values.dtype)
    if weight.shape.rank == 0:
        return tf.broadcast_to(weight, tf.shape(values))
    batch, length = values.shape[0], weight.shape[0]
    if batch is not None and length is not None:
        if batch != length:
            raise ValueError(
                f"{loss_name}: `sample_weight` holds {length} weights but the batch "
                f"holds {batch} samples."
            )
        return weight
    check = tf.debugging.assert_equal(
        tf.shape(weight)[0], tf.shape(values)[0],
        message=f"{loss_name}: `sample_weight` must hold one weight per sample.",
    )
    with tf.control_dependencies([check]):
        return tf.identity(weight)


def reduce_contrastive(values, sample_weight, reduction, loss_name="loss"):
    """Reduces per-sample losses so that the strategy's sum is exact.

    Keras divides each replica's mean by the number of replicas R and sums
    the replicas' gradients; that equals the global mean only when every
    replica holds the same number of samples. Dividing this replica's sum
    by the *global* sample count (or weight) instead is exact for any
    split, including the uneven last batch of an epoch.
    """
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, values, loss_name)
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

    Argument checks: Python numbers and static shapes are checked when the
    loss is built or traced (a TypeError or ValueError naming the
    argument): `temperature` and `sigma` (numbers > 0, not booleans or
    strings), the flags (True or False), `y_pred` (float, rank 3, the
    views, a dimension > 0, at least 2 samples outside a strategy),
    `y_true` (numeric class ids, one per sample), `sample_weight` (a scalar
    or one weight per sample). What stays a run-time `tf.debugging` assert,
    which XLA drops:
        - a `temperature` or `sigma` tensor whose value is unknown when
          tracing (a variable, a learnable temperature) must be finite
          and > 0;
        - the global batch must hold at least 2 samples when its size is
          dynamic or gathered across replicas (without the assert, DCL and
          DCLW give 0, the others their finite value);
        - the embeddings must be finite;
        - a `sample_weight` of dynamic length must match the batch.

    Args:
        fn: the per-sample loss function.
        temperature: float > 0.
        gather: bool. Gather embeddings across replicas (with gradients).
        normalize: bool. L2-normalise the embeddings first.
        reduction: a Keras reduction. The mean reductions divide by the
            global number of samples, so they stay exact when replicas
            hold different numbers of samples.
        name: str.
        dtype: dtype of the returned loss. The loss is computed in float32
            (float16 and bfloat16 embeddings are cast up), or in float64
            for float64 embeddings or under `keras.config.floatx() ==
            "float64"`.
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
        # A configured temperature is a number (it is saved in the config);
        # a tensor temperature is passed at call time.
        check_positive("temperature", temperature, allow_tensor=False)
        check_tile_size(fn_kwargs.get("tile_size"))
        self.fn = fn
        self.temperature = temperature if isinstance(temperature, (int, float)) else float(
            temperature)
        self.gather = check_bool("gather", gather)
        self.normalize = check_bool("normalize", normalize)
        self._fn_kwargs = fn_kwargs
        for key, value in fn_kwargs.items():
            setattr(self, key, value)

    def __call__(self, y_true, y_pred, sample_weight=None, temperature=None):
        """Computes the reduced loss.

        Unlike `keras.losses.Loss.__call__`, accepts `y_true=None` (what
        `model.fit(x)` without labels passes) and an optional `temperature`
        tensor that overrides the configured one (a learnable temperature
        fed by a model's `compute_loss`); `temperature=None` uses the
        configured one.
        """
        with tf.name_scope(self.name):
            if temperature is None:
                temperature = self.temperature
            values = self.contrast(y_true, y_pred, temperature)
            values = reduce_contrastive(values, sample_weight, self.reduction,
                                        type(self).__name__)
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

    No negatives: DCL's denominator holds only negatives, so it is empty
    when the global batch holds one class (class ids in `y_true`) or one
    sample (a dynamic batch; the static case is rejected). Then every
    anchor's loss is 0, with a zero gradient. (It is all or nothing: with
    two classes in the global batch, every anchor has a negative.) InfoNCE
    keeps the positives in its denominator and stays defined.

    Returns:
        `(batch,)` float32 (float64, see `compute_dtype`).
    """
    check_positive("temperature", temperature)
    check_negatives(negatives)
    check_tile_size(tile_size)
    check_bool("gather", gather)
    check_bool("normalize", normalize)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 2, loss_name, gather)
    labels = check_labels(y_true, y_pred, loss_name) if use_labels else None
    dtype = compute_dtype(y_pred)
    z = prepare_embeddings(y_pred, normalize, loss_name, dtype)
    tau = temperature_tensor(temperature, loss_name, dtype)
    batch = GlobalBatch(z, labels, gather, loss_name)
    has_negatives = None
    if decoupled:
        if labels is not None:
            # Every anchor has a negative iff the global batch holds 2 classes.
            has_negatives = tf.reduce_min(batch.labels) < tf.reduce_max(batch.labels)
        else:
            has_negatives = batch.size >= 2
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
                    has_negatives=has_negatives,
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
    values = (anchor_losses[0] + anchor_losses[1]) / 2.0
    if has_negatives is not None:
        # -inf (an empty log-sum-exp) becomes 0; the tiled and masked paths
        # give that branch a zero, finite gradient.
        values = tf.where(has_negatives, values, tf.zeros_like(values))
    return values
