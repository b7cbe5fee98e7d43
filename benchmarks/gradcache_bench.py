"""Step time and memory of GradCache against the native big-batch step.

What is measured
----------------
A small ResNet-like conv net (stem conv 32, two residual stages of two 3x3
convs with BatchNorm + ReLU, the second strided to 64 channels, global
average pooling, a 128-d projection) embeds both views of N images 32x32x3:
`(N, 2, 32, 32, 3) → (N, 2, 128)`, InfoNCE (τ = 0.1), SGD, float32, one
device. Configurations, each in its own fresh interpreter (this script
re-invoked with `--single`):

- `native`: the plain model's `train_step` on the whole batch (Keras' own
  step: one forward, one backward). The same process then times a
  forward-only pass over the same batch (no gradient graph, training mode,
  i.e. what GradCache's first pass does); `native + forward` is the cost
  floor of a gradient cache (one extra forward, no overhead).
- `gradcache_k`: `GradCache(model, num_chunks=k).train_step`, k = 2, 4, 8.
- `native_small_k`: the native step on N/k samples, reported x k: what the
  same samples cost when processed as k independent small batches (as Keras'
  `gradient_accumulation_steps` would, without cross-chunk negatives). On a
  CPU, per-sample cost falls with the batch (activations fit the caches), so
  this separates that effect from GradCache's extra forward pass.

How
---
- Time: the step (a `tf.function` around `train_step`) is traced and run
  once (warm-up), then run `repeats` times; the median wall time is reported.
- Memory: peak RSS of the process (`ru_maxrss`) after the timed runs minus
  the RSS just before the first step (model, optimizer and inputs already
  exist). Tracing and TF's runtime buffers are included.
- The machine's load average is recorded at the start and end: other
  processes sharing the CPU inflate times (and noise) but not memory.

Results go to `benchmarks/results/gradcache.json`.

Usage:
    python benchmarks/gradcache_bench.py                  # N = 256, ~5 min
    python benchmarks/gradcache_bench.py --batch 128 --repeats 3
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bench_common import machine_info  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "gradcache.json"
)
CHUNKS = (2, 4, 8)
EMBEDDING_DIM = 128


# ---------------------------------------------------------------------------
# What a child process runs (TensorFlow is imported only there).
# ---------------------------------------------------------------------------


def build_resnet(keras):
    """(batch, 2, 32, 32, 3) → (batch, 2, 128), views folded into the batch."""
    inputs = keras.Input((2, 32, 32, 3))
    x = keras.ops.reshape(inputs, (-1, 32, 32, 3))

    def conv_bn(x, filters, stride=1, relu=True):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x) if relu else x

    def block(x, filters, stride):
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            shortcut = keras.layers.BatchNormalization()(shortcut)
        y = conv_bn(x, filters, stride)
        y = conv_bn(y, filters, relu=False)
        return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))

    x = conv_bn(x, 32)
    x = block(x, 32, 1)
    x = block(x, 64, 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(EMBEDDING_DIM)(x)
    outputs = keras.ops.reshape(x, (-1, 2, EMBEDDING_DIM))
    return keras.Model(inputs, outputs)


def current_rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def timed(function, argument, repeats):
    """Median and list of wall times of `repeats` runs (after a warm-up)."""
    start = time.perf_counter()
    _block(function(argument))
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(function(argument))
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, warmup


def _block(outputs):
    import tensorflow as tf

    for value in tf.nest.flatten(outputs):
        if hasattr(value, "numpy"):
            value.numpy()


def measure(config, batch_size, repeats):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_contrast import losses
    from keras_contrast.training import GradCache

    keras.utils.set_random_seed(0)
    encoder = build_resnet(keras)
    if config.startswith("native_small_"):
        batch_size //= int(config.rsplit("_", 1)[1])
        model = encoder
    elif config == "native":
        model = encoder
    else:
        model = GradCache(encoder, num_chunks=int(config.split("_")[1]))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=losses.InfoNCE(0.1))
    model.optimizer.build(model.trainable_variables)
    x = tf.constant(
        np.random.default_rng(0).uniform(size=(batch_size, 2, 32, 32, 3)).astype("float32")
    )
    step = tf.function(model.train_step)
    baseline_kib = current_rss_kib()
    median, times, warmup = timed(step, (x,), repeats)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = {
        "config": config,
        "N": batch_size,
        "median_seconds": median,
        "seconds": times,
        "warmup_seconds": warmup,
        "peak_rss_growth_mib": (peak_kib - baseline_kib) / 1024,
        "load_average_1_min": os.getloadavg()[0],
        "parameters": int(sum(np.prod(v.shape) for v in encoder.trainable_variables)),
    }
    if config == "native":
        # Forward only, no gradient graph, training mode: GradCache's pass 1.
        forward = tf.function(lambda x: tf.stop_gradient(encoder(x, training=True)))
        record["forward_median_seconds"], record["forward_seconds"], _ = timed(
            forward, x, repeats
        )
    record["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    return record


# ---------------------------------------------------------------------------
# Parent: one subprocess per configuration, side by side in one run.
# ---------------------------------------------------------------------------


def run_spawned(config, batch_size, repeats, timeout):
    command = [sys.executable, os.path.abspath(__file__), "--single", config]
    command += ["--batch", str(batch_size), "--repeats", str(repeats)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": config, "N": batch_size, "error": f"timed out after {timeout} s"}
    json_lines = [l for l in completed.stdout.splitlines() if l.startswith("{")]
    if completed.returncode != 0 or not json_lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"config": config, "N": batch_size, "error": f"exit {completed.returncode}: {tail[0]}"}
    return json.loads(json_lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--batch", type=int, default=256, help="N, samples (2 views each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS))
    parser.add_argument("--small", type=int, nargs="*", default=[4],
                        help="k of the native_small_k configurations")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--single", help="(internal) measure one configuration")
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(measure(args.single, args.batch, args.repeats)), flush=True)
        return

    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()
    configs = ["native"] + [f"gradcache_{k}" for k in args.chunks]
    configs += [f"native_small_{k}" for k in args.small]
    records = []
    for config in configs:
        record = run_spawned(config, args.batch, args.repeats, args.timeout)
        records.append(record)
        if "error" in record:
            print(f"{config:<14} FAILED: {record['error']}", flush=True)
        else:
            print(
                f"{config:<14} {1000 * record['median_seconds']:9.1f} ms "
                f"{record['peak_rss_growth_mib']:9.1f} MiB  (load "
                f"{record['load_average_1_min']:.1f})",
                flush=True,
            )
    native = next((r for r in records if r["config"] == "native" and "error" not in r), None)
    summary = []
    if native is not None:
        floor = native["median_seconds"] + native["forward_median_seconds"]
        summary.append(
            {
                "config": "native + forward (floor)",
                "median_seconds": floor,
                "time_vs_native": floor / native["median_seconds"],
            }
        )
        for record in records:
            if "error" in record:
                continue
            if record["config"].startswith("native_small_"):
                k = int(record["config"].rsplit("_", 1)[1])
                seconds = k * record["median_seconds"]
                summary.append(
                    {
                        "config": f"{k} x native step on N/{k}",
                        "median_seconds": seconds,
                        "time_vs_native": seconds / native["median_seconds"],
                        "time_vs_floor": seconds / floor,
                        "peak_rss_growth_mib": record["peak_rss_growth_mib"],
                        "memory_vs_native": record["peak_rss_growth_mib"]
                        / native["peak_rss_growth_mib"],
                    }
                )
                continue
            summary.append(
                {
                    "config": record["config"],
                    "median_seconds": record["median_seconds"],
                    "time_vs_native": record["median_seconds"] / native["median_seconds"],
                    "time_vs_floor": record["median_seconds"] / floor,
                    "peak_rss_growth_mib": record["peak_rss_growth_mib"],
                    "memory_vs_native": record["peak_rss_growth_mib"]
                    / native["peak_rss_growth_mib"],
                }
            )
    load_at_end = os.getloadavg()
    shared = max(load_at_start[0], load_at_end[0]) > 1.5
    results = {
        "description": (
            "Training step of a small ResNet-like conv net on N pairs of 32x32 "
            "images (InfoNCE, SGD, float32, one device, tf.function around "
            "train_step): native big batch vs GradCache(num_chunks=k). Median "
            "of `repeats` runs after a warm-up; peak_rss_growth_mib = ru_maxrss "
            "after the runs minus RSS just before the first step. The floor is "
            "the native step plus one forward-only pass over the batch."
        ),
        "note": (
            "Other processes shared the 2 CPUs during this run (see the load "
            "averages): times are inflated and noisy; ratios measured side by "
            "side are more meaningful than absolute times."
            if shared
            else "The machine was otherwise idle (load average < 1.5)."
        ),
        "machine": {
            **machine_info(started_at),
            **(native or {}).get("versions", {}),
            "load_average_1_5_15_min": {"start": load_at_start, "end": load_at_end},
        },
        "settings": {
            "N": args.batch,
            "views": 2,
            "image": [32, 32, 3],
            "embedding_dim": EMBEDDING_DIM,
            "repeats": args.repeats,
            "chunks": args.chunks,
            "small": args.small,
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "records": records,
        "summary": summary,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print()
    for row in summary:
        memory = row.get("peak_rss_growth_mib")
        print(
            f"{row['config']:<26}{1000 * row['median_seconds']:9.1f} ms  "
            f"x{row['time_vs_native']:.2f} native"
            + (f"  {memory:8.1f} MiB  x{row['memory_vs_native']:.2f}" if memory is not None else "")
        )
    print(f"Results written to {args.output}")


if __name__ == "__main__":
    main()
