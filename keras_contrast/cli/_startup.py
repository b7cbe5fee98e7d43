"""The command's start-up: TensorFlow's C++ chatter kept off stderr.

The command promises one-line errors on stderr. TensorFlow 2.21 logs through
absl before absl is initialised, which ignores `TF_CPP_MIN_LOG_LEVEL`: on
CPUs with AMX it prints "oneDNN custom operations are on" when it is
imported. This module runs first when `keras_contrast.cli` is imported; when
Keras is not imported yet, the process is the command itself
(`keras_contrast/__init__.py` imports this package before its own
`import keras` when it runs as `keras-contrast` or `python -m
keras_contrast`), and Keras and TensorFlow are then imported here with file
descriptor 2 sent to /dev/null. Imported from a program that already holds
Keras (`from keras_contrast import cli`), it does nothing.
"""

import os
import sys


def import_keras_quietly():
    """Imports Keras (and TensorFlow) with file descriptor 2 sent to /dev/null.

    Python errors still raise; only what the C++ start-up writes is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401  (the import this function is for)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_start_up():
    """The command's start-up: `TF_CPP_MIN_LOG_LEVEL=2` unless set, and Keras
    imported quietly unless the level is 0 (the user asked for the logs)."""
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0"):
        import_keras_quietly()


quiet_start_up()
