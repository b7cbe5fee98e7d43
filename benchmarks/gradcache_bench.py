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
- `gradcache_k`: `GradCache(model, num_chunks=k).train_step`, k = 2, 4, 8;
  `gradcache_k_recompute` forwards the last chunk again instead of reusing
  its first-pass graph (`reuse_last_chunk=False`); `gradcache_k_unchained`
  drops the control dependencies that make the chunks run one after another.
- `native_small_k`: the native step on N/k samples, reported x k: what the
  same samples cost when processed as k independent small batches (as Keras'
  `gradient_accumulation_steps` would, without cross-chunk negatives). On a
  CPU, per-sample cost falls with the batch (activations fit the caches), so
  this separates that effect from GradCache's extra forward pass. Its memory
  is that of one chunk's backward pass alone.
- Budget: native vs `gradcache_8` at a larger N (1024) under a memory budget
  (1 GiB of RSS growth): a watchdog thread stops a process whose RSS grows
  past it, i.e. the batch does not fit.

How
---
- Time: the step (a `tf.function` around `train_step`) is traced and run
  once (warm-up), then run `repeats` times; the median wall time is reported.
- Memory: peak RSS of the process (VmHWM) minus the RSS just before the
  first step (model, optimizer and inputs already exist): activation memory
  plus tracing; also the peak of the steps after the warm-up alone (the
  kernel's peak mark is reset after the warm-up).
- Allocator: glibc's malloc raises its mmap threshold as large blocks are
  freed, after which freed activation buffers stay in its heap and RSS shows
  its cache rather than live tensors (small chunks look as big as big ones).
  Every configuration therefore runs with `MALLOC_MMAP_THRESHOLD_=65536`; a
  second group repeats native and 8 chunks with glibc's default for
  comparison.
- The machine's load average is recorded at the start and end: other
  processes sharing the CPU inflate times (and noise) but not memory.

Results go to `benchmarks/results/gradcache.json`.

Usage:
    python benchmarks/gradcache_bench.py                  # N = 512, ~10 min
    python benchmarks/gradcache_bench.py --batch 128 --repeats 2 --budget-batch 0
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bench_common import current_rss_kib  # noqa: E402
from bench_common import machine_info  # noqa: E402
from bench_common import peak_rss_kib  # noqa: E402
from bench_common import reset_peak_rss  # noqa: E402
from bench_common import start_watchdog  # noqa: E402
from bench_common import timed  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "gradcache.json"
)
CHUNKS = (2, 4, 8)
# glibc serves allocations above this size with mmap and returns them to the
# OS when freed. Its default threshold grows with the sizes freed (up to 32
# MiB), after which freed activation buffers stay cached in the heap and RSS
# shows the allocator's cache instead of live memory. A fixed threshold makes
# peak RSS track the live tensors; the same for every configuration.
MMAP_THRESHOLD = 65536
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


