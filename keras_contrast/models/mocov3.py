"""MoCo v3: a query encoder with predictor and a momentum key encoder."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import check_unit_interval
from keras_contrast.layers.projection_head import ProjectionHead
from keras_contrast.models.simclr import check_views
from keras_contrast.normalization.factory import serialize_norm
from keras_contrast.training.momentum import MomentumEncoderModel
from keras_contrast.training.momentum import cosine_momentum
from keras_contrast.training.momentum import momentum_copy


@keras_contrast_export("keras_contrast.models.MoCoV3")
class MoCoV3(MomentumEncoderModel):
    """MoCo v3 (Chen, Xie, He, 2021; docs/design.md §5).

    Query encoder: backbone + 3-layer projector + 2-layer predictor (BN in
    both MLPs, the last one without affine terms; `projection_norm="sync"`
    synchronises them across replicas as the paper does). Key encoder: a
    momentum copy of backbone + projector, updated after every optimizer
    step by `k ← m·k + (1 − m)·q` over the query's trainable variables.

    Input: two views `(batch, 2, H, W, C)`; output `(batch, 4, dim)` =
    `[q1, q2, k1, k2]` for `keras_contrast.losses.MoCoV3Loss` (keys are
    stop-gradient; the loss gathers them across replicas).

    Details that matter:
    - The momentum `m` is computed in the graph from
      `optimizer.iterations` (the update after step k uses
      `cosine_momentum(k, total_steps, momentum, final_momentum)`), so it
      is right after a resume and with `steps_per_execution`. With
      `total_steps=None` it stays `momentum`.
    - The key encoder's BatchNorm runs in training mode on batch statistics
      (as in the paper) and keeps its own moving statistics. Its variables
      are marked non-trainable one by one, so no optimizer sees them, while
      the layers stay `trainable` (Keras runs a BN layer whose `trainable`
      is False in inference mode).
    - The update is `after_optimizer_step()`, so it runs exactly once per
      step, also under `keras_contrast.training.GradCache`.

    Args:
        backbone: Keras model mapping images to features `(batch, d)` (e.g.
            `ViTBackbone(freeze_patch_projection=True)`).
        projection_dims: projector widths (paper: `(4096, 4096, 256)`).
        prediction_dims: predictor widths (paper: `(4096, 256)`).
        momentum: float in [0, 1], m0.
        final_momentum: float in [0, 1], m at `total_steps`.
        total_steps: int or None. Length of the cosine schedule.
        projection_norm: `"batch"`, `"sync"`, `"layer"`, None or callable.
        **kwargs: `keras.Model` arguments.

    Example:
    >>> backbone = keras_contrast.models.ViTBackbone("small", freeze_patch_projection=True)
    >>> model = keras_contrast.models.MoCoV3(backbone, total_steps=100 * steps_per_epoch)
    >>> model.compile(optimizer=keras.optimizers.AdamW(1.5e-4),
    ...               loss=keras_contrast.losses.MoCoV3Loss(0.2))

    Reference:
        Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision
        Transformers. ICCV 2021.
    """

    def __init__(
        self,
        backbone,
        projection_dims=(4096, 4096, 256),
        prediction_dims=(4096, 256),
        momentum=0.99,
        final_momentum=1.0,
        total_steps=None,
        projection_norm="batch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_unit_interval(momentum, "momentum")
        check_unit_interval(final_momentum, "final_momentum")
        if total_steps is not None:
            check_positive_int(total_steps, "total_steps", "None or an int > 0")
        self.projection_dims = tuple(projection_dims)
        self.prediction_dims = tuple(prediction_dims)
        if self.prediction_dims[-1] != self.projection_dims[-1]:
            raise ValueError(
                f"The predictor must output the projector's dimension: "
                f"`prediction_dims`[-1]={self.prediction_dims[-1]} != "
                f"`projection_dims`[-1]={self.projection_dims[-1]}."
            )
        self.momentum = float(momentum)
        self.final_momentum = float(final_momentum)
        self.total_steps = total_steps
        self.projection_norm = projection_norm
        head = dict(norm=projection_norm, last_norm=True, last_norm_affine=False)
        self.backbone = backbone
        self.projector = ProjectionHead(self.projection_dims, name="projector", **head)
        self.predictor = ProjectionHead(self.prediction_dims, name="predictor", **head)
        self.key_backbone = momentum_copy(backbone, "key_backbone")
        self.key_projector = ProjectionHead(self.projection_dims, name="key_projector", **head)

    @property
    def encoder(self):
        """The query backbone: what to evaluate and export."""
        return self.backbone

    def build(self, input_shape):
        features = self.build_momentum_encoders(input_shape)
        self.predictor.build(tuple(features)[:-1] + (self.projection_dims[-1],))
        self.built = True

    def current_momentum(self):
        """m of the update that follows optimizer step `iterations - 1`."""
        if self.total_steps is None:
            return tf.constant(self.momentum, tf.float32)
        step = self.training_optimizer.iterations - 1
        return cosine_momentum(step, self.total_steps, self.momentum, self.final_momentum)

    def after_optimizer_step(self):
        self.momentum_update(self.current_momentum())

    def call(self, views, training=None):
        check_views(views)
        queries, keys = [], []
        for index in range(2):
            images = views[:, index]
            features = self.backbone(images, training=training)
            queries.append(
                self.predictor(self.projector(features, training=training), training=training)
            )
            key = self.key_projector(
                self.key_backbone(images, training=training), training=training
            )
            keys.append(tf.stop_gradient(key))
        return tf.stack(queries + keys, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4, self.projection_dims[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "projection_dims": list(self.projection_dims),
            "prediction_dims": list(self.prediction_dims),
            "momentum": self.momentum,
            "final_momentum": self.final_momentum,
            "total_steps": self.total_steps,
            "projection_norm": serialize_norm(self.projection_norm),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**cls.deserialize_arguments(config, custom_objects))
