"""Export decorator: registers a public symbol for Keras serialization."""

import keras

PACKAGE = "keras_contrast"


def keras_contrast_export(path):
    """Marks `symbol` as public API under `path` and registers it with Keras.

    Registration makes the class round-trip through `get_config`,
    `keras.saving.serialize_keras_object` and `.keras` files under the name
    `"keras_contrast>ClassName"`.

    Args:
        path: str. The public import path, e.g. `"keras_contrast.losses.DCL"`.
    """

    def decorator(symbol):
        if isinstance(symbol, type):
            keras.saving.register_keras_serializable(package=PACKAGE)(symbol)
        symbol._keras_contrast_export_path = path
        return symbol

    return decorator
