"""keras_contrast: large-batch contrastive learning for Keras 3 / TensorFlow."""

import os

# The library is built on tf.distribute; Keras must use its TensorFlow backend.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_contrast import distribute  # noqa: E402
from keras_contrast import layers  # noqa: E402
from keras_contrast import losses  # noqa: E402

__version__ = "0.1.0"

__all__ = ["distribute", "layers", "losses", "__version__"]
