"""Losses under MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1
give the single-device loss and gradient on the same global batch."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import test_case
from tests.distribute import multi_worker_worker as worker

WORKER = os.path.join(os.path.dirname(__file__), "multi_worker_worker.py")


# Even batches (slow): the uneven split is the harder case and runs in `make test`.
@pytest.mark.parametrize("sizes", [pytest.param((8, 8), marks=pytest.mark.slow), (5, 11)],
                         ids=["even", "uneven"])
def test_two_workers_equal_one_device(tmp_path, sizes):
    results = test_case.run_local_workers(
        WORKER, tmp_path, args=[",".join(map(str, sizes))]
    )
    for name, make in worker.LOSSES.items():
        views = 4 if name == "mocov3" else 2
        y = tf.constant(worker.global_batch(views))
        with tf.GradientTape() as tape:
            tape.watch(y)
            expected = make()(None, y)
        expected_gradient = tape.gradient(expected, y).numpy()
        gradient = np.concatenate([np.array(r[name]["gradient"]) for r in results])
        for r in results:
            test_case.assert_all_close(r[name]["loss"], expected.numpy(), msg=name)
        test_case.assert_all_close(gradient, expected_gradient, msg=name)
