"""One worker of tests/distribute/multi_worker_test.py.

Reads TF_CONFIG, builds a MultiWorkerMirroredStrategy, computes each loss
and its gradient on this worker's slice of a fixed global batch, and
writes them as JSON to the path given as argv[1].
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_contrast import losses  # noqa: E402
from tests import test_case  # noqa: E402  (on PYTHONPATH: run_worker_processes)

LOSSES = {
    "dclw": lambda: losses.DCLW(0.1),
    "infonce": lambda: losses.InfoNCE(0.1),
    "mocov3": lambda: losses.MoCoV3Loss(0.2),
}


def global_batch(views):
    return np.random.default_rng(views).normal(size=(16, views, 8)).astype("float32")


def main(output_path, sizes):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    start = sum(sizes[:task])
    results = {}
    for name, make in LOSSES.items():
        loss = make()
        views = 4 if name == "mocov3" else 2
        local = tf.constant(global_batch(views)[start : start + sizes[task]])

        value, gradient = test_case.replica_loss_step(strategy, loss)(local)
        total = strategy.reduce("SUM", value, axis=None)
        results[name] = {"loss": float(total), "gradient": gradient.numpy().tolist()}
    with open(output_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")])
