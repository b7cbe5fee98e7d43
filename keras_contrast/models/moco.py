"""MoCo (v2-style): momentum key encoder and a queue of negatives."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_positive_int
from keras_contrast.distribute.replica import all_gather
from keras_contrast.layers.projection_head import ProjectionHead
from keras_contrast.losses.dcl import DCL
from keras_contrast.losses.info_nce import InfoNCE
from keras_contrast.losses.queue import queue_contrastive_loss
from keras_contrast.models.simclr import check_views
from keras_contrast.normalization.factory import serialize_norm
from keras_contrast.training.momentum import MomentumEncoderModel
from keras_contrast.training.momentum import momentum_copy


@keras_contrast_export("keras_contrast.models.MoCo")
class MoCo(MomentumEncoderModel):
    """MoCo v2: contrast queries with momentum keys and a queue of negatives.

    Query encoder = backbone + projection MLP; key encoder = its momentum
    copy (EMA after every optimizer step, `after_optimizer_step`). The
    negatives are the `queue_size` most recent keys, so their number is
    independent of the batch (MoCo v1's point). Input: two views `(batch, 2,
    H, W, C)`; output `(batch, 2, dim)` = `[query of view 1, key of view 2]`.

    The loss: compile with `keras_contrast.losses.InfoNCE(τ)` or `DCL(τ)`;
    `compute_loss` uses its temperature with `queue_contrastive_loss` (DCL
    removes the positive from the denominator), and, when training, enqueues
    this step's keys after computing the loss: keys of all replicas,
    gathered in global order, so every replica holds the same queue. The
    queue is a ring buffer: a step writes its `B` keys at the pointer (mod
    `queue_size`), oldest first, so `queue_size` need not be a multiple of
    the global batch (it must be >= it). The loss is the mean over each
    replica's samples (Keras then averages replicas): exact for equal
    per-replica batches.

    Args:
        backbone: Keras model mapping images to features `(batch, d)`.
        projection_dims: projection MLP widths (MoCo v2: `(2048, 128)`).
        queue_size: int > 0, the number of negatives K (MoCo: 65536).
        momentum: float in [0, 1], the EMA momentum m (MoCo: 0.999).
        projection_norm: norm of the head (MoCo v2: None).
        **kwargs: `keras.Model` arguments.

    Example:
    >>> model = keras_contrast.models.MoCo(backbone, queue_size=16384)
    >>> model.compile(optimizer="sgd", loss=keras_contrast.losses.InfoNCE(0.2))

    Reference:
        He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised
        Visual Representation Learning. CVPR 2020; Chen, Fan, Girshick, He.
        Improved Baselines with Momentum Contrastive Learning, 2020.
    """

    def __init__(self, backbone, projection_dims=(2048, 128), queue_size=65536,
                 momentum=0.999, projection_norm=None, **kwargs):
        super().__init__(**kwargs)
        if not is_positive_int(queue_size):
            raise ValueError(f"`queue_size` must be an int > 0, got {queue_size!r}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1], got {momentum!r}.")
        self.projection_dims = tuple(projection_dims)
        self.queue_size = queue_size
        self.momentum = float(momentum)
        self.projection_norm = projection_norm
        self.backbone = backbone
        self.projector = ProjectionHead(self.projection_dims, norm=projection_norm,
                                        name="projector")
        self.key_backbone = momentum_copy(backbone, "key_backbone")
        self.key_projector = ProjectionHead(self.projection_dims, norm=projection_norm,
                                            name="key_projector")

    @property
    def encoder(self):
        return self.backbone

    def build(self, input_shape):
        self.build_momentum_encoders(input_shape)
        dim = self.projection_dims[-1]
        # Every replica writes the same gathered keys: keep the first's.
        self.queue = self.add_weight(
            shape=(self.queue_size, dim),
            initializer=keras.initializers.RandomNormal(seed=0),
            trainable=False, name="queue", aggregation="only_first_replica",
        )
        self.queue.assign(tf.math.l2_normalize(self.queue, axis=1))
        self.queue_pointer = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False,
            name="queue_pointer", aggregation="only_first_replica",
        )
        self.built = True

    def call(self, views, training=None):
        check_views(views)
        query = self.projector(self.backbone(views[:, 0], training=training), training=training)
        key = self.key_projector(self.key_backbone(views[:, 1], training=training),
                                 training=training)
        return tf.stack([query, tf.stop_gradient(key)], axis=1)

    def _loss_settings(self):
        loss = self.loss
        if type(loss) not in (InfoNCE, DCL):
            raise ValueError(
                "MoCo computes its loss against the queue and takes its temperature "
                "from a compiled keras_contrast.losses.InfoNCE or DCL, got "
                f"{type(loss).__name__}."
            )
        return loss.temperature, isinstance(loss, DCL)

    def enqueue(self, keys):
        """Writes `keys` (this replica's; all replicas' are gathered) into
        the ring buffer at the pointer."""
        keys = tf.math.l2_normalize(tf.cast(all_gather(keys), self.queue.dtype), axis=1)
        count = tf.shape(keys)[0]
        check = tf.debugging.assert_less_equal(
            count, self.queue_size,
            message=f"MoCo: the global batch exceeds `queue_size`={self.queue_size}.",
        )
        with tf.control_dependencies([check]):
            rows = (self.queue_pointer + tf.range(count)) % self.queue_size
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, rows[:, None], keys))
        self.queue_pointer.assign((self.queue_pointer + count) % self.queue_size)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        temperature, decoupled = self._loss_settings()
        per_sample = queue_contrastive_loss(
            y_pred[:, 0], y_pred[:, 1], tf.stop_gradient(self.queue.value), temperature,
            decoupled,
        )
        if sample_weight is not None:
            weight = tf.cast(tf.reshape(sample_weight, (-1,)), per_sample.dtype)
            loss = tf.reduce_sum(per_sample * weight) / tf.maximum(tf.reduce_sum(weight), 1e-12)
        else:
            loss = tf.reduce_mean(per_sample)
        if self.losses:  # weight regularizers
            loss = loss + tf.add_n([tf.cast(r, loss.dtype) for r in self.losses])
        if training:
            with tf.control_dependencies([loss]):
                self.enqueue(tf.stop_gradient(y_pred[:, 1]))
        # Keras sums replica gradients; each replica's mean counts 1/R.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def after_optimizer_step(self):
        self.momentum_update(self.momentum)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2, self.projection_dims[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "projection_dims": list(self.projection_dims),
            "queue_size": self.queue_size,
            "momentum": self.momentum,
            "projection_norm": serialize_norm(self.projection_norm),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**cls.deserialize_arguments(config, custom_objects))
