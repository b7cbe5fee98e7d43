"""Losses under MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1
give the single-device loss and gradient on the same global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import test_case
from tests.distribute import multi_worker_worker as worker

WORKER = os.path.join(os.path.dirname(__file__), "multi_worker_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(tmp_path, sizes):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes, outputs = [], []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        output = tmp_path / f"worker{index}.json"
        outputs.append(output)
        processes.append(
            subprocess.Popen(
                [sys.executable, WORKER, str(output), ",".join(map(str, sizes))],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        logs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads(o.read_text()) for o in outputs]


@pytest.mark.parametrize("sizes", [(8, 8), (5, 11)], ids=["even", "uneven"])
def test_two_workers_equal_one_device(tmp_path, sizes):
    results = run_workers(tmp_path, sizes)
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
