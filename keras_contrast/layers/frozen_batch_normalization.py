"""Frozen Batch Normalization: moving statistics in training and inference."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.ghost_batch_normalization import check_axis_type
from keras_contrast.layers.ghost_batch_normalization import check_epsilon
from keras_contrast.layers.ghost_batch_normalization import check_momentum
from keras_contrast.layers.ghost_batch_normalization import resolve_axis


@keras_contrast_export("keras_contrast.layers.FrozenBatchNormalization")
class FrozenBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalization that always uses, and never updates, its moving
    statistics.

    `gamma · (x - moving_mean) / sqrt(moving_variance + epsilon) + beta` in
    training and in inference: a fixed affine map per channel. This is the
    usual BN treatment when fine-tuning a pre-trained backbone with small or
    non-i.i.d. batches, and at the end of a model (docs/design.md §4).

    The statistics are frozen by the layer itself, whatever `trainable` is:
    Keras' `BatchNormalization` switches to inference mode when
    `trainable=False`, which also freezes `gamma`/`beta` and is undone by
    `model.trainable = True`. Here `affine_trainable` alone decides whether
    `gamma`/`beta` are trainable weights (they are created non-trainable
    otherwise, so setting `trainable = True` on the model later does not
    unfreeze them).

    Args:
        axis: int, the channel axis.
        epsilon: float > 0, added to the variance.
        center: bool, add the offset `beta`.
        scale: bool, multiply by the scale `gamma`.
        affine_trainable: bool. Whether `gamma` and `beta` are trained.
        **kwargs: the other arguments of `keras.layers.BatchNormalization`
            (`momentum`, a number in [0, 1], is accepted and kept in the
            config but has no effect; `synchronized` and `renorm` must stay
            False).

    Call arguments:
        inputs: float tensor.
        training: ignored: the output is the same in both modes.
        mask: ignored (accepted for Keras' masking protocol; shaped like
            `inputs` without the last axis, as Keras' BatchNormalization).

    Example:
    >>> bn = keras_contrast.layers.FrozenBatchNormalization(affine_trainable=False)
    >>> bn.set_weights(pretrained_bn.get_weights())

    Reference:
        - [Wu and Johnson, 2021, "Rethinking 'Batch' in BatchNorm"](
          https://arxiv.org/abs/2105.07576), section "Frozen BN"
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        affine_trainable=True,
        **kwargs,
    ):
        if not isinstance(affine_trainable, bool):
            raise ValueError(
                f"`affine_trainable` must be a bool, got {affine_trainable!r}."
            )
        check_axis_type(axis)
        check_epsilon(epsilon)
        if "momentum" in kwargs:
            check_momentum(kwargs["momentum"])
        self.affine_trainable = affine_trainable
        super().__init__(axis=axis, epsilon=epsilon, center=center, scale=scale, **kwargs)
        if self.synchronized or self.renorm:
            raise ValueError(
                "FrozenBatchNormalization computes no batch statistics: "
                "`synchronized` and `renorm` must be False."
            )

    def build(self, input_shape):
        resolve_axis(self.axis, input_shape)
        super().build(input_shape)

    def add_weight(self, *args, **kwargs):
        # Created non-trainable (not flagged later): Layer.trainable = True
        # re-enables every variable created trainable.
        if kwargs.get("name") in ("gamma", "beta"):
            kwargs["trainable"] = self.affine_trainable
        return super().add_weight(*args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["affine_trainable"] = self.affine_trainable
        return config
