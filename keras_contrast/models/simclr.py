"""SimCLR: a backbone and a projection head over two augmented views."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.normalization.factory import deserialize_norm
from keras_contrast.normalization.factory import serialize_norm
from keras_contrast.distribute.shuffle import shuffle_across_replicas
from keras_contrast.layers.projection_head import ProjectionHead
from keras_contrast.training.contrastive_model import ContrastiveModel


def check_views(views, count=2):
    shape = views.shape
    if shape.rank is not None and (shape.rank < 3 or shape[1] != count):
        raise ValueError(
            f"Expected views of shape (batch, {count}, ...), got {tuple(shape)}."
        )


def fold_views(views):
    """`(b, v, ...)` → `(b·v, ...)`, the views of a sample adjacent."""
    return tf.reshape(views, tf.concat([[-1], tf.shape(views)[2:]], axis=0))


def unfold_views(flat, views):
    """`(b·v, d)` → `(b, v, d)`."""
    return tf.reshape(flat, (-1, views, flat.shape[-1]))


def step_seed(model, seed):
    """A seed that changes at every optimizer step (and is the same on every
    replica): `(seed, step)`, with `step` the `iterations` of the optimizer
    that trains `model`: `ContrastiveModel.training_optimizer`, which is a
    wrapping `GradCache`'s optimizer when there is one (a model that is not
    a `ContrastiveModel` uses its own `optimizer`). The step is 0 before
    any optimizer is attached."""
    if isinstance(model, ContrastiveModel):
        optimizer = model.training_optimizer
    else:
        optimizer = getattr(model, "optimizer", None)
    step = optimizer.iterations if optimizer is not None else tf.constant(0, tf.int64)
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])


@keras_contrast_export("keras_contrast.models.SimCLR")
class SimCLR(ContrastiveModel):
    """SimCLR (Chen et al., 2020): backbone + MLP projection head.

    Input: both augmented views of every sample, `(batch, 2, H, W, C)`;
    output: `(batch, 2, dim)` projections for any keras_contrast loss
    (`InfoNCE`/`NTXent`, `DCL`, `DCLW`). The backbone runs once over both
    views stacked, so BatchNorm sees one batch of `2·batch` images
    (per replica; `norm="sync"` in the backbone makes it global).

    `shuffle_bn=True` applies MoCo's Shuffle BN (docs/design.md §4): the
    second view is shuffled across replicas before backbone and head and
    unshuffled after, so the two views of a sample are never normalised
    with statistics of the same samples; each view is then its own BN batch.
    With one replica (or outside a strategy) the shuffle is the identity.
    The permutation changes at every optimizer step: its seed is
    `(shuffle_seed, training_optimizer.iterations)`, the wrapping
    `GradCache`'s optimizer when the model trains inside one.

    Args:
        backbone: a Keras model mapping images to features `(batch, d)`.
        projection_dims: widths of the projection MLP; the last is the
            embedding dimension (SimCLR: `(2048, 128)`).
        projection_norm: norm of the head: `"batch"`, `"sync"`, `"layer"`,
            None or a callable.
        shuffle_bn: bool. Shuffle BN for the second view.
        shuffle_seed: int. Base seed of the per-step shuffle.
        **kwargs: `keras.Model` arguments.

    Example:
    >>> backbone = keras_contrast.models.ResNetBackbone(18, stem="cifar", norm="sync")
    >>> model = keras_contrast.models.SimCLR(backbone, projection_dims=(2048, 128))
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.DCLW())
    >>> model.fit(two_view_dataset, epochs=100)
    >>> features = model.encoder.predict(images)

    Reference:
        Chen, Kornblith, Norouzi, Hinton. A Simple Framework for Contrastive
        Learning of Visual Representations. ICML 2020.
    """

    def __init__(
        self,
        backbone,
        projection_dims=(2048, 128),
        projection_norm="batch",
        shuffle_bn=False,
        shuffle_seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(f"`backbone` must be a Keras layer or model, got {backbone!r}.")
        self.backbone = backbone
        self.projection_dims = tuple(projection_dims)
        self.projection_norm = projection_norm
        self.projector = ProjectionHead(self.projection_dims, norm=projection_norm,
                                        name="projector")
        self.shuffle_bn = bool(shuffle_bn)
        self.shuffle_seed = int(shuffle_seed)

    @property
    def encoder(self):
        """The backbone: what to evaluate and export."""
        return self.backbone

    def build(self, input_shape):
        image_shape = tuple(input_shape)[2:]
        if not self.backbone.built:
            self.backbone.build((None,) + image_shape)
        features = self.backbone.compute_output_shape((None,) + image_shape)
        self.projector.build(features)
        self.built = True

    def _embed(self, images, training):
        return self.projector(self.backbone(images, training=training), training=training)

    def call(self, views, training=None):
        check_views(views)
        if not self.shuffle_bn:
            return unfold_views(self._embed(fold_views(views), training), 2)
        first = self._embed(views[:, 0], training)
        shuffled, unshuffle = shuffle_across_replicas(
            views[:, 1], step_seed(self, self.shuffle_seed)
        )
        second = unshuffle(self._embed(shuffled, training))
        return tf.stack([first, second], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2, self.projection_dims[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "projection_dims": list(self.projection_dims),
            "projection_norm": serialize_norm(self.projection_norm),
            "shuffle_bn": self.shuffle_bn,
            "shuffle_seed": self.shuffle_seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(
            config["backbone"], custom_objects=custom_objects
        )
        config["projection_norm"] = deserialize_norm(config.get("projection_norm"))
        return cls(**config)
