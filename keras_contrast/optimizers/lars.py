"""LARS: layer-wise adaptive rate scaling (SimCLR's large-batch optimizer)."""

import keras
from keras import ops

from keras_contrast.api_export import keras_contrast_export


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
        # Weight decay is part of the LARS update, not Keras' decoupled decay.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must lie in [0, 1), got {momentum!r}.")
        if not weight_decay >= 0.0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
        if not eta > 0.0:
            raise ValueError(f"`eta` must be > 0, got {eta!r}.")
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
        if self.exclude_bias_and_norm and len(variable.shape) <= 1:
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
