"""keras_contrast: large-batch contrastive learning for Keras 3 / TensorFlow."""

import os
import sys

# The library is built on tf.distribute; Keras must use its TensorFlow backend.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _import_keras_quietly():
    """Imports Keras (and TensorFlow) with file descriptor 2 sent to /dev/null.

    TensorFlow 2.21 logs through absl before absl is initialised, which ignores
    TF_CPP_MIN_LOG_LEVEL: on CPUs with AMX it prints "oneDNN custom operations
    are on" at import. The command line promises one-line errors, so while it
    imports TensorFlow the C++ stderr goes nowhere (Python errors still raise).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if os.path.basename(sys.argv[0] if sys.argv else "") in ("keras-contrast", "-m"):
    # The command line: keep TensorFlow's C++ start-up chatter off stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0"):
        _import_keras_quietly()

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
