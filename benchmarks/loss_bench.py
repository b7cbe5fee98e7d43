"""Speed and memory of the keras_contrast losses against naive dense references.

What is measured
----------------
For each loss (InfoNCE with `negatives="all"` and `"cross"`, DCL, DCLW, CLIP,
MoCo v3) and each global batch size N, one training-style step on a single
device (no strategy), float32, embedding dim 128:

    forward:  per-sample losses of `y_pred` (N, views, dim), then their mean;
    backward: the gradient of that mean with respect to `y_pred`.

Both run inside one `tf.function` (a `tf.GradientTape` on the embeddings).
Each loss is compared with a *naive dense reference* written here with plain
TF ops, the way a textbook (or SimCLR's own code) writes it: build the full
similarity matrix, mask the excluded entries by subtracting a large constant
and use `tf.nn.sparse_softmax_cross_entropy_with_logits` (DCL and DCLW, whose
denominator leaves the positive out, take `tf.reduce_logsumexp` of the matrix
with the self and positive entries masked). Before any timing,
the library loss and its reference are checked to give the same mean value
(rtol 1e-4) and the same gradient at N=256, so both sides do the same work.

How
---
- Time: the step is traced and run once (warm-up), then run `repeats` times;
  the median wall time is reported (fewer repeats at large N).
- Memory: every (loss, implementation, N) configuration runs in its own
  child process, which reports its peak RSS growth: `ru_maxrss` after the
  timed runs minus `ru_maxrss` once the inputs exist (KiB on Linux,
  reported in MiB). Tracing, the warm-up and TF's runtime buffers are
  included, so small batches show a constant overhead of a few tens of MiB.
- Children are forked from this process after TensorFlow has been imported
  but before it has run any op (`--isolation fork`, the default: importing
  TensorFlow takes ~8 s here, 72 times over). `--isolation spawn` re-invokes
  this script with `--single LOSS IMPL N` instead, a fresh interpreter per
  configuration. Either way the parent collects one JSON line per child.

Results go to `benchmarks/results/losses.json`: one record per
(loss, implementation, N), the keras_contrast/naive time and memory ratios
per (loss, N), the equivalence check and the machine.

Usage:
    python benchmarks/loss_bench.py                 # full run, ~10 min on 2 cores
    python benchmarks/loss_bench.py --quick         # N = 256, 512, one repeat
    python benchmarks/loss_bench.py --losses dcl clip --sizes 1024 4096 --repeats 3
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bench_common import machine_info  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_contrast  # noqa: E402
from keras_contrast import losses  # noqa: E402

DEFAULT_SIZES = (256, 512, 1024, 2048, 4096, 8192)
QUICK_SIZES = (256, 512)
# Timed repeats per N (after one warm-up run); a step at N=8192 takes seconds.
DEFAULT_REPEATS = {256: 10, 512: 10, 1024: 5, 2048: 5, 4096: 3, 8192: 2}
IMPLEMENTATIONS = ("keras_contrast", "naive")
CHECK_BATCH_SIZE = 256
CHECK_RTOL = 1e-4
# The SimCLR code's mask constant: exp(x - 1e9) underflows to exactly 0.
LARGE_NUM = 1e9
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "losses.json"
)


# ---------------------------------------------------------------------------
# Naive dense references. Each takes `(y_true, y_pred)` like the library's
# losses and returns the per-sample losses `(N,)`.
# ---------------------------------------------------------------------------


def _two_views(y_pred):
    z = tf.math.l2_normalize(y_pred, axis=-1)
    return z[:, 0], z[:, 1]


def _nt_xent_logits(y_pred, temperature):
    """The 2N x 2N similarity matrix of [view 0; view 1] and each row's
    positive column (its other view)."""
    z1, z2 = _two_views(y_pred)
    n = tf.shape(z1)[0]
    z = tf.concat([z1, z2], axis=0)
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    positive_columns = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
    return z, logits, positive_columns


def _per_sample(anchor_losses):
    """(2N,) anchor losses [view 0 anchors; view 1 anchors] -> (N,) means."""
    view_0, view_1 = tf.split(anchor_losses, 2)
    return (view_0 + view_1) / 2.0


def naive_nt_xent(y_true, y_pred, temperature):
    del y_true
    z, logits, positive_columns = _nt_xent_logits(y_pred, temperature)
    logits -= LARGE_NUM * tf.eye(tf.shape(z)[0])
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=positive_columns, logits=logits
    )
    return _per_sample(cross_entropy)


def _symmetric_cross_entropy(y_pred, temperature):
    """(CE(A·Bᵀ/τ) + CE(B·Aᵀ/τ)) / 2 with one N x N matrix and its transpose."""
    z1, z2 = _two_views(y_pred)
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature
    labels = tf.range(tf.shape(z1)[0])
    ce_1_to_2 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    ce_2_to_1 = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.transpose(logits)
    )
    return (ce_1_to_2 + ce_2_to_1) / 2.0


def naive_info_nce_cross(y_true, y_pred, temperature):
    del y_true
    return _symmetric_cross_entropy(y_pred, temperature)


def naive_clip(y_true, y_pred, temperature):
    del y_true
    return _symmetric_cross_entropy(y_pred, temperature)


def _decoupled_anchor_losses(y_pred, temperature, positive_weight=None):
    """DCL: -w·positive + log Σ exp(logits) with self *and* positive masked."""
    z, logits, positive_columns = _nt_xent_logits(y_pred, temperature)
    size = tf.shape(z)[0]
    excluded = tf.eye(size) + tf.one_hot(positive_columns, size)
    log_denominator = tf.reduce_logsumexp(logits - LARGE_NUM * excluded, axis=1)
    # Rolling [z1; z2] by N rows pairs every row with its other view.
    positive_logits = (
        tf.reduce_sum(z * tf.roll(z, shift=size // 2, axis=0), axis=1) / temperature
    )
    if positive_weight is not None:
        positive_logits *= tf.concat([positive_weight, positive_weight], axis=0)
    return log_denominator - positive_logits


def naive_dcl(y_true, y_pred, temperature):
    del y_true
    return _per_sample(_decoupled_anchor_losses(y_pred, temperature))


def naive_dclw(y_true, y_pred, temperature, sigma=0.5):
    del y_true
    z1, z2 = _two_views(y_pred)
    n = tf.cast(tf.shape(z1)[0], tf.float32)
    # w_i = 2 - N·softmax_j(<z_j^(1), z_j^(2)>/σ)_i, differentiated through as
    # the library does by default (weight_stop_gradient=False).
    weight = 2.0 - n * tf.nn.softmax(tf.reduce_sum(z1 * z2, axis=1) / sigma)
    return _per_sample(_decoupled_anchor_losses(y_pred, temperature, weight))


def naive_mocov3(y_true, y_pred, temperature):
    del y_true
    z = tf.math.l2_normalize(y_pred, axis=-1)
    q1, q2 = z[:, 0], z[:, 1]
    k1, k2 = tf.stop_gradient(z[:, 2]), tf.stop_gradient(z[:, 3])
    labels = tf.range(tf.shape(z)[0])

    def contrast(q, k):
        logits = tf.matmul(q, k, transpose_b=True) / temperature
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return cross_entropy * (2.0 * temperature)

    return contrast(q1, k2) + contrast(q2, k1)


# name: (label, views, temperature, library loss, naive reference)
LOSSES = {
    "infonce_all": (
        "InfoNCE all",
        2,
        0.1,
        lambda y_true, y_pred, t: losses.info_nce(y_true, y_pred, t, negatives="all"),
        naive_nt_xent,
    ),
    "infonce_cross": (
        "InfoNCE cross",
        2,
        0.1,
        lambda y_true, y_pred, t: losses.info_nce(
            y_true, y_pred, t, negatives="cross"
        ),
        naive_info_nce_cross,
    ),
    "dcl": ("DCL", 2, 0.1, losses.dcl, naive_dcl),
    "dclw": ("DCLW", 2, 0.1, losses.dclw, naive_dclw),
    "clip": ("CLIP", 2, 0.07, losses.clip_loss, naive_clip),
    "mocov3": ("MoCoV3", 4, 0.2, losses.mocov3_loss, naive_mocov3),
}


# ---------------------------------------------------------------------------
# What a child process runs.
# ---------------------------------------------------------------------------


def make_embeddings(batch_size, views, dim, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.standard_normal((batch_size, views, dim), np.float32))


def loss_and_gradient(loss_name, implementation, y_pred):
    """Mean loss over the batch and its gradient with respect to `y_pred`."""
    _, _, temperature, library_fn, naive_fn = LOSSES[loss_name]
    loss_fn = library_fn if implementation == "keras_contrast" else naive_fn
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = tf.reduce_mean(loss_fn(None, y_pred, temperature))
    return loss, tape.gradient(loss, y_pred)


def make_step(loss_name, implementation):
    """The timed step: `loss_and_gradient` as a `tf.function`."""
    return tf.function(
        lambda y_pred: loss_and_gradient(loss_name, implementation, y_pred)
    )


def run_step(step, y_pred):
    loss, gradient = step(y_pred)
    return loss.numpy(), gradient.numpy()


def max_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(loss_name, implementation, batch_size, dim, repeats):
    """Times one configuration; call it in a fresh (child) process."""
    views = LOSSES[loss_name][1]
    y_pred = make_embeddings(batch_size, views, dim)
    baseline_kib = max_rss_kib()
    step = make_step(loss_name, implementation)

    start = time.perf_counter()
    run_step(step, y_pred)  # Traces, then runs once.
    warmup_seconds = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        run_step(step, y_pred)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak_kib = max_rss_kib()
    return {
        "loss": loss_name,
        "impl": implementation,
        "N": batch_size,
        "dim": dim,
        "median_seconds": statistics.median(times),
        "repeats": repeats,
        "peak_rss_growth_mib": (peak_kib - baseline_kib) / 1024.0,
        "min_seconds": min(times),
        # CPU time of all the process's threads: less sensitive than wall
        # time to other processes competing for the cores.
        "median_cpu_seconds": statistics.median(cpu_times),
        "warmup_seconds": warmup_seconds,
        "baseline_rss_mib": baseline_kib / 1024.0,
        "load_average_1_min": os.getloadavg()[0],
    }


def check_equivalence(loss_names, dim):
    """Library vs naive at N=256: mean value (rtol 1e-4) and gradient."""
    rows = []
    for loss_name in loss_names:
        y_pred = make_embeddings(CHECK_BATCH_SIZE, LOSSES[loss_name][1], dim, seed=1)
        # Eagerly: a check of the math, not of the timed graphs.
        library_value, library_grad = (
            t.numpy() for t in loss_and_gradient(loss_name, "keras_contrast", y_pred)
        )
        naive_value, naive_grad = (
            t.numpy() for t in loss_and_gradient(loss_name, "naive", y_pred)
        )
        rows.append(
            {
                "loss": loss_name,
                "N": CHECK_BATCH_SIZE,
                "keras_contrast_mean": float(library_value),
                "naive_mean": float(naive_value),
                "relative_difference": float(
                    abs(library_value - naive_value) / abs(naive_value)
                ),
                "gradient_max_abs_difference": float(
                    np.max(np.abs(library_grad - naive_grad))
                ),
                "gradient_max_abs": float(np.max(np.abs(naive_grad))),
            }
        )
    return {
        "checks": rows,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_contrast": keras_contrast.__version__,
            "numpy": np.__version__,
        },
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }


def run_job(job):
    """Runs `("check", loss_names, dim)` or
    `("measure", loss, impl, N, dim, repeats)` and returns a JSON string."""
    kind, *args = job
    result = check_equivalence(*args) if kind == "check" else measure(*args)
    return json.dumps(result)


# ---------------------------------------------------------------------------
# Child process runners (the parent never runs a TF op itself).
# ---------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


def _fork_child(job, writer):
    try:
        writer.send(run_job(job))
    except BaseException as error:  # Report it to the parent, then die.
        writer.send(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        raise


def run_forked(job, timeout):
    """Runs `job` in a process forked from this one (TF imported, not run)."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_fork_child, args=(job, writer))
    process.start()
    writer.close()
    try:
        if not reader.poll(timeout):
            process.kill()
            raise ChildFailed(f"timed out after {timeout} s")
        line = reader.recv()
    except EOFError:
        line = None  # Killed without a word, e.g. by the OOM killer.
    finally:
        process.join()
        reader.close()
    if line is None:
        raise ChildFailed(f"child exited with code {process.exitcode}")
    result = json.loads(line)
    if "error" in result:
        raise ChildFailed(result["error"])
    return result


