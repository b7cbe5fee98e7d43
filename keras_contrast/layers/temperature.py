"""A learnable softmax temperature stored on a log scale (CLIP)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_contrast.api_export import keras_contrast_export


def _check_number(name, value, positive=False):
    """Raises unless `value` is a real Python or NumPy number (not a bool,
    not NaN; finite and > 0 if `positive`); returns it as a float."""
    expected = "a finite number > 0" if positive else "a number"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}.")
    if math.isnan(value) or (positive and (math.isinf(value) or value <= 0)):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    return float(value)


def exact_constant_initializer(value):
    """An initializer that fills a weight with `value` converted straight to
    the weight's dtype.

    `keras.initializers.Constant` rounds `value` through float32 first, which
    a float64 weight would keep (ln 10 would be off by about 3e-8); this one
    keeps every digit the weight's dtype holds.

    Args:
        value: Python or NumPy real number.

    Returns:
        A callable `initializer(shape, dtype=None)` (float32 when `dtype` is
        None), for `add_weight(initializer=...)`.
    """

    def initializer(shape, dtype=None):
        return ops.full(shape, np.asarray(value, dtype=dtype or "float32"), dtype=dtype)

    return initializer


def _plain(value):
    return value if isinstance(value, (int, float)) else float(value)


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
        min_value = _check_number("min_value", min_value)
        max_value = _check_number("max_value", max_value)
        if not min_value <= max_value:
            raise ValueError(
                f"`min_value` ({min_value}) must be <= `max_value` ({max_value})."
            )
        self.min_value = min_value
        self.max_value = max_value

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

    The weight has the layer's variable dtype: float32, or float64 under
    `keras.config.set_floatx("float64")`.

    Args:
        initial_temperature: float > 0, with 1/τ in `[min_scale, max_scale]`.
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
            _check_number(name, value, positive=True)
        if not min_scale <= max_scale:
            raise ValueError(
                f"`min_scale` ({min_scale}) must be <= `max_scale` ({max_scale})."
            )
        if not min_scale <= 1.0 / initial_temperature <= max_scale:
            raise ValueError(
                f"1 / `initial_temperature` = {1.0 / initial_temperature} must "
                f"lie in [`min_scale`, `max_scale`] = [{min_scale}, {max_scale}]."
            )
        # Python numbers in the config (NumPy scalars are not JSON).
        self.initial_temperature = _plain(initial_temperature)
        self.min_scale = _plain(min_scale)
        self.max_scale = _plain(max_scale)
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=(),
            # Built in the variable's dtype: keras' Constant rounds through
            # float32 first, which a float64 weight would keep.
            initializer=exact_constant_initializer(math.log(1.0 / initial_temperature)),
            constraint=ClipValue(math.log(min_scale), math.log(max_scale)),
            dtype=self.variable_dtype,
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
