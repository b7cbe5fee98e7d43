"""ResNet-18/34/50 backbones with the normalization as an argument."""

import math

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.normalization.factory import deserialize_norm
from keras_contrast.normalization.factory import normalization_layer
from keras_contrast.normalization.factory import serialize_norm

# depth -> (blocks per stage, bottleneck)
_DEPTHS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}
_STEMS = ("imagenet", "cifar")


def _norm(norm, norm_kwargs, channels, name, zero_gamma=False):
    kwargs = dict(norm_kwargs)
    if norm == "group" and "groups" not in kwargs:
        kwargs["groups"] = math.gcd(32, channels)
    if zero_gamma:
        kwargs["gamma_initializer"] = "zeros"
    return normalization_layer(norm, name=name, **kwargs)


def _conv(filters, kernel, stride, name):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


@keras_contrast_export("keras_contrast.models.ResNetBackbone")
class ResNetBackbone(keras.Model):
    """ResNet-18, -34 or -50 mapping images to pooled features.

    A functional Keras model: `(batch, H, W, C) -> (batch, output_dim)`
    after global average pooling, with every normalization layer made by
    `keras_contrast.normalization.normalization_layer(norm, **norm_kwargs)`,
    so the same network trains with per-replica, synchronised, ghost,
    frozen, split, layer or group normalization. ResNet-18/34 use basic
    blocks, ResNet-50 bottleneck blocks (stride on the 3x3 convolution,
    "ResNet v1.5"); a 1x1 convolution + norm projects the shortcut when the
    shape changes.

    Args:
        depth: 18, 34 or 50.
        stem: `"imagenet"` (7x7 stride-2 convolution and 3x3 stride-2 max
            pooling) or `"cifar"` (3x3 stride-1 convolution, no pooling: for
            32x32 and smaller images, as SimCLR's CIFAR-10 experiments).
        norm: a normalization name (`"batch"`, `"sync"`, `"ghost"`,
            `"renorm"`, `"frozen"`, `"split"`, `"layer"`, `"group"`) or a
            callable `(name=...) -> layer`.
        norm_kwargs: dict of arguments for every norm layer (e.g.
            `{"virtual_batch_size": 32}` for `"ghost"`, `{"momentum": 0.9}`).
            `"group"` defaults to `groups = gcd(32, channels)`.
        width: channels of the first stage (64 in the paper); the stages
            have width x 1, 2, 4, 8 (x 4 at the output of a bottleneck).
        input_shape: shape of one image, e.g. `(32, 32, 3)`: height and
            width ints > 0 or None (any size), channels an int > 0.
        zero_init_residual: bool. Initialise the last norm scale of every
            residual block to 0, so each block starts as the identity.
        name: model name.
        **kwargs: `keras.Model` arguments.

    Example:
    >>> backbone = ResNetBackbone(18, stem="cifar", norm="sync", input_shape=(32, 32, 3))
    >>> features = backbone(images)  # (batch, 512)
    """

    def __init__(
        self,
        depth=18,
        stem="imagenet",
        norm="batch",
        norm_kwargs=None,
        width=64,
        input_shape=(None, None, 3),
        zero_init_residual=False,
        name=None,
        **kwargs,
    ):
        if not is_int(depth) or depth not in _DEPTHS:
            raise ValueError(f"`depth` must be one of {sorted(_DEPTHS)}, got {depth!r}.")
        if stem not in _STEMS:
            raise ValueError(f"`stem` must be one of {_STEMS}, got {stem!r}.")
        check_positive_int(width, "width", "an integer > 0")
        input_shape = _check_input_shape(input_shape)
        if norm_kwargs is not None and not isinstance(norm_kwargs, dict):
            raise ValueError(
                f"`norm_kwargs` must be a dict of normalization arguments or None, "
                f"got {norm_kwargs!r}."
            )
        norm_kwargs = dict(norm_kwargs or {})
        blocks, bottleneck = _DEPTHS[depth]

        inputs = keras.Input(input_shape, name="images")
        if stem == "imagenet":
            x = _conv(width, 7, 2, "stem_conv")(inputs)
            x = _norm(norm, norm_kwargs, width, "stem_norm")(x)
            x = keras.layers.ReLU(name="stem_relu")(x)
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        else:
            x = _conv(width, 3, 1, "stem_conv")(inputs)
            x = _norm(norm, norm_kwargs, width, "stem_norm")(x)
            x = keras.layers.ReLU(name="stem_relu")(x)
        for stage, count in enumerate(blocks):
            filters = width * 2**stage
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                prefix = f"stage{stage + 1}_block{block + 1}"
                block_fn = _bottleneck_block if bottleneck else _basic_block
                x = block_fn(x, filters, stride, prefix, norm, norm_kwargs, zero_init_residual)
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.depth = depth
        self.stem = stem
        self.norm = norm
        self.norm_kwargs = norm_kwargs
        self.width = width
        self.image_shape = input_shape
        self.zero_init_residual = bool(zero_init_residual)
        self.output_dim = int(outputs.shape[-1])

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "stem": self.stem,
            "norm": serialize_norm(self.norm),
            "norm_kwargs": self.norm_kwargs,
            "width": self.width,
            "input_shape": list(self.image_shape),
            "zero_init_residual": self.zero_init_residual,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["norm"] = deserialize_norm(config.get("norm"))
        return cls(**config)


def _check_input_shape(input_shape):
    """`input_shape` as a tuple `(height, width, channels)`: height and width
    ints > 0 or None (any size), channels an int > 0."""
    expected = (
        "`input_shape` must be (height, width, channels) with height and width "
        "ints > 0 or None and channels an int > 0"
    )
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise ValueError(f"{expected}, got {input_shape!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{expected}, got {input_shape!r}.")
    *spatial, channels = shape
    def positive(value):
        return is_int(value) and value > 0

    if not positive(channels) or not all(side is None or positive(side) for side in spatial):
        raise ValueError(f"{expected}, got {input_shape!r}.")
    return tuple(None if side is None else int(side) for side in spatial) + (int(channels),)


def _shortcut(x, channels, stride, prefix, norm, norm_kwargs):
    if stride == 1 and x.shape[-1] == channels:
        return x
    x = _conv(channels, 1, stride, f"{prefix}_shortcut_conv")(x)
    return _norm(norm, norm_kwargs, channels, f"{prefix}_shortcut_norm")(x)


def _basic_block(x, filters, stride, prefix, norm, norm_kwargs, zero_init):
    shortcut = _shortcut(x, filters, stride, prefix, norm, norm_kwargs)
    y = _conv(filters, 3, stride, f"{prefix}_conv1")(x)
    y = _norm(norm, norm_kwargs, filters, f"{prefix}_norm1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(filters, 3, 1, f"{prefix}_conv2")(y)
    y = _norm(norm, norm_kwargs, filters, f"{prefix}_norm2", zero_gamma=zero_init)(y)
    y = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _bottleneck_block(x, filters, stride, prefix, norm, norm_kwargs, zero_init):
    channels = 4 * filters
    shortcut = _shortcut(x, channels, stride, prefix, norm, norm_kwargs)
    y = _conv(filters, 1, 1, f"{prefix}_conv1")(x)
    y = _norm(norm, norm_kwargs, filters, f"{prefix}_norm1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(filters, 3, stride, f"{prefix}_conv2")(y)
    y = _norm(norm, norm_kwargs, filters, f"{prefix}_norm2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = _conv(channels, 1, 1, f"{prefix}_conv3")(y)
    y = _norm(norm, norm_kwargs, channels, f"{prefix}_norm3", zero_gamma=zero_init)(y)
    y = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)