def measure(config, batch_size, repeats, budget_mib=None):
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
        # gradcache_<k>[_recompute][_unchained]
        model = GradCache(
            encoder,
            num_chunks=int(config.split("_")[1]),
            reuse_last_chunk="_recompute" not in config,
        )
        model._chain_chunks = "_unchained" not in config
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=losses.InfoNCE(0.1))
    model.optimizer.build(model.trainable_variables)
    x = tf.constant(
        np.random.default_rng(0).uniform(size=(batch_size, 2, 32, 32, 3)).astype("float32")
    )
    step = tf.function(model.train_step)
    baseline_kib = current_rss_kib()
    if budget_mib is not None:
        start_watchdog(config, batch_size, baseline_kib, budget_mib)
    marks = {}

    def after_warmup():
        # The warm-up step traced and optimised the graph; from here on the
        # peak is that of the steps themselves.
        marks["peak_with_tracing_kib"] = peak_rss_kib()
        marks["after_warmup_kib"] = current_rss_kib()
        reset_peak_rss()

    median, times, warmup = timed(step, (x,), repeats, after_warmup)
    peak_kib = max(peak_rss_kib(), marks["peak_with_tracing_kib"])
    step_peak_kib = peak_rss_kib()
    record = {
        "config": config,
        "N": batch_size,
        "median_seconds": median,
        "seconds": times,
        "warmup_seconds": warmup,
        "peak_rss_growth_mib": (peak_kib - baseline_kib) / 1024,
        "step_peak_rss_growth_mib": (step_peak_kib - baseline_kib) / 1024,
        "rss_after_warmup_growth_mib": (marks["after_warmup_kib"] - baseline_kib) / 1024,
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
    if budget_mib is not None:
        record["budget_mib"] = budget_mib
        # The watchdog polls; the kernel's peak mark also sees short spikes.
        record["within_budget"] = record["peak_rss_growth_mib"] <= budget_mib
    return record


# ---------------------------------------------------------------------------
# Parent: one subprocess per configuration, side by side in one run.
# ---------------------------------------------------------------------------


def run_spawned(config, batch_size, repeats, timeout, malloc="fixed", budget_mib=None):
    command = [sys.executable, os.path.abspath(__file__), "--single", config]
    command += ["--batch", str(batch_size), "--repeats", str(repeats)]
    if budget_mib is not None:
        command += ["--budget-mib", str(budget_mib)]
    env = dict(os.environ)
    if malloc == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"config": config, "N": batch_size, "error": f"timed out after {timeout} s"}
    json_lines = [l for l in completed.stdout.splitlines() if l.startswith("{")]
    if completed.returncode != 0 or not json_lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"config": config, "N": batch_size, "error": f"exit {completed.returncode}: {tail[0]}"}
    return json.loads(json_lines[-1])


def summarise(records, native):
    """Ratios of every record to the native step measured in the same run."""
    floor = native["median_seconds"] + native["forward_median_seconds"]
    rows = [
        {
            "config": "native + forward (floor)",
            "median_seconds": floor,
            "time_vs_native": floor / native["median_seconds"],
        }
    ]
    for record in records:
        if "error" in record or "median_seconds" not in record:
            continue
        seconds = record["median_seconds"]
        name = record["config"]
        if name.startswith("native_small_"):
            k = int(name.rsplit("_", 1)[1])
            seconds *= k
            name = f"{k} x native step on N/{k}"
        row = {
            "config": name,
            "median_seconds": seconds,
            "time_vs_native": seconds / native["median_seconds"],
            "time_vs_floor": seconds / floor,
        }
        for key in ("peak_rss_growth_mib", "step_peak_rss_growth_mib"):
            row[key] = record[key]
        row["memory_vs_native"] = record["peak_rss_growth_mib"] / native["peak_rss_growth_mib"]
        rows.append(row)
    return rows


