"""Keras and TensorFlow alone: `jit_compile=True` under a MirroredStrategy over
logical CPU devices fails on the first step.

    python tools/repro_mirrored_xla.py                    # 2 replicas, XLA: fails
    python tools/repro_mirrored_xla.py --replicas 1       # one device, XLA: trains
    python tools/repro_mirrored_xla.py --no-jit-compile   # 2 replicas, no XLA: trains

No keras_contrast code is involved: the model is `keras.Sequential([Dense(2)])`
with a mean-squared-error loss. The CPU is split into logical devices
(`tf.config.set_logical_device_configuration`), a `MirroredStrategy` runs one
replica on each, and `model.compile(jit_compile=True)` asks Keras to compile
the train step with XLA. The step then fails with

    Trying to access resource .../replica_1 located in device
    .../device:CPU:1 from device .../device:CPU:0

The compiled step of replica 1 runs on CPU:0 while that replica's variables
live on CPU:1. The logical devices share one physical CPU, so no transfer
would be needed, but XLA treats them as separate devices. Keras' default
(`jit_compile="auto"`) turns XLA off under `tf.distribute` strategies, and
on CPU-only machines and under op determinism. Whether MirroredStrategy
over several GPUs compiles is not tested here (no GPU with TensorFlow);
TPUStrategy compiles each replica step by design.

Measured with TensorFlow 2.21 / Keras 3 on 2 CPU cores: 2 replicas with
XLA fail at the first step as above; 1 replica with XLA and 2 replicas
without it train. The script prints one line and exits 0 when what it saw
is what this docstring says (1 otherwise: the limit has moved).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--no-jit-compile", action="store_true")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * max(args.replicas, 1))
    devices = [f"/cpu:{index}" for index in range(args.replicas)]
    strategy = (tf.distribute.MirroredStrategy(devices) if args.replicas > 1
                else tf.distribute.get_strategy())
    jit_compile = not args.no_jit_compile
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    x = np.ones((8, 3), "float32")
    y = np.zeros((8, 2), "float32")
    expected_failure = args.replicas > 1 and jit_compile
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    except Exception as error:  # noqa: BLE001 (what fails is the finding)
        message = str(error)
        reproduced = expected_failure and "Trying to access resource" in message
        first = next((line for line in message.splitlines() if "Trying to access" in line),
                     message.splitlines()[0] if message else type(error).__name__)
        print(f"{args.replicas} replica(s), jit_compile={jit_compile}: failed: {first.strip()}")
        return 0 if reproduced else 1
    print(f"{args.replicas} replica(s), jit_compile={jit_compile}: trained")
    return 1 if expected_failure else 0


if __name__ == "__main__":
    raise SystemExit(main())
