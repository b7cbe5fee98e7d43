"""A CLIP- or SigLIP-style dual encoder: two towers, a shared embedding
space, a learnable temperature and (SigLIP) a learnable logit bias."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.layers.temperature import LearnableTemperature
from keras_contrast.layers.temperature import exact_constant_initializer
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.siglip import SigLIPLoss
from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.contrastive_model import assemble_loss


@keras_contrast_export("keras_contrast.models.DualEncoder")
class DualEncoder(ContrastiveModel):
    """Two towers (e.g. image and text) projected into one embedding space.

    Input: a pair `(inputs_a, inputs_b)` (or a dict with keys `"a"` and
    `"b"`) of matching samples; output `(batch, 2, projection_dim)` with
    view 0 = tower A and view 1 = tower B, the layout `CLIPLoss` and
    `SigLIPLoss` take
    (docs/design.md §1). Each tower is followed by a linear projection.

    With `learnable_temperature=True` the model owns a
    `LearnableTemperature` (log-scale weight, CLIP's initialisation
    ln(1/0.07), clamped to `[0, ln max_logit_scale]`) and overrides
    `compute_loss` to feed it to the compiled loss, so the temperature gets
    its exact gradient — also through `GradCache`, which differentiates the
    loss with respect to the cached embeddings and this weight.

    SigLIP (`keras_contrast.losses.SigLIPLoss`): with `learnable_bias=True`
    the model also owns a scalar logit bias b (the weight `logit_bias`,
    created in `build` in the variable dtype, so checkpoints and `.keras`
    files hold it) and passes `temperature=` and `bias=` to the compiled
    `SigLIPLoss`, whose logits are `<x_i, y_j>/τ + b`; SigLIP's
    initialisation is `temperature=0.1, bias=-10.0` (preset
    `siglip_dual_encoder_small`). Without a learnable temperature the
    loss's configured τ is used. The clamp of the learnable temperature
    stays for SigLIP too (the paper does not clamp t = 1/τ; open_clip's
    training loop clamps it at 100 for CLIP and SigLIP alike): 1/τ lies in
    `[1, max_logit_scale]`, and a larger `max_logit_scale` (e.g. 1e4)
    removes the upper clamp in practice. The bias is not clamped.

    Weight decay: `compile` (and `GradCache.compile` of a wrapper, through
    `set_training_optimizer`) keeps the optimizer's weight decay off the
    log-scale temperature and the logit bias (`logit_weights`), adding them
    to the variables the optimizer already excludes (also an inner optimizer
    of a `LossScaleOptimizer`). For an optimizer used some other way, call
    `exclude_logit_weights_from_weight_decay(optimizer)`.

    The training loss is built by `keras_contrast.training.assemble_loss`:
    per-sample losses, sample weights, the reduction over the global batch,
    then the weight regularizers (`self.losses`) divided by the number of
    replicas, as Keras does, so a regularizer's gradient counts once however
    many replicas train the model. The loss's `reduction` must give a
    scalar (not `"none"`).

    Args:
        tower_a: Keras model/layer mapping inputs A to features.
        tower_b: Keras model/layer mapping inputs B to features.
        projection_dim: int > 0, the shared embedding dimension.
        learnable_temperature: bool. Learn τ (else the loss's own τ is used).
        temperature: float > 0, initial τ.
        max_logit_scale: float, largest 1/τ (CLIP: 100).
        learnable_bias: bool. Learn SigLIP's logit bias (the compiled loss
            must then be a `SigLIPLoss`; else the loss's own bias is used).
        bias: finite float, initial bias (SigLIP: -10).
        **kwargs: `keras.Model` arguments.

    Example:
    >>> model = keras_contrast.models.DualEncoder(image_tower, text_tower, 256)
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.CLIPLoss())
    >>> model.fit(tf.data.Dataset.zip(images, texts).batch(1024))
    >>> queries, keys = model.encode_a(images), model.encode_b(texts)
    >>> siglip = keras_contrast.models.DualEncoder(
    ...     image_tower, text_tower, 256, temperature=0.1, learnable_bias=True)
    >>> siglip.compile(optimizer="adamw", loss=keras_contrast.losses.SigLIPLoss())

    Reference:
        Radford et al. Learning Transferable Visual Models From Natural
        Language Supervision. ICML 2021.
        Zhai, Mustafa, Kolesnikov, Beyer. Sigmoid Loss for Language Image
        Pre-Training. ICCV 2023.
    """

    def __init__(
        self,
        tower_a,
        tower_b,
        projection_dim,
        learnable_temperature=True,
        temperature=0.07,
        max_logit_scale=100.0,
        learnable_bias=False,
        bias=-10.0,
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
        self.learnable_bias = bool(learnable_bias)
        self.initial_bias = _check_bias(bias)
        # Created in `build` (in the variable dtype).
        self.logit_bias = None

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
        if self.learnable_bias and self.logit_bias is None:
            self.logit_bias = self.add_weight(
                name="logit_bias",
                shape=(),
                # Exact in a float64 weight (keras' Constant rounds through float32).
                initializer=exact_constant_initializer(self.initial_bias),
                dtype=self.variable_dtype,
            )
            # Compiled before it was built: the bias now exists to exclude.
            self._exclude_logit_weights()
        self.built = True

    @property
    def logit_weights(self):
        """The weights of the loss's logits that this model learns: the
        temperature's log scale and the logit bias (those that exist)."""
        weights = [] if self.temperature is None else [self.temperature.log_scale]
        return weights + ([] if self.logit_bias is None else [self.logit_bias])

    def exclude_logit_weights_from_weight_decay(self, optimizer):
        """Keeps `optimizer`'s weight decay off `logit_weights`, adding them
        to the variables and names it already excludes.

        `compile` (and a wrapping `GradCache`'s) calls this; call it, before
        the optimizer is built, for an optimizer that trains this model some
        other way. Keras' `optimizer.exclude_from_weight_decay(var_list=...,
        var_names=...)`, which this calls, replaces the optimizer's
        exclusions instead (e.g. the biases and norms a caller excluded
        before); here they are passed to it again: the variables of this
        model it excludes and its name patterns. An excluded variable
        outside this model is not kept.

        Args:
            optimizer: a Keras optimizer (a `LossScaleOptimizer`'s inner
                optimizer is the one updated), or a string/None (ignored).
        """
        while hasattr(optimizer, "inner_optimizer"):
            optimizer = optimizer.inner_optimizer
        if not isinstance(optimizer, keras.optimizers.Optimizer) or not self.logit_weights:
            return
        # Keras has no public reader of the exclusions: `_use_weight_decay`
        # is its own per-variable decision (the one each update makes), and
        # `_exclude_from_weight_decay_pattern` the compiled `var_names`. Both
        # are only read; the exclusions are written by the public method.
        decays = optimizer._use_weight_decay
        if not any(decays(w) for w in self.logit_weights):
            return  # already excluded, e.g. compiled again with this optimizer
        logit_ids = {id(w) for w in self.logit_weights}
        excluded = [v for v in self.variables if id(v) not in logit_ids and not decays(v)]
        pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
        optimizer.exclude_from_weight_decay(
            var_list=excluded + self.logit_weights,
            var_names=None if pattern is None else [pattern.pattern],
        )

    def _exclude_logit_weights(self):
        optimizer = self.training_optimizer
        if optimizer is not None:
            self.exclude_logit_weights_from_weight_decay(optimizer)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self._exclude_logit_weights()

    def compile_from_config(self, config):
        # Keras skips overridden `compile` methods when loading; this one only
        # adds the weight-decay exclusion, so it is safe to call.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def set_training_optimizer(self, optimizer):
        super().set_training_optimizer(optimizer)
        self._exclude_logit_weights()

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
        if self.temperature is None and not self.learnable_bias:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = self.loss
        if loss is None:
            raise ValueError("Compile the DualEncoder with a loss (e.g. CLIPLoss()) first.")
        if self.learnable_bias and not isinstance(loss, SigLIPLoss):
            raise ValueError(
                "DualEncoder(learnable_bias=True) feeds its logit bias to a "
                "keras_contrast.losses.SigLIPLoss; got "
                f"{type(loss).__name__}. Compile with SigLIPLoss(), or use "
                "`learnable_bias=False`."
            )
        if not isinstance(loss, ContrastiveLoss):
            raise ValueError(
                "DualEncoder(learnable_temperature=True) feeds its temperature to a "
                "keras_contrast.losses.ContrastiveLoss (e.g. CLIPLoss()); got "
                f"{type(loss).__name__}. Compile with one, or use "
                "`learnable_temperature=False`."
            )
        temperature = loss.temperature if self.temperature is None else self.temperature()
        if self.learnable_bias:
            if self.logit_bias is None:
                raise ValueError("Build the DualEncoder (call it once) before computing its loss.")
            per_sample = loss.contrast(y, y_pred, temperature, bias=self.logit_bias)
        else:
            per_sample = loss.contrast(y, y_pred, temperature)
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
            "learnable_bias": self.learnable_bias,
            "bias": self.initial_bias,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("tower_a", "tower_b"):
            config[key] = keras.layers.deserialize(config[key], custom_objects=custom_objects)
        return cls(**config)


def _check_bias(bias):
    """`bias` as a float: a finite real Python or NumPy number (TypeError
    for bools, strings and other types, ValueError for NaN and ±inf)."""
    expected = "a finite number"
    if isinstance(bias, (bool, np.bool_)) or not isinstance(bias, (numbers.Real, np.floating,
                                                                   np.integer)):
        raise TypeError(f"`bias` must be {expected}, got {bias!r}.")
    if not math.isfinite(bias):
        raise ValueError(f"`bias` must be {expected}, got {bias!r}.")
    return float(bias)
