"""Vision Transformer backbone (ViT-Tiny/Small/Base) with pluggable norm and
an optionally frozen random patch projection (MoCo v3)."""

import keras
import numpy as np

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_number
from keras_contrast.normalization.factory import deserialize_norm
from keras_contrast.normalization.factory import normalization_layer
from keras_contrast.normalization.factory import serialize_norm

# variant -> (hidden_dim, depth, num_heads); mlp_dim = 4 x hidden_dim.
VARIANTS = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
_POSITION_EMBEDDINGS = ("learned", "sincos")


def sincos_position_embedding(grid_size, hidden_dim, temperature=10000.0):
    """Fixed 2-D sine-cosine position embedding of a `grid_size x
    grid_size` patch grid, `(grid_size**2, hidden_dim)` float32 (MoCo v3's
    ViT): a quarter of the channels each for sin/cos of the column and of
    the row index, at frequencies `temperature ** (-i / (hidden_dim / 4))`.
    """
    if hidden_dim % 4:
        raise ValueError(
            f"A sin-cos position embedding needs `hidden_dim` divisible by 4, got {hidden_dim}."
        )
    quarter = hidden_dim // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    out_w = cols.reshape(-1, 1) * omega[None]
    out_h = rows.reshape(-1, 1) * omega[None]
    table = np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1)
    return table.astype("float32")


