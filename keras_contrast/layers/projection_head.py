"""MLP projection and prediction heads (SimCLR, MoCo v3, dual encoders)."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_positive_int
from keras_contrast.layers.batch_normalization import BatchNormalization


def _normalization(norm, name, affine=True):
    """One normalization layer of a head: a name or a callable `(name) ->
    layer`. Heads take the names whose statistics are per feature."""
    if callable(norm):
        return norm(name=name)
    if norm in ("batch", "sync"):
        return BatchNormalization(
            synchronized=norm == "sync", center=affine, scale=affine, name=name
        )
    if norm == "layer":
        return keras.layers.LayerNormalization(center=affine, scale=affine, name=name)
    raise ValueError(
        f'`norm` must be "batch", "sync", "layer", None or a callable returning '
        f"a layer, got {norm!r}."
    )


@keras_contrast_export("keras_contrast.layers.ProjectionHead")
class ProjectionHead(keras.layers.Layer):
    """An MLP head: `Dense → norm → activation` per hidden layer, then a
    last `Dense` (optionally followed by a norm).

    SimCLR's projector is `ProjectionHead((2048, 128))`; MoCo v3's projector
    is `ProjectionHead((4096, 4096, 256), last_norm=True,
    last_norm_affine=False)` and its predictor `ProjectionHead((4096, 256),
    last_norm=True, last_norm_affine=False)`, with `norm="sync"` under a
    strategy (docs/design.md §5). A Dense followed by a norm has no bias (the
    norm's shift replaces it).

    Args:
        units: sequence of ints > 0, the width of every Dense layer; the
            last one is the output dimension.
        norm: `"batch"`, `"sync"` (cross-replica BatchNorm), `"layer"`, None
            (no normalization) or a callable `name -> layer`.
        activation: activation after each hidden layer's norm.
        last_norm: bool. Normalize the output too.
        last_norm_affine: bool. Whether the output norm has a learned
            scale and shift (MoCo v3: False).
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> head = keras_contrast.layers.ProjectionHead((512, 128), norm="sync")
    >>> z = head(features)  # (batch, 128)
    """

    def __init__(
        self,
        units=(2048, 128),
        norm="batch",
        activation="relu",
        last_norm=False,
        last_norm_affine=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        units = tuple(units) if isinstance(units, (list, tuple)) else (units,)
        if not units or any(not is_positive_int(u) for u in units):
            raise ValueError(f"`units` must be a non-empty sequence of ints > 0, got {units!r}.")
        if norm is not None and not callable(norm) and norm not in ("batch", "sync", "layer"):
            _normalization(norm, "check")  # raises the ValueError
        self.units = units
        self.norm = norm
        self.activation = keras.activations.get(activation)
        self.last_norm = bool(last_norm)
        self.last_norm_affine = bool(last_norm_affine)
        self.dense_layers, self.norm_layers = [], []
        for index, width in enumerate(units):
            last = index == len(units) - 1
            normalized = norm is not None and (not last or self.last_norm)
            self.dense_layers.append(
                keras.layers.Dense(width, use_bias=not normalized, name=f"dense_{index}")
            )
            self.norm_layers.append(
                _normalization(
                    norm, f"norm_{index}", affine=not last or self.last_norm_affine
                )
                if normalized
                else None
            )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, norm in zip(self.dense_layers, self.norm_layers):
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            if norm is not None:
                norm.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        last = len(self.dense_layers) - 1
        for index, (dense, norm) in enumerate(zip(self.dense_layers, self.norm_layers)):
            x = dense(x)
            if norm is not None:
                x = norm(x, training=training)
            if index < last:
                x = self.activation(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        config = super().get_config()
        norm = self.norm
        if callable(norm):
            norm = keras.saving.serialize_keras_object(norm)
        config.update(
            {
                "units": list(self.units),
                "norm": norm,
                "activation": keras.activations.serialize(self.activation),
                "last_norm": self.last_norm,
                "last_norm_affine": self.last_norm_affine,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("norm"), dict):
            config["norm"] = keras.saving.deserialize_keras_object(config["norm"])
        return cls(**config)
