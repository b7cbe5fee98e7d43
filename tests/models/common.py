"""Tiny backbones and data shared by the model tests."""

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import layers


def tiny_backbone(norm=True, seed=0, image=(8, 8, 1)):
    """(b, 8, 8, 1) → Conv(4) → [BN] → ReLU → GAP: (b, 4)."""
    stack = [
        keras.Input(image),
        # No bias before BN: its gradient is zero up to rounding noise.
        keras.layers.Conv2D(4, 3, use_bias=not norm,
                            kernel_initializer=keras.initializers.GlorotUniform(seed)),
    ]
    if norm:
        stack.append(layers.BatchNormalization(momentum=0.5))
    stack += [keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()]
    return keras.Sequential(stack)


def two_views(batch, seed=0, image=(8, 8, 1)):
    return np.random.default_rng(seed).normal(size=(batch, 2) + image).astype("float32")


class StepGradientRecorder(keras.optimizers.Optimizer):
    """Stores the (replica-summed, loss-scale-undone) gradient of every
    variable at every step, `gradients(step)`; updates nothing."""

    def __init__(self, steps=2, **kwargs):
        super().__init__(learning_rate=0.0, **kwargs)
        self.steps = steps

    def build(self, variables):
        super().build(variables)
        self.recorded = [
            self.add_variable((self.steps,) + tuple(v.shape), dtype=v.dtype,
                              initializer="zeros", name="recorded")
            for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        record = self.recorded[self._get_variable_index(variable)]
        step = tf.cast(self.iterations, tf.int32)
        record.assign(tf.tensor_scatter_nd_update(
            record.value, [[step]], tf.cast(gradient, record.dtype)[None]))

    def gradients(self, step):
        return [v.numpy()[step] for v in self.recorded]
