"""Ghost Batch Normalization: batch statistics over small virtual batches."""

import numbers

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_unit_interval
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics
from keras_contrast.layers.statistics import create_switch
from keras_contrast.layers.statistics import effective_momentum


def check_axis_in_range(axis, input_shape, argument="axis"):
    """`axis` as a non-negative index into `input_shape`, whose dimension
    must be known (the number of channels).

    Raises:
        ValueError: naming `argument`, if `axis` is out of range or its
            dimension is unknown.
    """
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    if not -rank <= axis < rank:
        raise ValueError(
            f"`{argument}` = {axis} is out of range for inputs of rank {rank} "
            f"(shape {input_shape}): it must lie in [{-rank}, {rank})."
        )
    axis %= rank
    if input_shape[axis] is None:
        raise ValueError(
            f"The dimension of `{argument}` = {axis} (the channels) must be known, "
            f"got input shape {input_shape}."
        )
    return axis


def resolve_axis(axis, input_shape, argument="axis"):
    """`axis` as a non-negative index into `input_shape`, never the batch axis.

    Raises:
        ValueError: naming `argument`, if `axis` is out of range, is the
            batch axis, or its dimension is unknown.
    """
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    if rank < 2:
        raise ValueError(
            f"Inputs must have rank >= 2 (batch, ..., channels), got shape {input_shape}."
        )
    if -rank <= axis < rank and axis % rank == 0:
        raise ValueError(
            f"`{argument}` must not be the batch axis 0 (got {argument}={axis} for "
            f"input shape {input_shape})."
        )
    return check_axis_in_range(axis, input_shape, argument)


