"""Replace the BatchNormalization layers of an existing Keras model."""

import keras
import numpy as np

from keras_contrast import layers as kc_layers
from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.statistics import domain_scope

KINDS = ("batch", "sync", "ghost", "renorm", "frozen", "split")
_KIND_ARGUMENTS = {
    "batch": (),
    "sync": (),
    "ghost": ("virtual_batch_size",),
    "renorm": ("renorm_clipping", "renorm_momentum"),
    "frozen": ("affine_trainable",),
    "split": ("num_domains", "separate_affine"),
}
_REQUIRED = {"ghost": ("virtual_batch_size",), "split": ("num_domains",)}
# Keras BN arguments that only the Keras/keras_contrast BatchNormalization
# itself understands; the other kinds take the rest of the config.
_BATCH_NORM_ONLY = ("synchronized", "renorm", "renorm_clipping", "renorm_momentum")
# Arguments of the keras_contrast kinds that plain BatchNormalization lacks
# (a model may already hold a ghost or frozen BN).
_KIND_ONLY = ("virtual_batch_size", "affine_trainable")


def _check_arguments(to, kwargs):
    if to not in KINDS:
        raise ValueError(f"`to` must be one of {KINDS}, got {to!r}.")
    unknown = set(kwargs) - set(_KIND_ARGUMENTS[to])
    if unknown:
        raise ValueError(
            f"convert_batch_norm(to={to!r}) does not take {sorted(unknown)}; "
            f"it takes {list(_KIND_ARGUMENTS[to]) or 'no extra arguments'}."
        )
    for name in _REQUIRED.get(to, ()):
        if name not in kwargs:
            raise ValueError(f"convert_batch_norm(to={to!r}) needs `{name}`.")


def _new_layer(old, to, kwargs):
    """The replacement of BN layer `old`, unbuilt, with the same config."""
    config = old.get_config()
    for key in _KIND_ONLY:
        config.pop(key, None)
    if to in ("batch", "sync", "renorm"):
        # Exactly the target's flags: "batch" resets `synchronized` and
        # `renorm`, "renorm" resets `synchronized`, "sync" resets `renorm`.
        config["synchronized"] = to == "sync"
        config["renorm"] = to == "renorm"
        if to == "renorm":
            config.update(kwargs)
        else:
            config.pop("renorm_clipping", None)
            config.pop("renorm_momentum", None)
        return kc_layers.BatchNormalization.from_config(config)
    for key in _BATCH_NORM_ONLY:
        config.pop(key, None)
    if to == "ghost":
        return kc_layers.GhostBatchNormalization(**config, **kwargs)
    if to == "frozen":
        return kc_layers.FrozenBatchNormalization(**config, **kwargs)
    return kc_layers.SplitBatchNormalization(**config, **kwargs)


def _copy_batch_norm_state(old, new):
    """Copies γ, β and the moving statistics of `old` into the built `new`
    (into every per-domain layer of a split BN)."""
    domain_layers = list(getattr(new, "domain_layers", None) or [])
    for name in ("gamma", "beta"):
        source = getattr(old, name, None)
        if source is None:
            continue
        value = keras.ops.convert_to_numpy(source)
        if getattr(new, name, None) is not None:
            getattr(new, name).assign(value)
        for layer in domain_layers:
            if getattr(layer, name, None) is not None:
                getattr(layer, name).assign(value)
    mean = keras.ops.convert_to_numpy(old.moving_mean)
    variance = keras.ops.convert_to_numpy(old.moving_variance)
    for target in domain_layers or [new]:
        target.moving_mean.assign(mean)
        target.moving_variance.assign(variance)
        if getattr(target, "renorm", False):
            stddev = np.sqrt(variance + target.epsilon)
            target.moving_stddev.assign(stddev)
            target.renorm_mean.assign(mean)
            target.renorm_stddev.assign(stddev)


def _is_graph_model(layer):
    return isinstance(layer, keras.Model) and (
        isinstance(layer, keras.Sequential) or hasattr(layer, "_nodes_by_depth")
    )


def _hidden_batch_norms(layer):
    """BN layers inside a layer whose structure clone_model cannot see."""
    return [
        sub.name
        for sub in layer._flatten_layers(include_self=False)
        if isinstance(sub, keras.layers.BatchNormalization)
    ]


