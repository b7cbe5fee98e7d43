"""Shared test helpers: tolerances, strategies, serialization round trips."""

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import distribute

# docs/design.md §1 ("Exactness is the spec"): float32 rtol 1e-5 with atol 1e-6·max|ref|.
RTOL = 1e-5


def assert_all_close(actual, expected, rtol=RTOL, atol_scale=1e-6, msg=""):
    """Asserts |actual - expected| <= atol + rtol·|expected| elementwise,
    with atol = atol_scale · max|expected|."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    atol = atol_scale * max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=msg)


class GradientRecorder(keras.optimizers.Optimizer):
    """Stores the (replica-summed) gradient of every variable in `recorded`,
    updates nothing."""

    def __init__(self, **kwargs):
        super().__init__(learning_rate=0.0, **kwargs)

    def build(self, variables):
        super().build(variables)
        self.recorded = [self.add_variable_from_reference(v, "recorded") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        self.recorded[self._get_variable_index(variable)].assign(gradient)

    def gradients(self):
        return [v.numpy() for v in self.recorded]


@contextlib.contextmanager
def float64_config():
    """floatx and the global dtype policy at float64 (Keras caches the
    policy the first time a layer asks for it, so floatx alone does not
    reach the layers built afterwards), both restored after."""
    previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(previous_floatx)
        keras.config.set_dtype_policy(previous_policy)


def strategy(num_replicas):
    """A MirroredStrategy over `num_replicas` of the conftest's logical CPUs
    (the default strategy for 1)."""
    if num_replicas == 1:
        return tf.distribute.get_strategy()
    return distribute.simulated_cpu_strategy(num_replicas)


def split_per_replica(strategy_, array, sizes=None):
    """Distributes `array` row-wise over the strategy's replicas.

    Args:
        sizes: rows per replica (default: equal split).
    """
    replicas = strategy_.num_replicas_in_sync
    if sizes is None:
        sizes = [len(array) // replicas] * replicas
    bounds = np.cumsum([0] + list(sizes))
    pieces = [array[bounds[r] : bounds[r + 1]] for r in range(replicas)]
    return strategy_.experimental_distribute_values_from_function(
        lambda context: tf.constant(pieces[context.replica_id_in_sync_group])
    )


def replica_loss_step(strategy_, loss):
    """A `tf.function` `step(y_pred)` that runs `loss(None, local y_pred)` on
    every replica and returns PerReplica `(values, gradients with respect to
    the local y_pred)`."""

    @tf.function
    def step(local_y):
        def replica_fn(local_y):
            with tf.GradientTape() as tape:
                tape.watch(local_y)
                value = loss(None, local_y)
            return value, tape.gradient(value, local_y)

        return strategy_.run(replica_fn, args=(local_y,))

    return step


def summed_value_and_gradient(strategy_, values, gradients):
    """The replicas' loss values summed (the global loss under the 1/R
    convention) and their gradients concatenated in replica order."""
    value = strategy_.reduce("SUM", values, axis=None).numpy()
    gradient = np.concatenate([g.numpy() for g in strategy_.experimental_local_results(gradients)])
    return value, gradient


def serialization_round_trip(obj):
    """`obj` → config → new object, via Keras' registered-name machinery."""
    config = keras.saving.serialize_keras_object(obj)
    return keras.saving.deserialize_keras_object(config)


def keras_file_round_trip(model):
    """Saves `model` to a `.keras` file and loads it back."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        return keras.models.load_model(path)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """The script `tools/<name>.py` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_ports(count):
    """`count` free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_worker_processes(commands, timeout=240):
    """Runs one process per command as a MultiWorkerMirroredStrategy cluster
    on 127.0.0.1 (TF_CONFIG, worker i = commands[i]), bounded by `timeout`
    seconds; asserts each exits with 0 and returns their outputs."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(len(commands))]
    processes = []
    for index, command in enumerate(commands):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        )
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def run_local_workers(script, output_dir, args=(), num_workers=2, timeout=240):
    """Runs `script OUTPUT.json *args` as a MultiWorkerMirroredStrategy
    cluster of `num_workers` processes on 127.0.0.1 (TF_CONFIG), bounded by
    `timeout` seconds, and returns each worker's JSON output in task order.
    """
    outputs = [os.path.join(str(output_dir), f"worker{i}.json") for i in range(num_workers)]
    run_worker_processes([[sys.executable, script, output, *args] for output in outputs],
                         timeout=timeout)
    results = []
    for output in outputs:
        with open(output) as handle:
            results.append(json.load(handle))
    return results
