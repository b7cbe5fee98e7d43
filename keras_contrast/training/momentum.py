"""Momentum (EMA) encoders: the cosine momentum schedule and the update."""

import math

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import check_unit_interval
from keras_contrast.normalization.factory import deserialize_norm
from keras_contrast.training.contrastive_model import ContrastiveModel


@keras_contrast_export("keras_contrast.training.cosine_momentum")
def cosine_momentum(step, total_steps, base_momentum=0.99, final_momentum=1.0):
    """The momentum of step `step` under the cosine schedule of BYOL and
    MoCo v3: `m = m1 − (m1 − m0)·(cos(π·k/K) + 1)/2`, from `m0` at k = 0 to
    `m1` at k = K (and after).

    Args:
        step: int or integer/float tensor, k (e.g. `optimizer.iterations`).
        total_steps: int > 0, K.
        base_momentum: float in [0, 1], m0.
        final_momentum: float in [0, 1], m1.

    Returns:
        A float32 scalar tensor.

    Example:
    >>> cosine_momentum(0, 100).numpy()   # 0.99
    >>> cosine_momentum(100, 100).numpy() # 1.0
    """
    check_positive_int(total_steps, "total_steps")
    check_unit_interval(base_momentum, "base_momentum")
    check_unit_interval(final_momentum, "final_momentum")
    progress = tf.minimum(tf.cast(step, tf.float32) / float(total_steps), 1.0)
    cosine = (tf.cos(math.pi * progress) + 1.0) / 2.0
    return final_momentum - (final_momentum - base_momentum) * cosine


@keras_contrast_export("keras_contrast.training.ema_update")
def ema_update(targets, sources, momentum):
    """`t ← m·t + (1 − m)·s` for every pair of variables.

    Args:
        targets: list of variables (the momentum encoder's).
        sources: list of variables or tensors of the same shapes.
        momentum: float or scalar tensor m.
    """
    targets, sources = list(targets), list(sources)
    if len(targets) != len(sources):
        raise ValueError(
            f"`targets` and `sources` must pair up, got {len(targets)} and {len(sources)}."
        )
    for target, source in zip(targets, sources):
        if tuple(target.shape) != tuple(source.shape):
            raise ValueError(
                f"EMA target {getattr(target, 'path', target.name)} has shape "
                f"{tuple(target.shape)} but its source has {tuple(source.shape)}."
            )
    for target, source in zip(targets, sources):
        m = tf.cast(momentum, target.dtype)
        target.assign(m * target + (1.0 - m) * tf.cast(source, target.dtype))


@keras_contrast_export("keras_contrast.training.MomentumEncoderModel")
class MomentumEncoderModel(ContrastiveModel):
    """Base of models with a momentum (EMA) copy of `backbone` +
    `projector` as `key_backbone` + `key_projector` (MoCo, MoCo v3).

    Subclasses create the four layers in `__init__` (the key ones with
    `momentum_copy`) and call `build_momentum_encoders` in `build`. The key
    variables are marked non-trainable one by one, so no optimizer sees
    them, while their layers stay `trainable`: Keras runs a BatchNorm layer
    whose `trainable` is False in inference mode, and MoCo's key encoder
    normalises with batch statistics.
    """

    def momentum_pairs(self):
        """(key variable, query variable) for the EMA: the query's trainable
        variables and their counterparts (same structure, same order)."""
        pairs = []
        for query, key in ((self.backbone, self.key_backbone),
                           (self.projector, self.key_projector)):
            for q, k in zip(query.weights, key.weights):
                if q.trainable:
                    pairs.append((k, q))
        return pairs

    def build_momentum_encoders(self, input_shape):
        """Builds both encoders for views `input_shape` `(batch, views, ...)`
        and copies the query weights (moving statistics included) into the
        key encoder. Returns the backbone's output shape."""
        image_shape = (None,) + tuple(input_shape)[2:]
        for layer in (self.backbone, self.key_backbone):
            if not layer.built:
                layer.build(image_shape)
        features = self.backbone.compute_output_shape(image_shape)
        self.projector.build(features)
        self.key_projector.build(features)
        for query, key in ((self.backbone, self.key_backbone),
                           (self.projector, self.key_projector)):
            if len(query.weights) != len(key.weights):
                raise ValueError("The key encoder does not mirror the query encoder.")
            for q, k in zip(query.weights, key.weights):
                k.assign(q)
                k.trainable = False
        return features

    def momentum_update(self, momentum):
        """`key ← m·key + (1 − m)·query` over the query's trainable variables."""
        keys, queries = zip(*self.momentum_pairs())
        ema_update(keys, [q.value for q in queries], momentum)

    @staticmethod
    def deserialize_arguments(config, custom_objects=None):
        """Turns the serialized `backbone` and `projection_norm` of a config
        back into objects."""
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(
            config["backbone"], custom_objects=custom_objects
        )
        config["projection_norm"] = deserialize_norm(config.get("projection_norm"))
        return config


def momentum_copy(layer, name):
    """An unbuilt layer of the same configuration as `layer`, named `name`."""
    copy = keras.layers.deserialize(keras.layers.serialize(layer))
    copy.name = name
    return copy