def check_int(name, value, minimum):
    """Returns `value` as an int, or raises a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_axis_type(axis):
    if not is_int(axis):
        raise ValueError(f"`axis` must be an int (the channel axis), got {axis!r}.")


def check_momentum(momentum, name="momentum"):
    """Raises a ValueError naming `name` unless `momentum` is a number in
    [0, 1] (not a bool or a string)."""
    check_unit_interval(momentum, name, number=True)


def check_epsilon(epsilon):
    """Raises a ValueError unless `epsilon` is a finite number > 0."""
    if not is_number(epsilon) or not 0.0 < epsilon < float("inf"):
        raise ValueError(f"`epsilon` must be a finite number > 0, got {epsilon!r}.")


def check_momentum_and_epsilon(momentum, epsilon):
    check_momentum(momentum)
    check_epsilon(epsilon)


def broadcast_statistic(statistic, rank, axis):
    """Reshapes a `(channels,)` or per-sample `(batch, channels)` statistic so
    that it broadcasts against inputs of `rank` whose channels are on `axis`."""
    shape = [1] * rank
    shape[axis] = -1
    if statistic.shape.rank == 2:
        shape[0] = tf.shape(statistic)[0]
        shape[axis] = statistic.shape[1]
    return tf.reshape(statistic, shape)


def normalize(inputs, mean, variance, gamma, beta, epsilon, axis):
    """`gamma · (x - mean) / sqrt(variance + epsilon) + beta`; each statistic
    is `(channels,)` or per sample `(batch, channels)`, gamma/beta may be None."""
    rank = inputs.shape.rank
    dtype = inputs.dtype
    inverse = tf.math.rsqrt(broadcast_statistic(variance, rank, axis) + epsilon)
    if gamma is not None:
        inverse *= broadcast_statistic(tf.cast(gamma, dtype), rank, axis)
    outputs = (inputs - broadcast_statistic(mean, rank, axis)) * inverse
    if beta is not None:
        outputs += broadcast_statistic(tf.cast(beta, dtype), rank, axis)
    return outputs


def mask_for(inputs, mask):
    """The boolean mask of every element of `inputs`, Keras' convention.

    As `keras.layers.BatchNormalization` (and the masks that `Masking` or
    `Embedding(mask_zero=True)` produce), `mask` is shaped like `inputs`
    without its LAST axis, whatever the channel axis is: it is expanded on
    the last axis and broadcast to `inputs`. Any non-zero value counts
    (Keras casts the mask to bool).
    """
    mask = tf.cast(mask, tf.bool)
    return tf.broadcast_to(tf.expand_dims(mask, -1), tf.shape(inputs))


def group_moments(inputs, group_ids, num_groups, axis, mask=None):
    """Mean and biased variance of each group of samples.

    The statistics of group g are taken over its samples (`group_ids == g`)
    and every axis except the batch axis and `axis`, two-pass (mean first,
    then the mean squared deviation from it) as `tf.nn.moments`. Groups
    of any sizes, empty ones included, with a dynamic batch size.

    Args:
        inputs: float tensor `(batch, ...)`.
        group_ids: int32 `(batch,)`, values in `[0, num_groups)`.
        num_groups: int or scalar int32 tensor.
        axis: non-negative int, the channel axis.
        mask: optional bool/0-1 tensor shaped like `inputs` without the
            last axis (Keras' convention, see `mask_for`); masked-out
            elements do not count.

    Returns:
        `(mean, variance, count)`: mean and variance `(num_groups, channels)`,
        0 for an empty group; count, the number of elements behind each
        statistic, `(num_groups, channels)` with a mask, else
        `(num_groups, 1)`.
    """
    rank = inputs.shape.rank
    reduce_axes = [a for a in range(1, rank) if a != axis]
    dtype = inputs.dtype
    if mask is None:
        kept = None
        spatial_shape = tf.gather(tf.shape(inputs), tf.constant(reduce_axes, tf.int32))
        per_sample = tf.reduce_prod(spatial_shape)
        sample_counts = tf.fill([tf.shape(inputs)[0], 1], tf.cast(per_sample, dtype))
    else:
        kept = mask_for(inputs, mask)
        sample_counts = tf.reduce_sum(tf.cast(kept, dtype), reduce_axes)
    counts = tf.math.unsorted_segment_sum(sample_counts, group_ids, num_groups)

    def group_mean(values):
        if kept is not None:
            # `where`, not a product: masked-out inf/NaN values stay out.
            values = tf.where(kept, values, tf.zeros_like(values))
        sums = tf.reduce_sum(values, reduce_axes)
        return tf.math.divide_no_nan(
            tf.math.unsorted_segment_sum(sums, group_ids, num_groups), counts
        )

    mean = group_mean(inputs)
    deviations = inputs - broadcast_statistic(tf.gather(mean, group_ids), rank, axis)
    variance = group_mean(tf.square(deviations))
    return mean, variance, counts


def update_moving_statistics(layer, mean, variance, count, dtype):
    """One EMA step of `layer.moving_mean` / `moving_variance` towards the
    count-weighted average of the groups' means and variances; a call that
    saw no element leaves them unchanged. Momentum 1 (no update) inside
    `frozen_statistics()`."""
    total = tf.reduce_sum(count, axis=0)
    batch_mean = tf.math.divide_no_nan(tf.reduce_sum(count * mean, axis=0), total)
    batch_variance = tf.math.divide_no_nan(tf.reduce_sum(count * variance, axis=0), total)
    momentum = effective_momentum(layer.momentum, dtype)
    for variable, value in (
        (layer.moving_mean, batch_mean),
        (layer.moving_variance, batch_variance),
    ):
        old = tf.cast(variable, dtype)
        new = tf.where(total > 0, old * momentum + value * (1.0 - momentum), old)
        variable.assign(tf.cast(new, variable.dtype))


def float_compute_dtype(inputs):
    # BN overflows easily in float16/bfloat16: statistics in float32 (as Keras).
    return tf.float64 if inputs.dtype == tf.float64 else tf.float32


def check_mask(inputs, mask):
    """Raises a ValueError unless `mask` is None or has the static shape of
    `inputs` without its last axis (dimensions of 1 broadcast), as Keras'
    BatchNormalization takes it. Returns the mask as a tensor."""
    if mask is None:
        return None
    mask = tf.convert_to_tensor(mask)
    expected = inputs.shape[:-1]
    if mask.shape.rank is not None and mask.shape.rank != inputs.shape.rank - 1:
        raise ValueError(
            "The mask must have one dimension less than the inputs: it is "
            "shaped like the inputs without their last axis (Keras' convention, "
            f"whatever `axis` is), got mask.shape={mask.shape}, "
            f"inputs.shape={inputs.shape}."
        )
    if mask.shape.rank is not None and not all(
        m is None or e is None or m in (1, e) for m, e in zip(mask.shape, expected)
    ):
        raise ValueError(
            f"The mask must be shaped like the inputs without their last axis, "
            f"{expected}, got mask.shape={mask.shape} for inputs.shape={inputs.shape}."
        )
    return mask


@keras_contrast_export("keras_contrast.layers.GhostBatchNormalization")
class GhostBatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    """Batch normalization over small "ghost" (virtual) batches.

    In training, the batch is cut into consecutive groups of
    `virtual_batch_size` samples and each group is normalised with its own
    mean and biased variance (over the group's samples and every axis but
    `axis`). This sets the normalization batch size independently of the
    SGD batch size (docs/design.md §4): a smaller normalization batch adds
    regularising noise, and a big batch on few devices normalises like the
    same batch spread over many. Inference uses the moving statistics and
    accepts any batch size, exactly as `keras.layers.BatchNormalization`.

    A training batch that is not a multiple of `virtual_batch_size` ends
    with one smaller group (e.g. 10 samples, `virtual_batch_size=4`: groups
    of 4, 4, 2); a group of one sample has variance 0 and outputs `beta`,
    as a BN batch of one does. This works with a dynamic batch dimension
    (for instance the last, smaller batch of an epoch in `fit`).

    Moving statistics take ONE exponential-moving-average step per training
    call, towards the average over the ghost batches of their means and of
    their biased variances (weighted by group size, which only matters for
    a smaller last group):

        moving_mean ← momentum · moving_mean + (1 - momentum) · mean_g(μ_g)
        moving_var  ← momentum · moving_var  + (1 - momentum) · mean_g(σ²_g)

    This is the rule of TF1/Keras 2's `virtual_batch_size`. One step per
    call keeps `momentum` meaning "per training step" whatever the number
    of groups, and the average ghost variance is the scale the following
    layers saw during training (it is (v-1)/v of the whole-batch variance
    for i.i.d. groups of size v; use Precise BN for the population
    variance). Inside `keras_contrast.layers.frozen_statistics()` the
    groups are still normalised but the moving statistics are not updated.

    Under a distribution strategy each replica cuts ITS OWN local batch
    into groups; there is no cross-replica communication. Under
    `MirroredStrategy` each replica's copy of the moving statistics moves
    towards its own local ghost statistics, and reading or saving the
    variable returns the mean of the copies, as for
    `keras_contrast.layers.BatchNormalization` (see
    `keras_contrast.layers.replica_statistics`).

    Args:
        virtual_batch_size: int >= 1, samples per ghost batch.
        axis: int, the channel axis (-1 for NHWC / `(batch, features)`,
            1 for NCHW). Not the batch axis 0.
        momentum: float in [0, 1], momentum of the moving statistics.
        epsilon: float > 0, added to the variance.
        center: bool, add the learned offset `beta`.
        scale: bool, multiply by the learned scale `gamma`.
        **kwargs: the other arguments of `keras.layers.BatchNormalization`
            (initializers, regularizers, constraints, `name`, `dtype`);
            `synchronized` and `renorm` must stay False (ghost batches are
            local by definition).

    Call arguments:
        inputs: float tensor of rank >= 2.
        training: bool. True: ghost-batch statistics and one moving-average
            update; False (default): moving statistics.
        mask: optional tensor shaped like `inputs` without their last
            axis, whatever `axis` is (Keras' BatchNormalization convention);
            masked elements do not count in the ghost statistics.

    Example:
    >>> x = keras.Input((32, 32, 64))
    >>> y = keras_contrast.layers.GhostBatchNormalization(virtual_batch_size=32)(x)

    Reference:
        - [Hoffer et al., 2017, "Train longer, generalize better"](
          https://arxiv.org/abs/1705.08741)
        - [Wu and Johnson, 2021, "Rethinking 'Batch' in BatchNorm"](
          https://arxiv.org/abs/2105.07576)
    """

    def __init__(
        self,
        virtual_batch_size,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        **kwargs,
    ):
        self.virtual_batch_size = check_int("virtual_batch_size", virtual_batch_size, 1)
        check_axis_type(axis)
        check_momentum_and_epsilon(momentum, epsilon)
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale, **kwargs
        )
        if self.synchronized or self.renorm:
            raise ValueError(
                "GhostBatchNormalization normalises local ghost batches: "
                "`synchronized` and `renorm` must be False."
            )

    def build(self, input_shape):
        resolve_axis(self.axis, input_shape)
        create_switch()
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=False, mask=mask)
        mask = check_mask(inputs, mask)
        dtype = float_compute_dtype(inputs)
        inputs = tf.cast(inputs, dtype)
        axis = self.axis % inputs.shape.rank
        batch_size = tf.shape(inputs)[0]
        group_ids = tf.range(batch_size) // self.virtual_batch_size
        num_groups = (batch_size + self.virtual_batch_size - 1) // self.virtual_batch_size
        mean, variance, count = group_moments(inputs, group_ids, num_groups, axis, mask)
        update_moving_statistics(self, mean, variance, count, dtype)
        outputs = normalize(
            inputs,
            tf.gather(mean, group_ids),
            tf.gather(variance, group_ids),
            self.gamma if self.scale else None,
            self.beta if self.center else None,
            self.epsilon,
            axis,
        )
        return tf.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["virtual_batch_size"] = self.virtual_batch_size
        return config
