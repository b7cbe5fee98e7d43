"""One normalization layer by name: the `norm=` argument of the backbones."""

import keras

from keras_contrast import layers as kc_layers
from keras_contrast.api_export import keras_contrast_export
from keras_contrast.normalization.convert import KINDS

NORMALIZATIONS = KINDS + ("layer", "group")
keras_contrast_export("keras_contrast.normalization.NORMALIZATIONS")(NORMALIZATIONS)

_COMMON = ("epsilon", "center", "scale", "gamma_initializer", "beta_initializer")
_BATCH = _COMMON + ("momentum",)
_ACCEPTED = {
    "batch": _BATCH,
    "sync": _BATCH,
    "renorm": _BATCH + ("renorm_clipping", "renorm_momentum"),
    "ghost": _BATCH + ("virtual_batch_size",),
    "frozen": _COMMON + ("affine_trainable",),
    "split": _BATCH + ("num_domains", "separate_affine"),
    "layer": _COMMON,
    "group": _COMMON + ("groups",),
}
_REQUIRED = {"ghost": "virtual_batch_size", "split": "num_domains", "group": "groups"}


@keras_contrast_export("keras_contrast.normalization.normalization_layer")
def normalization_layer(norm, name=None, **kwargs):
    """Creates the normalization layer named `norm` (docs/design.md
    §4.1).

    Args:
        norm: one of `"batch"` (`keras_contrast.layers.BatchNormalization`),
            `"sync"` (the same, `synchronized=True`: statistics over all
            replicas), `"renorm"` (Batch Renormalization), `"ghost"`
            (`GhostBatchNormalization`, needs `virtual_batch_size`),
            `"frozen"` (`FrozenBatchNormalization`), `"split"`
            (`SplitBatchNormalization`, needs `num_domains`), `"layer"`
            (`keras.layers.LayerNormalization`), `"group"`
            (`keras.layers.GroupNormalization`, needs `groups`); or a
            callable `(name=..., **kwargs) -> layer`.
        name: the layer's name.
        **kwargs: arguments of that layer (`momentum`, `epsilon`, `center`,
            `scale`, and the kind's own: `virtual_batch_size`,
            `num_domains`, `groups`, ...).

    Returns:
        A new, unbuilt `keras.layers.Layer` normalizing the last axis.

    Example:
    >>> bn = normalization_layer("ghost", virtual_batch_size=32, momentum=0.9)
    >>> ln = normalization_layer("layer", epsilon=1e-6)
    """
    if callable(norm) and not isinstance(norm, str):
        layer = norm(name=name, **kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"`norm` was a callable, but it returned {type(layer).__name__}, "
                "not a keras.layers.Layer."
            )
        return layer
    if norm not in NORMALIZATIONS:
        raise ValueError(
            f"`norm` must be one of {NORMALIZATIONS} or a callable returning a "
            f"layer, got {norm!r}."
        )
    unknown = sorted(set(kwargs) - set(_ACCEPTED[norm]))
    if unknown:
        raise ValueError(
            f"norm={norm!r} does not take {unknown}; it takes {list(_ACCEPTED[norm])}."
        )
    required = _REQUIRED.get(norm)
    if required and required not in kwargs:
        raise ValueError(f"norm={norm!r} needs `{required}` (pass it in the norm arguments).")
    if norm in ("batch", "sync", "renorm"):
        return kc_layers.BatchNormalization(
            synchronized=norm == "sync", renorm=norm == "renorm", name=name, **kwargs
        )
    if norm == "ghost":
        return kc_layers.GhostBatchNormalization(name=name, **kwargs)
    if norm == "frozen":
        return kc_layers.FrozenBatchNormalization(name=name, **kwargs)
    if norm == "split":
        return kc_layers.SplitBatchNormalization(name=name, **kwargs)
    if norm == "layer":
        return keras.layers.LayerNormalization(name=name, **kwargs)
    return keras.layers.GroupNormalization(name=name, **kwargs)


def serialize_norm(norm):
    """A `norm=` argument as config: names stay, callables are serialized."""
    if callable(norm) and not isinstance(norm, str):
        return keras.saving.serialize_keras_object(norm)
    return norm


def deserialize_norm(value):
    """Inverse of `serialize_norm`."""
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    return value