def run_spawned(job, timeout):
    """Runs `job` in a fresh interpreter: this script with --single/--check."""
    kind, *args = job
    command = [sys.executable, os.path.abspath(__file__)]
    if kind == "check":
        loss_names, dim = args
        command += ["--check", *loss_names, "--dim", str(dim)]
    else:
        loss_name, implementation, batch_size, dim, repeats = args
        command += ["--single", loss_name, implementation, str(batch_size)]
        command += ["--dim", str(dim), "--repeats", str(repeats)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"timed out after {timeout} s")
    json_lines = [l for l in completed.stdout.splitlines() if l.startswith("{")]
    if completed.returncode != 0 or not json_lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ChildFailed(f"exit code {completed.returncode}: {tail[0]}")
    return json.loads(json_lines[-1])


# ---------------------------------------------------------------------------
# Parent: schedule, collect, report.
# ---------------------------------------------------------------------------


def library_fingerprint():
    """SHA-256 over the sources of `keras_contrast.losses`, to tell which
    version of the library a results file measured."""
    package = os.path.dirname(os.path.abspath(losses.__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def compute_ratios(records):
    by_key = {(r["loss"], r["impl"], r["N"]): r for r in records}
    ratios = []
    for (loss_name, implementation, batch_size), record in by_key.items():
        if implementation != "keras_contrast":
            continue
        naive = by_key.get((loss_name, "naive", batch_size))
        if naive is None:
            continue
        ratios.append(
            {
                "loss": loss_name,
                "N": batch_size,
                "time_ratio": _ratio(record["median_seconds"], naive["median_seconds"]),
                "cpu_time_ratio": _ratio(
                    record.get("median_cpu_seconds"), naive.get("median_cpu_seconds")
                ),
                "memory_ratio": _ratio(
                    record["peak_rss_growth_mib"], naive["peak_rss_growth_mib"]
                ),
            }
        )
    return ratios


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _format(value, spec):
    if value is None:
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def format_table(records, ratios):
    by_key = {(r["loss"], r["impl"], r["N"]): r for r in records}
    header = (
        f"{'loss':<14}{'N':>6}  {'kc ms':>9}{'naive ms':>10}{'time x':>8}  "
        f"{'kc MiB':>9}{'naive MiB':>10}{'mem x':>7}  {'cpu x':>6}"
    )
    lines = [header, "-" * len(header)]
    previous_loss = None
    for ratio in ratios:
        if previous_loss is not None and ratio["loss"] != previous_loss:
            lines.append("")
        previous_loss = ratio["loss"]
        library = by_key[(ratio["loss"], "keras_contrast", ratio["N"])]
        naive = by_key[(ratio["loss"], "naive", ratio["N"])]
        seconds = [library["median_seconds"], naive["median_seconds"]]
        milliseconds = [None if s is None else 1000 * s for s in seconds]
        lines.append(
            f"{LOSSES[ratio['loss']][0]:<14}{ratio['N']:>6}  "
            f"{_format(milliseconds[0], '9.1f')}{_format(milliseconds[1], '10.1f')}"
            f"{_format(ratio['time_ratio'], '8.2f')}  "
            f"{_format(library['peak_rss_growth_mib'], '9.1f')}"
            f"{_format(naive['peak_rss_growth_mib'], '10.1f')}"
            f"{_format(ratio['memory_ratio'], '7.2f')}"
            f"  {_format(ratio['cpu_time_ratio'], '6.2f')}"
        )
    return "\n".join(lines)


def assert_equivalent(check):
    for row in check["checks"]:
        if row["relative_difference"] > CHECK_RTOL:
            raise AssertionError(
                f"{row['loss']}: keras_contrast mean {row['keras_contrast_mean']:.8g}"
                f" != naive mean {row['naive_mean']:.8g} (rtol {CHECK_RTOL}); "
                "the naive reference does not compute the same loss."
            )
        # Float32 sums over 2N columns in different orders: compare to the
        # gradient's scale.
        if row["gradient_max_abs_difference"] > 1e-4 * row["gradient_max_abs"]:
            raise AssertionError(
                f"{row['loss']}: gradients differ by "
                f"{row['gradient_max_abs_difference']:.3g} "
                f"(max |grad| {row['gradient_max_abs']:.3g})."
            )


def run_benchmark(args, fingerprint):
    run_child = run_forked if args.isolation == "fork" else run_spawned
    sizes = QUICK_SIZES if args.quick and args.sizes is None else args.sizes
    sizes = sizes or DEFAULT_SIZES
    repeats = 1 if args.quick and args.repeats is None else args.repeats
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()

    check = run_child(("check", args.losses, args.dim), args.timeout)
    assert_equivalent(check)
    for row in check["checks"]:
        print(
            f"check {row['loss']:<14} N={row['N']}: mean "
            f"{row['keras_contrast_mean']:.6f} vs naive {row['naive_mean']:.6f} "
            f"(rel diff {row['relative_difference']:.1e}), grad max diff "
            f"{row['gradient_max_abs_difference']:.1e}",
            flush=True,
        )

    records = []
    for loss_name in args.losses:
        for batch_size in sizes:
            config_repeats = repeats or DEFAULT_REPEATS.get(batch_size, 3)
            for implementation in IMPLEMENTATIONS:
                if library_fingerprint() != fingerprint:
                    # Forked children would mix the imported code with the
                    # new source autograph reads from disk.
                    raise SystemExit(
                        "keras_contrast/losses changed on disk during the "
                        "benchmark; nothing written. Run it again."
                    )
                job = ("measure", loss_name, implementation, batch_size, args.dim)
                try:
                    record = run_child(job + (config_repeats,), args.timeout)
                    status = (
                        f"{1000 * record['median_seconds']:10.1f} ms"
                        f"{record['peak_rss_growth_mib']:10.1f} MiB"
                        f"   (cpu {record['median_cpu_seconds']:.2f} s, warm-up "
                        f"{record['warmup_seconds']:.1f} s, load "
                        f"{record['load_average_1_min']:.1f})"
                    )
                except ChildFailed as error:
                    record = {
                        "loss": loss_name,
                        "impl": implementation,
                        "N": batch_size,
                        "dim": args.dim,
                        "median_seconds": None,
                        "repeats": config_repeats,
                        "peak_rss_growth_mib": None,
                        "error": str(error),
                    }
                    status = f"FAILED: {error}"
                records.append(record)
                print(
                    f"{loss_name:<14}{implementation:<15}N={batch_size:<6}{status}",
                    flush=True,
                )

    ratios = compute_ratios(records)
    total_seconds = time.perf_counter() - started
    results = {
        "description": (
            "Forward + backward (gradient w.r.t. y_pred) of each loss's mean, "
            "one device, float32, inside tf.function; median of `repeats` runs "
            "after one warm-up. peak_rss_growth_mib: child process ru_maxrss "
            "after the runs minus ru_maxrss after imports and input creation. "
            "Ratios are keras_contrast / naive."
        ),
        "machine": {
            **machine_info(started_at),
            **check["versions"],
            "tf_threads": check["tf_threads"],
            "keras_contrast_losses_sha256": fingerprint,
            # Other processes on the machine skew the timings.
            "load_average_1_5_15_min": {
                "start": load_at_start,
                "end": os.getloadavg(),
            },
        },
        "settings": {
            "dim": args.dim,
            "dtype": "float32",
            "sizes": list(sizes),
            "isolation": args.isolation,
            "temperatures": {name: spec[2] for name, spec in LOSSES.items()},
            "total_seconds": round(total_seconds, 1),
        },
        "equivalence_check": check["checks"],
        "records": records,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)

    print()
    print(format_table(records, ratios))
    print(
        "\nkc = keras_contrast; x = keras_contrast / naive (cpu x: ratio of "
        "process CPU times).\n"
        f"Median wall time per forward+backward step; "
        f"dim {args.dim}, float32, {os.cpu_count()} CPUs, TF "
        f"{check['versions']['tensorflow']}, Keras {check['versions']['keras']}."
    )
    print(f"Total {total_seconds:.0f} s. Results written to {args.output}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help=f"global batch sizes N "
        f"(default {' '.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument(
        "--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES),
        help="losses to run (default: all)",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed repeats for every N (default: "
        f"{DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: N = {', '.join(map(str, QUICK_SIZES))}, 1 repeat",
    )
    parser.add_argument("--dim", type=int, default=128, help="embedding dim")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON path")
    parser.add_argument(
        "--isolation", choices=("fork", "spawn"), default="fork",
        help="fork children from this process (fast) or spawn a fresh "
        "interpreter per configuration",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0,
        help="seconds before a configuration is abandoned",
    )
    parser.add_argument(
        "--single", nargs=3, metavar=("LOSS", "IMPL", "N"),
        help="(internal) measure one configuration, print one JSON line",
    )
    parser.add_argument(
        "--check", nargs="+", metavar="LOSS",
        help="(internal) run the equivalence check, print one JSON line",
    )
    return parser.parse_args(argv)


def main(argv=None):
    # The library as imported, which forked children run.
    fingerprint = library_fingerprint()
    args = parse_args(argv)
    if args.single:
        loss_name, implementation, batch_size = args.single
        if loss_name not in LOSSES or implementation not in IMPLEMENTATIONS:
            raise SystemExit(f"unknown configuration {args.single}")
        batch_size = int(batch_size)
        repeats = args.repeats or DEFAULT_REPEATS.get(batch_size, 3)
        job = ("measure", loss_name, implementation, batch_size, args.dim, repeats)
        print(run_job(job), flush=True)
    elif args.check:
        print(run_job(("check", args.check, args.dim)), flush=True)
    else:
        run_benchmark(args, fingerprint)


if __name__ == "__main__":
    main()
