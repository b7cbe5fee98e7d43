"""LARS: layer-wise adaptive rate scaling (SimCLR's large-batch optimizer)."""

import keras
from keras import ops

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_number


@keras_contrast_export("keras_contrast.optimizers.is_bias_or_norm")
def is_bias_or_norm(variable):
    """True for a variable of rank <= 1: the variables that SimCLR's and
    CLIP's recipes exclude from weight decay.

    Biases, the scale/offset of batch, layer and group normalization, and
    scalar weights such as the log-scale of
    `keras_contrast.layers.LearnableTemperature` have rank <= 1; kernels,
    convolution filters and embedding tables have rank >= 2. `LARS` applies
    this rule (`exclude_bias_and_norm=True`); with a Keras optimizer:

    >>> optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    >>> optimizer.exclude_from_weight_decay(
    ...     var_list=[v for v in model.trainable_variables if is_bias_or_norm(v)])

    Args:
        variable: a Keras or TensorFlow variable (anything with `shape`).

    Returns:
        bool.
    """
    return len(variable.shape) <= 1


def check_learning_rate(learning_rate, name="learning_rate"):
    """Rejects bools, strings, None and negative numbers; schedules,
    callables and variables pass (Keras' optimizers take them)."""
    if learning_rate is None or isinstance(learning_rate, (bool, str, bytes)):
        raise ValueError(
            f"`{name}` must be a number >= 0 or a LearningRateSchedule, got {learning_rate!r}."
        )
    if isinstance(learning_rate, (int, float)) and not (
        is_number(learning_rate) and learning_rate >= 0
    ):
        raise ValueError(f"`{name}` must be a number >= 0, got {learning_rate!r}.")


@keras_contrast_export("keras_contrast.optimizers.LARS")
class LARS(keras.optimizers.Optimizer):
    """SGD with momentum, weight decay and a layer-wise trust ratio (LARS).

    Keras has no LARS. For every variable `w` with gradient `g` (SimCLR's
    reference implementation):

        g ← g + λ·w                                  (weight decay)
        r = η·‖w‖ / ‖g‖   (1 if ‖w‖ = 0 or ‖g‖ = 0)  (trust ratio)
        v ← μ·v + lr·r·g;   w ← w − v                (momentum; Nesterov:
                                                      w ← w − (μ·v + lr·r·g))

    Excluded variables get neither weight decay nor the trust ratio (plain
    SGD with momentum). With `exclude_bias_and_norm=True` (default) every
    variable of rank ≤ 1 is excluded: biases, the scale/offset of batch,
    layer and group normalization, and scalar weights such as the log-scale
    of `keras_contrast.layers.LearnableTemperature` — SimCLR excludes BN
    parameters and biases the same way. More can be excluded with
    `exclude_from_weight_decay(var_list=..., var_names=...)` (Keras' own
    method), before the optimizer is built.

    Args:
        learning_rate: float or `LearningRateSchedule` (e.g.
            `WarmupCosineDecay`; SimCLR: `scaled_learning_rate(0.075, B,
            "sqrt")`).
        momentum: float in [0, 1), μ.
        weight_decay: float >= 0, λ.
        eta: float > 0, trust coefficient η.
        nesterov: bool.
        exclude_bias_and_norm: bool. Exclude variables of rank ≤ 1.
        name: optimizer name.
        **kwargs: `keras.optimizers.Optimizer` arguments (`clipnorm`, ...).

    Example:
    >>> optimizer = keras_contrast.optimizers.LARS(
    ...     keras_contrast.optimizers.WarmupCosineDecay(4.8, 500, 5000), weight_decay=1e-6)

    Reference:
        You, Gitman, Ginsburg. Large Batch Training of Convolutional Networks
        (arXiv 1708.03888), 2017; Chen et al., SimCLR, 2020 (appendix B).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=1e-6,
        eta=0.001,
        nesterov=False,
        exclude_bias_and_norm=True,
        name="lars",
        **kwargs,
    ):
        check_learning_rate(learning_rate)
        if not (is_number(momentum) and 0.0 <= momentum < 1.0):
            raise ValueError(f"`momentum` must be a number in [0, 1), got {momentum!r}.")
        if not (is_number(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"`weight_decay` must be a number >= 0, got {weight_decay!r}.")
        if not (is_number(eta) and eta > 0.0):
            raise ValueError(f"`eta` must be a number > 0, got {eta!r}.")
        for flag, value in (("nesterov", nesterov),
                            ("exclude_bias_and_norm", exclude_bias_and_norm)):
            if not isinstance(value, bool):
                raise ValueError(f"`{flag}` must be a bool, got {value!r}.")
        # Weight decay is part of the LARS update, not Keras' decoupled decay.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, "velocity") for v in variables]

    def adapts(self, variable):
        """Whether `variable` gets weight decay and the trust ratio."""
        if self.exclude_bias_and_norm and is_bias_or_norm(variable):
            return False
        return self._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        if self.adapts(variable):
            gradient = gradient + self.lars_weight_decay * variable
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            trust = ops.where(
                ops.logical_and(w_norm > 0, g_norm > 0),
                self.eta * w_norm / ops.maximum(g_norm, 1e-30),
                ops.ones_like(w_norm),
            )
            learning_rate = learning_rate * trust
        step = learning_rate * gradient
        self.assign(velocity, self.momentum * velocity + step)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * velocity + step)
        else:
            self.assign_sub(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "eta": self.eta,
                "nesterov": self.nesterov,
                "exclude_bias_and_norm": self.exclude_bias_and_norm,
            }
        )
        return config
