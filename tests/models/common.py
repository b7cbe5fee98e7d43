"""Tiny backbones and data shared by the model tests."""

import keras
import numpy as np

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