@keras_contrast_export("keras_contrast.models.ViTTokens")
class ViTTokens(keras.layers.Layer):
    """Prepends a learned class token to patch tokens and adds the position
    embedding (learned, or fixed 2-D sin-cos with a zero class position).

    Args:
        num_patches: tokens per image (a square grid).
        position_embedding: `"learned"` or `"sincos"`.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, num_patches, position_embedding="learned", **kwargs):
        super().__init__(**kwargs)
        if position_embedding not in _POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {_POSITION_EMBEDDINGS}, "
                f"got {position_embedding!r}."
            )
        self.num_patches = int(num_patches)
        self.position_embedding = position_embedding

    def build(self, input_shape):
        dim = input_shape[-1]
        self.class_token = self.add_weight(
            shape=(1, 1, dim),
            initializer=keras.initializers.RandomNormal(stddev=1e-6),
            name="class_token",
        )
        if self.position_embedding == "learned":
            self.positions = self.add_weight(
                shape=(1, self.num_patches + 1, dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name="positions",
            )
        else:
            grid = int(round(self.num_patches**0.5))
            table = np.concatenate(
                [np.zeros((1, dim), "float32"), sincos_position_embedding(grid, dim)]
            )
            self.positions = self.add_weight(
                shape=(1, self.num_patches + 1, dim),
                initializer=keras.initializers.Constant(table[None]),
                trainable=False,
                name="positions",
            )

    def call(self, tokens):
        batch = keras.ops.shape(tokens)[0]
        cls = keras.ops.broadcast_to(
            keras.ops.cast(self.class_token, tokens.dtype), (batch, 1, tokens.shape[-1])
        )
        tokens = keras.ops.concatenate([cls, tokens], axis=1)
        return tokens + keras.ops.cast(self.positions, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_patches + 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_patches": self.num_patches, "position_embedding": self.position_embedding}
        )
        return config


def _transformer_block(x, prefix, heads, mlp_dim, dropout, norm, norm_kwargs):
    """One pre-norm block: x + attention(norm(x)), then x + MLP(norm(x))."""
    hidden = x.shape[-1]
    y = normalization_layer(norm, name=f"{prefix}_norm1", **norm_kwargs)(x)
    y = keras.layers.MultiHeadAttention(
        heads, hidden // heads, dropout=dropout, name=f"{prefix}_attention"
    )(y, y)
    x = keras.layers.Add(name=f"{prefix}_add1")([x, y])
    y = normalization_layer(norm, name=f"{prefix}_norm2", **norm_kwargs)(x)
    y = keras.layers.Dense(mlp_dim, activation="gelu", name=f"{prefix}_mlp1")(y)
    y = keras.layers.Dropout(dropout, name=f"{prefix}_dropout1")(y)
    y = keras.layers.Dense(hidden, name=f"{prefix}_mlp2")(y)
    y = keras.layers.Dropout(dropout, name=f"{prefix}_dropout2")(y)
    return keras.layers.Add(name=f"{prefix}_add2")([x, y])


@keras_contrast_export("keras_contrast.models.ViTBackbone")
class ViTBackbone(keras.Model):
    """Vision Transformer mapping images to the class-token feature.

    `(batch, image_size, image_size, num_channels) -> (batch, hidden_dim)`:
    a patch projection (a convolution with kernel = stride = patch size),
    a class token and position embedding, `depth` pre-norm Transformer
    blocks (multi-head self-attention and a GELU MLP, each residual), and a
    final norm; the output is the class token.

    `freeze_patch_projection=True` keeps the patch → token projection at its
    random initialisation (the layer is not trainable, so the optimizer
    never sees it): MoCo v3's fix for the training instability that starts
    in the first layer's gradients (docs/design.md §5).

    Args:
        variant: `"tiny"` (192 wide, 3 heads), `"small"` (384, 6) or
            `"base"` (768, 12), all 12 blocks deep with MLP 4x wide.
        hidden_dim: overrides the variant's width.
        depth: overrides the number of blocks.
        num_heads: overrides the number of attention heads.
        mlp_dim: overrides the MLP width (default 4 x hidden_dim).
        image_size: side of the square input image.
        patch_size: side of a square patch; must divide `image_size`.
        num_channels: image channels.
        norm: normalization name or callable (default `"layer"`; any
            `keras_contrast.normalization.normalization_layer` name works,
            e.g. `"batch"` normalises every feature over batch and tokens).
        norm_kwargs: dict of arguments for every norm layer (default
            `{"epsilon": 1e-6}` for `"layer"`).
        freeze_patch_projection: bool. Keep the patch projection random.
        position_embedding: `"learned"` or `"sincos"` (fixed 2-D, as MoCo v3).
        dropout: number in [0, 1), the dropout rate in the MLPs and after
            attention.
        name: model name.
        **kwargs: `keras.Model` arguments.

    Example:
    >>> backbone = ViTBackbone("small", image_size=224, freeze_patch_projection=True)
    >>> features = backbone(images)  # (batch, 384)
    """

    def __init__(
        self,
        variant="tiny",
        hidden_dim=None,
        depth=None,
        num_heads=None,
        mlp_dim=None,
        image_size=224,
        patch_size=16,
        num_channels=3,
        norm="layer",
        norm_kwargs=None,
        freeze_patch_projection=False,
        position_embedding="learned",
        dropout=0.0,
        name=None,
        **kwargs,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {sorted(VARIANTS)}, got {variant!r}.")
        base_dim, base_depth, base_heads = VARIANTS[variant]
        hidden = base_dim if hidden_dim is None else hidden_dim
        blocks = base_depth if depth is None else depth
        heads = base_heads if num_heads is None else num_heads
        mlp = 4 * hidden if mlp_dim is None else mlp_dim
        for arg, value in (("hidden_dim", hidden), ("depth", blocks), ("num_heads", heads),
                           ("mlp_dim", mlp), ("image_size", image_size),
                           ("patch_size", patch_size), ("num_channels", num_channels)):
            check_positive_int(value, arg, "an integer > 0")
        if image_size % patch_size:
            raise ValueError(
                f"`patch_size`={patch_size} must divide `image_size`={image_size}."
            )
        if hidden % heads:
            raise ValueError(f"`num_heads`={heads} must divide `hidden_dim`={hidden}.")
        if not is_number(dropout) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")
        if norm_kwargs is not None and not isinstance(norm_kwargs, dict):
            raise ValueError(
                f"`norm_kwargs` must be a dict of normalization arguments or None, "
                f"got {norm_kwargs!r}."
            )
        if norm_kwargs is None:
            norm_kwargs = {"epsilon": 1e-6} if norm == "layer" else {}
        norm_kwargs = dict(norm_kwargs)
        num_patches = (image_size // patch_size) ** 2

        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        projection = keras.layers.Conv2D(
            hidden, patch_size, strides=patch_size, name="patch_projection"
        )
        if freeze_patch_projection:
            projection.trainable = False
        x = projection(inputs)
        x = keras.layers.Reshape((num_patches, hidden), name="patch_tokens")(x)
        x = ViTTokens(num_patches, position_embedding, name="tokens")(x)
        for index in range(blocks):
            x = _transformer_block(x, f"block{index + 1}", heads, mlp, dropout, norm,
                                   norm_kwargs)
        x = normalization_layer(norm, name="final_norm", **norm_kwargs)(x)
        outputs = x[:, 0]
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.variant = variant
        self.hidden_dim = hidden
        self.vit_depth = blocks
        self.num_heads = heads
        self.mlp_dim = mlp
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.norm = norm
        self.norm_kwargs = norm_kwargs
        self.freeze_patch_projection = bool(freeze_patch_projection)
        self.position_embedding = position_embedding
        self.dropout = float(dropout)
        self.output_dim = hidden

    @property
    def patch_projection(self):
        return self.get_layer("patch_projection")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "variant": self.variant,
            "hidden_dim": self.hidden_dim,
            "depth": self.vit_depth,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "norm": serialize_norm(self.norm),
            "norm_kwargs": self.norm_kwargs,
            "freeze_patch_projection": self.freeze_patch_projection,
            "position_embedding": self.position_embedding,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["norm"] = deserialize_norm(config.get("norm"))
        return cls(**config)