@keras_contrast_export("keras_contrast.normalization.convert_batch_norm")
def convert_batch_norm(model, to, **kwargs):
    """Returns a copy of `model` with every BatchNormalization replaced.

    Every `keras.layers.BatchNormalization` (including subclasses) of a
    functional or `Sequential` model, nested models included (e.g.
    `keras.applications.ResNet50(weights=None)`), becomes the chosen kind;
    all weights, γ/β and moving statistics are copied, so the kinds that do
    not change inference ("batch", "sync", "renorm", "ghost", "frozen", and
    "split" for every domain) give the same inference outputs. The
    original model is left untouched and shares no variables with the copy.
    Call it inside `strategy.scope()` to train the copy under a strategy.

    Kinds (docs/design.md §4.1):
        "batch": `keras_contrast.layers.BatchNormalization` (honours
            `frozen_statistics()`), with `synchronized=False` and
            `renorm=False` whatever the source layer had.
        "sync": the same with `synchronized=True` (cross-replica
            statistics) and `renorm=False`.
        "renorm": the same with `renorm=True` (Batch Renormalization) and
            `synchronized=False`; extra kwargs `renorm_clipping`,
            `renorm_momentum` (a renorm source keeps its own unless given).
            The renorm statistics start from the copied moving statistics.
        "ghost": `GhostBatchNormalization`, kwarg `virtual_batch_size`.
        "frozen": `FrozenBatchNormalization`, kwarg `affine_trainable`.
        "split": `SplitBatchNormalization`, kwargs `num_domains`,
            `separate_affine`. The returned model takes `[inputs, domain]`
            (domain ids `(batch,)` int32) and routes the ids to every split
            layer; each domain starts from the copied statistics.

    Args:
        model: a built functional or `Sequential` Keras model.
        to: str, one of the kinds above.
        **kwargs: the kind's extra arguments.

    Returns:
        A new Keras model.

    Every converted layer keeps the source's `axis`, `momentum`, `epsilon`,
    `center`, `scale`, initializers, regularizers, constraints and dtype, and
    gets exactly the target kind's flags.

    Raises:
        ValueError: unknown kind or argument, an unbuilt model, a BN layer
            inside a subclassed layer that cannot be rewritten, or a
            `SplitBatchNormalization` in the model (its per-domain
            statistics have no single counterpart; the error names it).

    Example:
    >>> with strategy.scope():
    ...     model = convert_batch_norm(keras.applications.ResNet50(weights=None),
    ...                                to="sync")
    """
    _check_arguments(to, kwargs)
    if not _is_graph_model(model):
        raise ValueError(
            "`model` must be a functional or Sequential Keras model, got "
            f"{type(model).__name__}."
        )
    if not model.built:
        raise ValueError("`model` must be built (call it or give it an input shape).")
    pairs = []

    def clone_layer(layer):
        if not isinstance(layer, keras.layers.Layer):
            # An operation of the graph (`x[:, 0]`, the `not_equal` of a
            # `Masking` mask): stateless, as Keras' own clone_model does.
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, kc_layers.SplitBatchNormalization):
            raise ValueError(
                f"Layer {layer.name!r} is a SplitBatchNormalization: it keeps "
                f"{layer.num_domains} sets of statistics, one per domain, which "
                f"convert_batch_norm(to={to!r}) cannot map onto the new layers. "
                "Convert the model it was made from, or build the model again "
                "with the normalization wanted and copy the weights of one "
                "domain from the layer's `domain_layers`."
            )
        if isinstance(layer, keras.layers.BatchNormalization):
            new = _new_layer(layer, to, kwargs)
            pairs.append((layer, new, True))
            return new
        hidden = _hidden_batch_norms(layer)
        if hidden:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) holds BatchNorm "
                f"layers {hidden} that convert_batch_norm cannot reach: only "
                "functional and Sequential structure is rewritten."
            )
        new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new, False))
        return new

    converted = keras.models.clone_model(
        model, clone_function=clone_layer, recursive=True
    )
    for old, new, is_batch_norm in pairs:
        if is_batch_norm:
            _copy_batch_norm_state(old, new)
        elif old.weights:
            new.set_weights(old.get_weights())
    if to == "split":
        return DomainRoutedModel(converted, name=f"{model.name}_split")
    return converted


@keras_contrast_export("keras_contrast.normalization.freeze_batch_norm")
def freeze_batch_norm(model, affine_trainable=False):
    """Returns a copy of `model` whose BN layers are `FrozenBatchNormalization`.

    The copy normalises with the moving statistics in training too and never
    updates them (fine-tuning, docs/design.md §4); γ/β train only if
    `affine_trainable`. Unlike `layer.trainable = False`, which Keras also
    uses to switch BN to inference mode, this leaves every other layer
    trainable and is explicit about the statistics.

    Args:
        model: a built functional or Sequential model.
        affine_trainable: bool.

    Example:
    >>> frozen = keras_contrast.normalization.freeze_batch_norm(backbone)
    """
    return convert_batch_norm(model, to="frozen", affine_trainable=affine_trainable)


@keras_contrast_export("keras_contrast.normalization.DomainRoutedModel")
class DomainRoutedModel(keras.Model):
    """Calls a model on `[inputs, domain]`, routing `domain` to its split BNs.

    Keras passes only `training` and `mask` to nested layers; this wrapper
    makes the domain ids of its second input visible to every
    `SplitBatchNormalization` inside the wrapped model for the duration of
    the call (`keras_contrast.layers.domain_scope`).

    Args:
        model: the wrapped model, whose split BN layers take their ids from
            the scope.

    Call arguments:
        inputs: `[x, domain]` (or a dict with keys "inputs" and "domain"):
            `x` as the wrapped model takes it, `domain` int ids `(batch,)`.
        training: bool.
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def build(self, input_shape=None):
        # The wrapped model is built (and its variables exist) already.
        self.built = True

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            x, domain = inputs["inputs"], inputs["domain"]
        else:
            x, domain = inputs
        with domain_scope(domain):
            return self.model(x, training=training)

    def get_config(self):
        config = super().get_config()
        config["model"] = keras.layers.serialize(self.model)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.layers.deserialize(config["model"])
        return cls(**config)
