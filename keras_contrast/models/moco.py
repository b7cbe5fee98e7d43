"""MoCo (v1/v2): momentum key encoder, a queue of negatives, Shuffle BN."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import check_unit_interval
from keras_contrast.distribute.replica import all_gather
from keras_contrast.distribute.shuffle import shuffle_across_replicas
from keras_contrast.layers.projection_head import ProjectionHead
from keras_contrast.losses.dcl import DCL
from keras_contrast.losses.info_nce import InfoNCE
from keras_contrast.losses.queue import queue_loss_with_hits
from keras_contrast.models.simclr import check_views
from keras_contrast.models.simclr import step_seed
from keras_contrast.normalization.factory import serialize_norm
from keras_contrast.training.contrastive_model import assemble_loss
from keras_contrast.training.contrastive_model import check_training_reduction
from keras_contrast.training.momentum import MomentumEncoderModel
from keras_contrast.training.momentum import momentum_copy


@keras_contrast_export("keras_contrast.models.MoCo")
class MoCo(MomentumEncoderModel):
    """MoCo v1/v2: contrast queries with momentum keys and a queue of negatives.

    Query encoder = backbone + projection MLP; key encoder = its momentum
    copy (EMA after every optimizer step, `after_optimizer_step`). The
    negatives are the `queue_size` most recent keys, so their number is
    independent of the batch (MoCo v1's point). Input: two views `(batch, 2,
    H, W, C)`; output `(batch, 2, dim)` = `[query of view 1, key of view 2]`.

    The loss: compile with `keras_contrast.losses.InfoNCE(τ)` (or its alias
    `NTXent`) or `DCL(τ)`, or a subclass of either; `compute_loss` computes
    `queue_contrastive_loss` with that loss's temperature (DCL removes the
    positive from the denominator), and, when training, enqueues this
    step's keys after computing the loss: keys of all replicas, gathered in
    global order, so every replica holds the same queue. The queue is a
    ring buffer: a step writes its `B` keys at the pointer (mod
    `queue_size`), oldest first, so `queue_size` need not be a multiple of
    the global batch (it must be >= it). The loss is assembled by
    `keras_contrast.training.assemble_loss`: reduced over the global batch
    (exact for uneven per-replica batches), weight regularizers added once.

    The compiled loss's settings:
    - `temperature`, `reduction` (`"sum_over_batch_size"`, `"mean"`,
      `"mean_with_sample_weight"`, `"sum"`; `"none"` is a ValueError) and
      `normalize` are honoured (`normalize=False` scores raw dot products
      and enqueues the keys as they are);
    - `negatives`: MoCo's negatives are the queue, whichever value
      (`"all"`, the InfoNCE/NTXent default, or `"cross"`); a queue of keys
      holds no same-view embeddings for the two to differ on;
    - `gather=False` is a ValueError: the queue is shared by all replicas,
      which enqueue every replica's keys;
    - `tile_size` other than None is a ValueError (the queue loss is dense);
    - `DCLW`, `CLIPLoss`, `MoCoV3Loss` and other losses are a ValueError
      (the queue loss computes InfoNCE and DCL only).

    Logged metric: `pretext_accuracy`, the fraction of queries whose
    positive key has the highest logit among the positive and the queue
    (ties count for the positive), over the global batch; the epoch value
    is the mean over every sample of the epoch.

    `shuffle_bn=True` applies MoCo v1's Shuffle BN: in
    training, the key encoder runs on the second view shuffled across
    replicas (`keras_contrast.distribute.shuffle_across_replicas`, a new
    permutation at every optimizer step, from `shuffle_seed` and the
    training optimizer's `iterations`) and its keys are unshuffled, so a
    query and its key are never normalised with batch statistics of the
    same samples. It needs equal per-replica batches (batch the dataset
    with `drop_remainder=True`); with one replica it changes nothing.
    Inference does not shuffle (BN then uses its moving statistics).

    Args:
        backbone: Keras model mapping images to features `(batch, d)`.
        projection_dims: projection MLP widths (MoCo v2: `(2048, 128)`).
        queue_size: int > 0, the number of negatives K (MoCo: 65536).
        momentum: float in [0, 1], the EMA momentum m (MoCo: 0.999).
        projection_norm: norm of the head (MoCo v2: None).
        shuffle_bn: bool. Shuffle BN for the key encoder.
        shuffle_seed: int. Base seed of the per-step shuffle.
        **kwargs: `keras.Model` arguments.

    Example:
    >>> model = keras_contrast.models.MoCo(backbone, queue_size=16384, shuffle_bn=True)
    >>> model.compile(optimizer="sgd", loss=keras_contrast.losses.InfoNCE(0.2))
    >>> model.fit(two_view_dataset, epochs=200)  # logs loss, pretext_accuracy

    Reference:
        He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised
        Visual Representation Learning. CVPR 2020; Chen, Fan, Girshick, He.
        Improved Baselines with Momentum Contrastive Learning, 2020.
    """

    def __init__(self, backbone, projection_dims=(2048, 128), queue_size=65536,
                 momentum=0.999, projection_norm=None, shuffle_bn=False, shuffle_seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int(queue_size, "queue_size")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
            raise TypeError(f"`momentum` must be a number in [0, 1], got {momentum!r}.")
        check_unit_interval(momentum, "momentum")
        if not isinstance(shuffle_bn, bool):
            raise TypeError(f"`shuffle_bn` must be True or False, got {shuffle_bn!r}.")
        if isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int):
            raise TypeError(f"`shuffle_seed` must be an int, got {shuffle_seed!r}.")
        self.projection_dims = tuple(projection_dims)
        self.queue_size = queue_size
        self.momentum = float(momentum)
        self.projection_norm = projection_norm
        self.shuffle_bn = shuffle_bn
        self.shuffle_seed = shuffle_seed
        self.backbone = backbone
        self.projector = ProjectionHead(self.projection_dims, norm=projection_norm,
                                        name="projector")
        self.key_backbone = momentum_copy(backbone, "key_backbone")
        self.key_projector = ProjectionHead(self.projection_dims, norm=projection_norm,
                                            name="key_projector")
        self.pretext_accuracy = keras.metrics.Mean(name="pretext_accuracy")

    @property
    def encoder(self):
        return self.backbone

    @property
    def model_metrics(self):
        return [self.pretext_accuracy]

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

    def _key(self, images, training):
        return self.key_projector(self.key_backbone(images, training=training),
                                  training=training)

    def call(self, views, training=None):
        check_views(views)
        query = self.projector(self.backbone(views[:, 0], training=training), training=training)
        if self.shuffle_bn and training:
            shuffled, unshuffle = shuffle_across_replicas(
                views[:, 1], step_seed(self, self.shuffle_seed)
            )
            key = unshuffle(tf.stop_gradient(self._key(shuffled, training)))
        else:
            key = self._key(views[:, 1], training)
        return tf.stack([query, tf.stop_gradient(key)], axis=1)

    def queue_loss_settings(self):
        """Checks the compiled loss (see the class docstring) and returns
        `(temperature, decoupled, normalize, reduction)`."""
        loss = self.loss
        if not isinstance(loss, (InfoNCE, DCL)):
            raise ValueError(
                "MoCo computes its loss against the queue and takes its settings "
                "from a compiled keras_contrast.losses.InfoNCE or DCL (NTXent, or a "
                f"subclass of either), got {type(loss).__name__}; the queue loss "
                "computes no other loss."
            )
        if not loss.gather:
            raise ValueError(
                "MoCo needs the compiled loss's `gather`=True: every replica "
                "enqueues the keys of all replicas, so the queue is the same on each; "
                "got `gather`=False."
            )
        if getattr(loss, "tile_size", None) is not None:
            raise ValueError(
                "MoCo's queue loss is dense: compile the loss with `tile_size`=None, "
                f"got `tile_size`={loss.tile_size!r}."
            )
        check_training_reduction(loss.reduction, type(loss).__name__)
        return loss.temperature, isinstance(loss, DCL), loss.normalize, loss.reduction

    def enqueue(self, keys, normalize=True):
        """Writes `keys` (this replica's; all replicas' are gathered) into
        the ring buffer at the pointer, L2-normalised with `normalize`."""
        keys = tf.cast(all_gather(keys), self.queue.dtype)
        if normalize:
            keys = tf.math.l2_normalize(keys, axis=1)
        count = tf.shape(keys)[0]
        static_count = keys.shape[0]
        if static_count is not None and static_count > self.queue_size:
            raise ValueError(
                f"MoCo: the global batch of {static_count} samples exceeds "
                f"`queue_size`={self.queue_size}."
            )
        check = tf.debugging.assert_less_equal(
            count, self.queue_size,
            message=f"MoCo: the global batch exceeds `queue_size`={self.queue_size}.",
        )
        with tf.control_dependencies([check]):
            rows = (self.queue_pointer + tf.range(count)) % self.queue_size
        self.queue.assign(tf.tensor_scatter_nd_update(self.queue, rows[:, None], keys))
        self.queue_pointer.assign((self.queue_pointer + count) % self.queue_size)

    def _update_pretext_accuracy(self, hits):
        """Adds the global batch's hits: every replica adds the global
        accuracy with weight (global count) / R, so each replica's running
        value and the cross-replica sum Keras reads at the end of an epoch
        are the running global fraction, even for uneven replica batches."""
        local = tf.stack([tf.reduce_sum(hits), tf.cast(tf.size(hits), tf.float32)])
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        total = local
        if replicas > 1:
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        self.pretext_accuracy.update_state(
            tf.math.divide_no_nan(total[0], total[1]),
            sample_weight=total[1] / float(replicas),
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        temperature, decoupled, normalize, reduction = self.queue_loss_settings()
        per_sample, hits = queue_loss_with_hits(
            y_pred[:, 0], y_pred[:, 1], tf.stop_gradient(self.queue.value), temperature,
            decoupled, normalize)
        self._update_pretext_accuracy(hits)
        loss = assemble_loss(self, per_sample, sample_weight, reduction,
                             dtype=self.loss.dtype, loss_name=type(self.loss).__name__)
        if training:
            with tf.control_dependencies([loss]):
                self.enqueue(tf.stop_gradient(y_pred[:, 1]), normalize)
        return loss

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
            "shuffle_bn": self.shuffle_bn,
            "shuffle_seed": self.shuffle_seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**cls.deserialize_arguments(config, custom_objects))
