"""Train-step time of a small ResNet with per-replica vs synchronised BatchNorm.

What is measured
----------------
One Keras training step (`model.train_function`, the function `fit` runs:
forward, loss, backward, SGD update) of a small ResNet on random 32x32x3
images under a `MirroredStrategy` of 4 simulated replicas (logical devices
of the CPU), float32, for each BatchNorm variant:

    per_replica   keras.layers.BatchNormalization(synchronized=False)
    synchronized  keras.layers.BatchNormalization(synchronized=True): the
                  batch statistics are all-reduced (3 all-reduces of C
                  values per layer in the forward pass, and their gradients)
    replica_mean  per-replica BN with keras_contrast's ReplicaMeanStatistics
                  (moving statistics read as the mean over replicas; no
                  communication during the step)

The ResNet: a 3x3 conv stem (16 channels), three stages of `--blocks`
basic residual blocks (16, 32, 64 channels, stride 2 between stages, 1x1
projection shortcuts), global average pooling and a 10-way softmax; every
conv is followed by the BN variant under test.

How
---
All variants are built in one process and measured side by side: after
building (one `fit` step, which traces) and `--warmup` untimed steps each,
`--repeats` rounds each time one step of every variant, in an order that
rotates from round to round, so that load from other processes falls on
all variants alike. Reported: the median (and minimum) wall time per step,
the median process CPU time per step (all threads; less sensitive to other
processes than wall time), and the ratios to `per_replica`. The raw
per-step times, the load average before and after, and the machine are
written to `benchmarks/results/batchnorm.json`. Simulated replicas share
the CPU cores, so the all-reduces are memory copies: the ratio measures
the compute and synchronisation overhead, not network or NVLink cost.

Usage:
    python benchmarks/batchnorm_bench.py              # ~2-4 min on 2 cores
    python benchmarks/batchnorm_bench.py --quick      # 3 repeats
    python benchmarks/batchnorm_bench.py --global-batch 256 --blocks 2
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from bench_common import machine_info  # noqa: E402

NUM_REPLICAS = 4
VARIANTS = ("per_replica", "synchronized", "replica_mean")
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "batchnorm.json"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--global-batch", type=int, default=128,
                        help="global batch size (default 128 = 4 x 32)")
    parser.add_argument("--blocks", type=int, default=1,
                        help="residual blocks per stage (default 1)")
    parser.add_argument("--repeats", type=int, default=12,
                        help="timed rounds (default 12)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per variant after tracing (default 2)")
    parser.add_argument("--quick", action="store_true", help="3 timed rounds, 1 warm-up step")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.global_batch % NUM_REPLICAS:
        parser.error(f"--global-batch must be a multiple of {NUM_REPLICAS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    # Logical devices must be configured before TensorFlow runs any op.
    from keras_contrast import distribute

    distribute.configure_logical_cpus(NUM_REPLICAS)
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_contrast
    from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics

    class ReplicaMeanBatchNormalization(
        ReplicaMeanStatistics, keras.layers.BatchNormalization
    ):
        pass

    def norm(variant):
        if variant == "per_replica":
            return keras.layers.BatchNormalization(synchronized=False)
        if variant == "synchronized":
            return keras.layers.BatchNormalization(synchronized=True)
        return ReplicaMeanBatchNormalization()

    def conv_bn(x, filters, variant, strides=1, kernel=3, relu=True):
        x = keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
        x = norm(variant)(x)
        return keras.layers.ReLU()(x) if relu else x

    def small_resnet(variant):
        inputs = keras.Input((32, 32, 3))
        x = conv_bn(inputs, 16, variant)
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(args.blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                if strides != 1 or x.shape[-1] != filters:
                    shortcut = conv_bn(x, filters, variant, strides, kernel=1, relu=False)
                y = conv_bn(x, filters, variant, strides)
                y = conv_bn(y, filters, variant, relu=False)
                x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(10, activation="softmax")(x)
        return keras.Model(inputs, outputs, name=f"resnet_{variant}")

    strategy = distribute.simulated_cpu_strategy(NUM_REPLICAS)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.global_batch, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(args.global_batch,)).astype("int32")
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    models, iterators, build_seconds = {}, {}, {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        with strategy.scope():
            model = small_resnet(variant)
            model.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss="sparse_categorical_crossentropy",
            )
        # One fit step builds the optimizer and traces Keras' train function.
        model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)
        iterators[variant] = iter(strategy.experimental_distribute_dataset(dataset))
        models[variant] = model
        build_seconds[variant] = time.perf_counter() - start
        print(f"built {variant:<13} in {build_seconds[variant]:.1f} s", flush=True)

    def step(variant):
        logs = models[variant].train_function(iterators[variant])
        if hasattr(logs, "get_value"):  # a tf.experimental.Optional
            logs = logs.get_value()
        # Reading the loss waits for the step to finish.
        return float(logs["loss"])

    for variant in VARIANTS:
        for _ in range(args.warmup):
            step(variant)

    times = {v: [] for v in VARIANTS}
    cpu_times = {v: [] for v in VARIANTS}
    losses = {v: [] for v in VARIANTS}
    for round_index in range(args.repeats):
        order = VARIANTS[round_index % len(VARIANTS):] + VARIANTS[: round_index % len(VARIANTS)]
        for variant in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            losses[variant].append(step(variant))
            times[variant].append(time.perf_counter() - start)
            cpu_times[variant].append(time.process_time() - cpu_start)
    load_at_end = os.getloadavg()

    records = {}
    for variant in VARIANTS:
        records[variant] = {
            "median_seconds": statistics.median(times[variant]),
            "min_seconds": min(times[variant]),
            "median_cpu_seconds": statistics.median(cpu_times[variant]),
            "build_and_trace_seconds": build_seconds[variant],
            "seconds": times[variant],
            "cpu_seconds": cpu_times[variant],
            "final_loss": losses[variant][-1],
        }
    base = records["per_replica"]
    ratios = {
        variant: {
            "median_time_ratio": records[variant]["median_seconds"] / base["median_seconds"],
            "min_time_ratio": records[variant]["min_seconds"] / base["min_seconds"],
            "median_cpu_time_ratio": (
                records[variant]["median_cpu_seconds"] / base["median_cpu_seconds"]
            ),
        }
        for variant in VARIANTS
        if variant != "per_replica"
    }
    cpus = len(os.sched_getaffinity(0))
    results = {
        "description": (
            "One Keras train step (train_function: forward, loss, backward, SGD "
            "update) of a small ResNet on random 32x32x3 data, MirroredStrategy "
            f"over {NUM_REPLICAS} simulated CPU replicas, per BatchNorm variant; "
            "median of `repeats` rounds (variants interleaved) after warm-up. "
            "Ratios are variant / per_replica."
        ),
        "machine": {
            **machine_info(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_contrast": keras_contrast.__version__,
            "numpy": np.__version__,
            "load_average_1_5_15_min": {"start": load_at_start, "end": load_at_end},
            # Other processes competing for the cores skew wall times; the
            # CPU-time ratio is the more robust number then.
            "measured_under_contention": max(load_at_start[0], load_at_end[0]) > cpus,
        },
        "settings": {
            "replicas": NUM_REPLICAS,
            "global_batch": args.global_batch,
            "local_batch": args.global_batch // NUM_REPLICAS,
            "blocks_per_stage": args.blocks,
            "batch_norm_layers": sum(
                isinstance(layer, keras.layers.BatchNormalization)
                for layer in models["per_replica"].layers
            ),
            "parameters": models["per_replica"].count_params(),
            "repeats": args.repeats,
            "warmup_steps": args.warmup,
            "dtype": "float32",
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "records": records,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)

    print()
    print(f"{'variant':<14}{'median ms':>10}{'min ms':>9}{'cpu ms':>9}{'x median':>10}{'x cpu':>8}")
    for variant in VARIANTS:
        record = records[variant]
        ratio = ratios.get(variant, {"median_time_ratio": 1.0, "median_cpu_time_ratio": 1.0})
        print(
            f"{variant:<14}{1000 * record['median_seconds']:>10.1f}"
            f"{1000 * record['min_seconds']:>9.1f}{1000 * record['median_cpu_seconds']:>9.1f}"
            f"{ratio['median_time_ratio']:>10.2f}{ratio['median_cpu_time_ratio']:>8.2f}"
        )
    print(
        f"\n{NUM_REPLICAS} simulated replicas, global batch {args.global_batch}, "
        f"{results['settings']['batch_norm_layers']} BN layers, load average "
        f"{load_at_start[0]:.1f} -> {load_at_end[0]:.1f} on {cpus} CPUs"
        + (" (under contention)" if results["machine"]["measured_under_contention"] else "")
        + f". Total {results['settings']['total_seconds']:.0f} s. Results written to {args.output}"
    )


if __name__ == "__main__":
    main()
