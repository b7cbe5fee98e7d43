"""A learnable softmax temperature stored on a log scale (CLIP)."""

import math

import keras
from keras import ops

from keras_contrast.api_export import keras_contrast_export


@keras_contrast_export("keras_contrast.layers.ClipValue")
class ClipValue(keras.constraints.Constraint):
    """Clips a weight into `[min_value, max_value]` after each optimizer step.

    Keras has `MinMaxNorm` and `NonNeg` but no element-wise clip. A
    constraint, unlike a `minimum` in the forward pass, leaves the gradient
    intact at the bound.

    Args:
        min_value: float.
        max_value: float.
    """

    def __init__(self, min_value, max_value):
        if not min_value <= max_value:
            raise ValueError(
                f"`min_value` ({min_value}) must be <= `max_value` ({max_value})."
            )
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@keras_contrast_export("keras_contrast.layers.LearnableTemperature")
class LearnableTemperature(keras.layers.Layer):
    """Learnable softmax temperature, τ = exp(-s), stored as s = log(1/τ).

    CLIP's parameterisation: s starts at ln(1/0.07) and is clamped to
    `[ln min_scale, ln max_scale]` (default [0, ln 100], so τ ∈ [0.01, 1])
    by a constraint applied after each optimizer step. Call the layer with
    no input to get τ and pass it to a loss's `temperature=`. Exclude the
    weight from weight decay with `exclude_from_weight_decay(optimizer)`.

    Args:
        initial_temperature: float > 0.
        min_scale: float > 0, smallest 1/τ.
        max_scale: float >= min_scale, largest 1/τ.

    Example:
    >>> temperature = keras_contrast.layers.LearnableTemperature()
    >>> loss = keras_contrast.losses.CLIPLoss()(None, y_pred,
    ...                                         temperature=temperature())
    """

    def __init__(
        self, initial_temperature=0.07, min_scale=1.0, max_scale=100.0, **kwargs
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("initial_temperature", initial_temperature),
            ("min_scale", min_scale),
            ("max_scale", max_scale),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or (
                value <= 0
            ):
                raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")
        if not min_scale <= 1.0 / initial_temperature <= max_scale:
            raise ValueError(
                f"1 / `initial_temperature` = {1.0 / initial_temperature} must "
                f"lie in [`min_scale`, `max_scale`] = [{min_scale}, {max_scale}]."
            )
        self.initial_temperature = initial_temperature
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=(),
            initializer=keras.initializers.Constant(
                math.log(1.0 / initial_temperature)
            ),
            constraint=ClipValue(math.log(min_scale), math.log(max_scale)),
            dtype="float32",
        )
        self.built = True

    def call(self, inputs=None):
        return ops.exp(-self.log_scale)

    def exclude_from_weight_decay(self, optimizer):
        """Keeps `optimizer`'s weight decay off the log-scale weight.

        Call before the optimizer is built (e.g. right after `compile`).
        """
        optimizer.exclude_from_weight_decay(var_list=[self.log_scale])

    def compute_output_shape(self, input_shape=None):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_temperature": self.initial_temperature,
                "min_scale": self.min_scale,
                "max_scale": self.max_scale,
            }
        )
        return config
