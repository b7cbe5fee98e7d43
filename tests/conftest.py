"""Test-process set-up: TensorFlow backend and 4 logical CPUs.

Logical devices must be configured before TensorFlow initialises its
devices, so it happens once here, at import, for the whole process.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_contrast import distribute  # noqa: E402

NUM_LOGICAL_CPUS = 4
distribute.configure_logical_cpus(NUM_LOGICAL_CPUS)
