"""keras_contrast: large-batch contrastive learning for Keras 3 / TensorFlow."""

import os
import sys

# The library is built on tf.distribute; Keras must use its TensorFlow backend.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

if os.path.basename(sys.argv[0] if sys.argv else "") in ("keras-contrast", "-m"):
    # The command line (`keras-contrast`, `python -m keras_contrast`): its
    # package keeps TensorFlow's C++ start-up chatter off stderr, which must
    # happen before the `import keras` below (keras_contrast/cli/_startup.py).
    import importlib

    importlib.import_module("keras_contrast.cli")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_contrast needs the TensorFlow backend of Keras (it builds on "
        f"tf.distribute), but Keras runs on {keras.backend.backend()!r}. Set "
        "KERAS_BACKEND=tensorflow before importing keras."
    )

from keras_contrast import callbacks  # noqa: E402
from keras_contrast import data  # noqa: E402
from keras_contrast import distribute  # noqa: E402
from keras_contrast import evaluation  # noqa: E402
from keras_contrast import export  # noqa: E402
from keras_contrast import layers  # noqa: E402
from keras_contrast import losses  # noqa: E402
from keras_contrast import models  # noqa: E402
from keras_contrast import normalization  # noqa: E402
from keras_contrast import optimizers  # noqa: E402
from keras_contrast import training  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "data",
    "distribute",
    "evaluation",
    "export",
    "layers",
    "losses",
    "models",
    "normalization",
    "optimizers",
    "training",
    "__version__",
]
