"""A CLIP-style dual encoder: two towers, a shared embedding space and a
learnable temperature."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.layers.temperature import LearnableTemperature
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.contrastive_model import assemble_loss


@keras_contrast_export("keras_contrast.models.DualEncoder")
class DualEncoder(ContrastiveModel):
    """Two towers (e.g. image and text) projected into one embedding space.

    Input: a pair `(inputs_a, inputs_b)` (or a dict with keys `"a"` and
    `"b"`) of matching samples; output `(batch, 2, projection_dim)` with
    view 0 = tower A and view 1 = tower B, the layout `CLIPLoss` takes
    (docs/design.md §1). Each tower is followed by a linear projection.

    With `learnable_temperature=True` the model owns a
    `LearnableTemperature` (log-scale weight, CLIP's initialisation
    ln(1/0.07), clamped to `[0, ln max_logit_scale]`) and overrides
    `compute_loss` to feed it to the compiled loss, so the temperature gets
    its exact gradient — also through `GradCache`, which differentiates the
    loss with respect to the cached embeddings and this weight. That loss is
    built by `keras_contrast.training.assemble_loss`: per-sample losses,
    sample weights, the reduction over the global batch, then the weight
    regularizers (`self.losses`) divided by the number of replicas, as
    Keras does, so a regularizer's gradient counts once however many
    replicas train the model. The loss's `reduction` must give a scalar
    (not `"none"`).

    Args:
        tower_a: Keras model/layer mapping inputs A to features.
        tower_b: Keras model/layer mapping inputs B to features.
        projection_dim: int > 0, the shared embedding dimension.
        learnable_temperature: bool. Learn τ (else the loss's own τ is used).
        temperature: float > 0, initial τ.
        max_logit_scale: float, largest 1/τ (CLIP: 100).
        **kwargs: `keras.Model` arguments.

    Example:
    >>> model = keras_contrast.models.DualEncoder(image_tower, text_tower, 256)
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.CLIPLoss())
    >>> model.fit(tf.data.Dataset.zip(images, texts).batch(1024))
    >>> queries, keys = model.encode_a(images), model.encode_b(texts)

    Reference:
        Radford et al. Learning Transferable Visual Models From Natural
        Language Supervision. ICML 2021.
    """

    def __init__(
        self,
        tower_a,
        tower_b,
        projection_dim,
        learnable_temperature=True,
        temperature=0.07,
        max_logit_scale=100.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(projection_dim, "projection_dim")
        self.tower_a = tower_a
        self.tower_b = tower_b
        self.projection_dim = projection_dim
        self.projection_a = keras.layers.Dense(projection_dim, use_bias=False,
                                               name="projection_a")
        self.projection_b = keras.layers.Dense(projection_dim, use_bias=False,
                                               name="projection_b")
        self.learnable_temperature = bool(learnable_temperature)
        self.initial_temperature = float(temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.temperature = (
            LearnableTemperature(temperature, min_scale=1.0, max_scale=max_logit_scale,
                                 name="temperature")
            if self.learnable_temperature
            else None
        )

    @property
    def encoder(self):
        """A dual encoder has two encoders, not one: reading `encoder` raises
        an AttributeError that names them."""
        raise AttributeError(
            "A DualEncoder has two encoders, not one `encoder`: embed with `encode_a` / "
            "`encode_b` (towers `tower_a` / `tower_b`) and export with "
            "keras_contrast.export.export_dual_encoder."
        )

    @staticmethod
    def _split_inputs(inputs):
        if isinstance(inputs, dict):
            if set(inputs) != {"a", "b"}:
                raise ValueError(
                    f"DualEncoder inputs as a dict need keys 'a' and 'b', got {sorted(inputs)}."
                )
            return inputs["a"], inputs["b"]
        if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
            return inputs[0], inputs[1]
        raise ValueError(
            "DualEncoder takes a pair (inputs_a, inputs_b) or a dict {'a': ..., 'b': ...}, "
            f"got {type(inputs).__name__}."
        )

    def build(self, input_shape):
        shape_a, shape_b = self._split_inputs(input_shape)
        for tower, projection, shape in (
            (self.tower_a, self.projection_a, shape_a),
            (self.tower_b, self.projection_b, shape_b),
        ):
            if not tower.built:
                tower.build(shape)
            projection.build(tower.compute_output_shape(shape))
        self.built = True

    def _project(self, tower, projection, inputs, training):
        return projection(tower(inputs, training=training))

    def call(self, inputs, training=None):
        inputs_a, inputs_b = self._split_inputs(inputs)
        a = self._project(self.tower_a, self.projection_a, inputs_a, training)
        b = self._project(self.tower_b, self.projection_b, inputs_b, training)
        return tf.stack([a, b], axis=1)

    def encode_a(self, inputs, training=False):
        """L2-normalised embeddings of tower A, `(batch, projection_dim)`."""
        return tf.math.l2_normalize(
            self._project(self.tower_a, self.projection_a, inputs, training), axis=-1
        )

    def encode_b(self, inputs, training=False):
        """L2-normalised embeddings of tower B, `(batch, projection_dim)`."""
        return tf.math.l2_normalize(
            self._project(self.tower_b, self.projection_b, inputs, training), axis=-1
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.temperature is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = self.loss
        if loss is None:
            raise ValueError("Compile the DualEncoder with a loss (e.g. CLIPLoss()) first.")
        if not isinstance(loss, ContrastiveLoss):
            raise ValueError(
                "DualEncoder(learnable_temperature=True) feeds its temperature to a "
                "keras_contrast.losses.ContrastiveLoss (e.g. CLIPLoss()); got "
                f"{type(loss).__name__}. Compile with one, or use "
                "`learnable_temperature=False`."
            )
        per_sample = loss.contrast(y, y_pred, self.temperature())
        return assemble_loss(self, per_sample, sample_weight, loss.reduction,
                             dtype=loss.dtype, loss_name=type(loss).__name__)

    def compute_output_shape(self, input_shape):
        shape_a, _ = self._split_inputs(input_shape)
        return (shape_a[0], 2, self.projection_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "tower_a": keras.layers.serialize(self.tower_a),
            "tower_b": keras.layers.serialize(self.tower_b),
            "projection_dim": self.projection_dim,
            "learnable_temperature": self.learnable_temperature,
            "temperature": self.initial_temperature,
            "max_logit_scale": self.max_logit_scale,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("tower_a", "tower_b"):
            config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
        return cls(**config)
