"""The global batch a loss scores against, and the reductions that keep a
loss exact under a `tf.distribute` strategy (docs/design.md §3).

`prepare_embeddings` casts and L2-normalises `y_pred`, `GlobalBatch`
gathers the views across replicas, `reduce_contrastive` reduces the
per-sample losses over the global batch.
"""

import keras
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_sample_weight


def compute_dtype(y_pred):
    """float64 for float64 embeddings or under `floatx() == "float64"`, else
    float32 (the softmax precision under mixed-precision policies)."""
    if y_pred.dtype == tf.float64 or keras.config.floatx() == "float64":
        return tf.float64
    return tf.float32


@keras_contrast_export("keras_contrast.losses.l2_normalize")
def l2_normalize(z):
    """`z / max(‖z‖, 1e-6)` along the last axis (the same ops as
    `tf.math.l2_normalize`), in `z`'s dtype."""
    squared_norm = tf.reduce_sum(tf.square(z), axis=-1, keepdims=True)
    return z * tf.math.rsqrt(tf.maximum(squared_norm, tf.constant(1e-12, z.dtype)))


def prepare_embeddings(y_pred, normalize, loss_name, dtype=tf.float32):
    """Casts to `dtype` (float32: softmax precision under mixed policies),
    checks for non-finite values, and L2-normalises the last axis if asked."""
    z = tf.cast(tf.convert_to_tensor(y_pred), dtype)
    z = tf.debugging.assert_all_finite(
        z, f"{loss_name}: `y_pred` contains NaN or Inf embeddings."
    )
    return l2_normalize(z) if normalize else z


@keras_contrast_export("keras_contrast.losses.GlobalBatch")
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

    def gathered(self):
        """True when some view's rows come from every replica."""
        return any(g is not l for g, l in zip(self.views, self.local))

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

    def candidate_labels(self):
        """The class ids of `candidates()`' rows, int32 `(V * N,)`."""
        return tf.concat([self.labels] * len(self.views), axis=0)


@keras_contrast_export("keras_contrast.losses.reduce_contrastive")
def reduce_contrastive(values, sample_weight, reduction, loss_name="loss"):
    """Reduces per-sample losses so that the strategy's sum is exact.

    Keras divides each replica's mean by the number of replicas R and sums
    the replicas' gradients; that equals the global mean only when every
    replica holds the same number of samples. Dividing this replica's sum
    by the *global* sample count (or weight) instead is exact for any
    split, including the uneven last batch of an epoch (docs/design.md §3).
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
