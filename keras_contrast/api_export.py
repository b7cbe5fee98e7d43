"""Export decorator: marks a public symbol, records it in the public API
registry and registers classes for Keras serialization."""

import importlib
import warnings

import keras

PACKAGE = "keras_contrast"

# Public path ("keras_contrast.layers.ProjectionHead") -> exported object.
# `tests/api_test.py` checks that it agrees with each subpackage's
# `__all__`; `tools/generate_api.py` writes docs/api.md from it.
_REGISTRY = {}


def keras_contrast_export(path):
    """Marks `symbol` as public API under `path` and registers it with Keras.

    Classes are registered so that they round-trip through `get_config`,
    `keras.saving.serialize_keras_object` and `.keras` files under the name
    `"keras_contrast>ClassName"` (classes without `get_config`, such as
    callbacks and mixins, are recorded only). Constants (tuples, dicts) are recorded in
    the registry only: call the decorator on them,
    `keras_contrast_export("keras_contrast.data.NAMES")(NAMES)`.

    Args:
        path: str. The public import path, e.g. `"keras_contrast.losses.DCL"`.
    """

    def decorator(symbol):
        if path in _REGISTRY and _REGISTRY[path] is not symbol:
            raise ValueError(f"Public path {path!r} is already exported by {_REGISTRY[path]!r}.")
        if (
            isinstance(symbol, type)
            and hasattr(symbol, "get_config")
            and not any(existing is symbol for existing in _REGISTRY.values())
        ):
            keras.saving.register_keras_serializable(package=PACKAGE)(symbol)
        _REGISTRY[path] = symbol
        try:
            symbol._keras_contrast_export_path = path
        except (AttributeError, TypeError):  # tuples, dicts: registry only
            pass
        return symbol

    return decorator


def exported_symbols():
    """A copy of the registry: public path -> exported object."""
    return dict(_REGISTRY)


def deprecated_aliases(module_name, aliases):
    """A module `__getattr__` that serves names leaving the public API.

    Each access warns `DeprecationWarning` naming the new place and returns
    the object that lives there, for one release.

    Args:
        module_name: the public module, e.g. `"keras_contrast.data"`.
        aliases: dict, old name -> full path of its new home, e.g.
            `{"read_idx": "keras_contrast.data.fashion_mnist.read_idx"}`; the
            warning calls it internal unless that path is public.

    Returns:
        A function to assign to the module's `__getattr__`.
    """

    def __getattr__(name):
        if name not in aliases:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        target = aliases[name]
        home, _, attribute = target.rpartition(".")
        where = "" if target in _REGISTRY else " (internal)"
        warnings.warn(
            f"`{module_name}.{name}` is deprecated and will be removed in the next "
            f"release; use `{target}`{where} instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), attribute)

    return __getattr__