def run_all(configs, batch_size, repeats, timeout, malloc, budget_mib=None):
    records = []
    for config in configs:
        record = run_spawned(config, batch_size, repeats, timeout, malloc, budget_mib)
        records.append(record)
        if "error" in record:
            print(f"{config:<26} FAILED: {record['error']}", flush=True)
        elif "median_seconds" not in record:
            print(
                f"{config:<26} N={batch_size}: over the {budget_mib} MiB budget "
                f"(stopped at {record['stopped_at_growth_mib']:.0f} MiB)",
                flush=True,
            )
        else:
            budget = ""
            if budget_mib is not None:
                budget = "  within budget" if record["within_budget"] else "  OVER budget"
            print(
                f"{config:<26} N={batch_size} {1000 * record['median_seconds']:9.1f} ms "
                f"{record['peak_rss_growth_mib']:9.1f} MiB  (load "
                f"{record['load_average_1_min']:.1f}, malloc {malloc}){budget}",
                flush=True,
            )
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--batch", type=int, default=512, help="N, samples (2 views each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=list(CHUNKS))
    parser.add_argument("--small", type=int, nargs="*", default=[8],
                        help="k of the native_small_k configurations")
    parser.add_argument("--budget-mib", type=float, default=None,
                        help="memory budget (RSS growth) of the budget demonstration "
                        "(default 1024)")
    parser.add_argument("--budget-batch", type=int, default=1024,
                        help="N of the budget demonstration (0 skips it)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--single", help="(internal) measure one configuration")
    args = parser.parse_args(argv)
    if args.single:
        record = measure(args.single, args.batch, args.repeats, args.budget_mib)
        print(json.dumps(record), flush=True)
        return

    if args.budget_mib is None:
        args.budget_mib = 1024.0
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()
    most = max(args.chunks)
    configs = ["native"] + [f"gradcache_{k}" for k in args.chunks]
    configs += [f"gradcache_{k}_recompute" for k in (min(args.chunks), most)]
    configs += [f"gradcache_{most}_unchained"]
    configs += [f"native_small_{k}" for k in args.small]
    print("Side by side, malloc with a fixed mmap threshold:", flush=True)
    records = run_all(configs, args.batch, args.repeats, args.timeout, "fixed")
    print("Memory with glibc's default (adaptive) mmap threshold:", flush=True)
    default_malloc = run_all(
        ["native", f"gradcache_{most}"], args.batch, 1, args.timeout, "default"
    )
    budget = []
    if args.budget_batch:
        print(f"A {args.budget_mib:.0f} MiB budget at N={args.budget_batch}:", flush=True)
        budget = run_all(
            ["native", f"gradcache_{most}"], args.budget_batch, 1, args.timeout, "fixed",
            args.budget_mib,
        )

    def native_of(group):
        return next((r for r in group if r["config"] == "native" and "median_seconds" in r), None)

    native = native_of(records)
    summary = summarise(records, native) if native else []
    default_native = native_of(default_malloc)
    default_summary = [
        {
            "config": r["config"],
            "peak_rss_growth_mib": r["peak_rss_growth_mib"],
            "memory_vs_native": r["peak_rss_growth_mib"] / default_native["peak_rss_growth_mib"],
        }
        for r in default_malloc
        if default_native and "peak_rss_growth_mib" in r
    ]
    load_at_end = os.getloadavg()
    shared = max(load_at_start[0], load_at_end[0]) > 1.5
    results = {
        "description": (
            "Training step of a small ResNet-like conv net on N pairs of 32x32 "
            "images (InfoNCE, SGD, float32, one device, tf.function around "
            "train_step): native big batch vs GradCache(num_chunks=k). Median "
            "of `repeats` runs after a warm-up; peak_rss_growth_mib = peak RSS "
            "(VmHWM) minus RSS just before the first step (tracing included); "
            "step_peak_rss_growth_mib = the same for the steps after the "
            "warm-up only. The floor is the native step plus one forward-only "
            "pass over the batch. `_recompute`: reuse_last_chunk=False; "
            "`_unchained`: chunks not chained by control dependencies. Each "
            "configuration runs in its own process with MALLOC_MMAP_THRESHOLD_"
            f"={MMAP_THRESHOLD} (see `default_malloc` for glibc's default). "
            "`budget`: native vs GradCache at a larger N under a memory budget "
            "(a watchdog stops a process whose RSS grows past it)."
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
            "malloc_mmap_threshold": MMAP_THRESHOLD,
            "budget_mib": args.budget_mib,
            "budget_N": args.budget_batch,
            "total_seconds": round(time.perf_counter() - started, 1),
        },
        "records": records,
        "summary": summary,
        "default_malloc": {"records": default_malloc, "summary": default_summary},
        "budget": budget,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print()
    for row in summary:
        memory = row.get("peak_rss_growth_mib")
        print(
            f"{row['config']:<28}{1000 * row['median_seconds']:9.1f} ms  "
            f"x{row['time_vs_native']:.2f} native"
            + (f"  x{row['time_vs_floor']:.2f} floor" if "time_vs_floor" in row else "")
            + (f"  {memory:8.1f} MiB  x{row['memory_vs_native']:.2f}" if memory is not None else "")
        )
    for row in default_summary:
        print(f"default malloc {row['config']:<16}{row['peak_rss_growth_mib']:8.1f} MiB  "
              f"x{row['memory_vs_native']:.2f}")
    print(f"Results written to {args.output}")


if __name__ == "__main__":
    main()
