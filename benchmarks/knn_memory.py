"""Peak memory of streaming k-NN evaluation with banks of 10k and 100k features.

What is measured
----------------
`keras_contrast.evaluation.knn_accuracy` on `tf.data` datasets of
synthetic features passed through an identity encoder: the bank
(`--bank-sizes`, default 10,000 and 100,000 rows of d = 128) and the
queries (`--queries`, default 2,048) are generated inside `tf.data`
(stateless normal features, 10 classes), batch by batch (`--batch-size`),
so the only features that can accumulate are the bank's. Each
configuration runs in its own fresh interpreter (this script re-invoked
with `--single`): a small warm-up evaluation first (TensorFlow's kernels,
thread pools and allocator set up), then the peak-RSS mark (VmHWM) is reset
(`bench_common.reset_peak_rss`) and the measured evaluation runs; its
peak is the high-water mark after the reset. glibc's mmap threshold is
fixed (`MALLOC_MMAP_THRESHOLD_`, as the other benchmarks) so that freed
buffers leave RSS.

The check (issue 17): for each bank dtype, peak(100k) <= peak(10k) + the
extra bank features' bytes ((100k - 10k) x d x itemsize) + 10 % of
peak(10k). For contrast (skip with `--no-contrast`) each bank is also
scored whole in float32 (`bank_chunk_size` = bank size, what `knn_predict`
did before): its similarities grow with the bank (queries in flight x
bank rows), and the same bound is reported for it (informational, not part
of the pass).

Results go to `benchmarks/results/knn_memory.json`.

Usage:
    python benchmarks/knn_memory.py                 # ~3-4 min on 2 cores
    python benchmarks/knn_memory.py --no-contrast   # the checked runs only
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

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "knn_memory.json"
)
MMAP_THRESHOLD = 65536
DIM = 128
CLASSES = 10
BANK_SIZES = (10_000, 100_000)
DTYPES = ("float32", "float16")
ITEMSIZE = {"float32": 4, "float16": 2}


def synthetic(rows, batch_size, seed):
    """A dataset of `(features, labels)` batches generated batch by batch."""
    import tensorflow as tf

    def batch(index):
        size = tf.minimum(tf.constant(batch_size, tf.int64), rows - index * batch_size)
        features = tf.random.stateless_normal((size, DIM), seed=tf.stack([seed, index]))
        labels = tf.random.stateless_uniform((size,), seed=tf.stack([seed + 1, index]),
                                             minval=0, maxval=CLASSES, dtype=tf.int64)
        return features, labels

    batches = -(-rows // batch_size)
    return tf.data.Dataset.range(batches).map(batch)


def measure(bank_size, bank_dtype, bank_chunk_size, queries, batch_size, chunk_size):
    import tensorflow as tf

    from keras_contrast.evaluation import knn_accuracy

    def identity(x, training=False):
        return x

    settings = dict(k=200, temperature=0.1, bank_dtype=bank_dtype, chunk_size=chunk_size,
                    bank_chunk_size=bank_chunk_size)
    # Warm-up on a small bank: kernels, thread pools, allocator.
    knn_accuracy(identity, synthetic(2 * batch_size, batch_size, 7),
                 synthetic(batch_size, batch_size, 9), **settings)
    bank, test = synthetic(bank_size, batch_size, 1), synthetic(queries, batch_size, 3)
    baseline_kib = current_rss_kib()
    reset_peak_rss()
    start = time.perf_counter()
    accuracy = knn_accuracy(identity, bank, test, **settings)
    seconds = time.perf_counter() - start
    peak_kib = peak_rss_kib()
    return {
        "bank_size": bank_size,
        "bank_dtype": bank_dtype,
        "bank_chunk_size": bank_chunk_size,
        "peak_rss_mib": peak_kib / 1024,
        "baseline_rss_mib": baseline_kib / 1024,
        "peak_rss_growth_mib": (peak_kib - baseline_kib) / 1024,
        "seconds": seconds,
        "accuracy": accuracy,
        "load_average": os.getloadavg(),
        "versions": {"tensorflow": tf.__version__},
    }


def run_spawned(args, bank_size, bank_dtype, bank_chunk_size):
    command = [sys.executable, os.path.abspath(__file__), "--single",
               "--bank-sizes", str(bank_size), "--dtypes", bank_dtype,
               "--bank-chunk-size", str(bank_chunk_size), "--queries", str(args.queries),
               "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    try:
        completed = subprocess.run(command, capture_output=True, text=True,
                                   timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"bank_size": bank_size, "bank_dtype": bank_dtype,
                "bank_chunk_size": bank_chunk_size, "error": f"timed out after {args.timeout} s"}
    json_lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not json_lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"bank_size": bank_size, "bank_dtype": bank_dtype,
                "bank_chunk_size": bank_chunk_size,
                "error": f"exit {completed.returncode}: {tail[0]}"}
    return json.loads(json_lines[-1])


def check(records, small, large, bank_dtype, chunk_size):
    """The bound of one dtype: peak(large) <= peak(small) + extra bytes + 10 %.
    `chunk_size` None: the whole-bank runs."""
    by_size = {r["bank_size"]: r for r in records if r["bank_dtype"] == bank_dtype
               and "peak_rss_mib" in r and (r["bank_chunk_size"] == chunk_size
                                            or chunk_size is None
                                            and r["bank_chunk_size"] == r["bank_size"])}
    if small not in by_size or large not in by_size:
        return {"bank_dtype": bank_dtype, "pass": False, "error": "a measurement failed"}
    extra_mib = (large - small) * DIM * ITEMSIZE[bank_dtype] / 2**20
    peak_small, peak_large = by_size[small]["peak_rss_mib"], by_size[large]["peak_rss_mib"]
    bound = peak_small + extra_mib + 0.1 * peak_small
    return {
        "bank_dtype": bank_dtype,
        "bank_chunk_size": chunk_size or "whole bank",
        f"peak_rss_{small}_mib": round(peak_small, 1),
        f"peak_rss_{large}_mib": round(peak_large, 1),
        "extra_features_mib": round(extra_mib, 1),
        "bound_mib": round(bound, 1),
        "peak_difference_mib": round(peak_large - peak_small, 1),
        "pass": peak_large <= bound,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=list(BANK_SIZES),
                        help="the small and the large bank (one with --single)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    # keras_contrast.evaluation.knn.DEFAULT_BANK_CHUNK_SIZE: what a dataset bank gets.
    parser.add_argument("--bank-chunk-size", type=int, default=16384)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=1024, help="queries scored at once")
    parser.add_argument("--no-contrast", action="store_true",
                        help="skip scoring each bank whole (float32), the contrast")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--single", action="store_true", help="(internal)")
    args = parser.parse_args(argv)
    if args.single:
        record = measure(args.bank_sizes[0], args.dtypes[0], args.bank_chunk_size,
                         args.queries, args.batch_size, args.chunk_size)
        print(json.dumps(record), flush=True)
        return 0

    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()
    small, large = sorted(args.bank_sizes)
    plan = [(n, dtype, args.bank_chunk_size) for dtype in args.dtypes for n in (small, large)]
    if not args.no_contrast:
        plan += [(n, "float32", n) for n in (small, large)]
    records = []
    for bank_size, bank_dtype, chunk in plan:
        records.append(run_spawned(args, bank_size, bank_dtype, chunk))
        record = records[-1]
        if "error" in record:
            print(f"{bank_dtype} bank {bank_size} chunk {chunk}: FAILED {record['error']}")
        else:
            print(f"{bank_dtype} bank {bank_size:>7} chunk {chunk:>7}: peak "
                  f"{record['peak_rss_mib']:7.1f} MiB (growth "
                  f"{record['peak_rss_growth_mib']:6.1f}) {record['seconds']:6.1f} s "
                  f"(load {record['load_average'][0]:.1f})",
                  flush=True)
    checks = [check(records, small, large, dtype, args.bank_chunk_size) for dtype in args.dtypes]
    passed = all(c["pass"] for c in checks)
    contrast = None if args.no_contrast else check(records, small, large, "float32", None)
    results = {
        "benchmark": "knn_memory",
        "description": __doc__.split("\n\n", 1)[0],
        "bound": "peak_rss(large bank) <= peak_rss(small bank) + extra bank features' bytes "
                 "+ 10 % of peak_rss(small bank), per bank dtype",
        "settings": {
            "bank_sizes": [small, large], "dim": DIM, "classes": CLASSES,
            "queries": args.queries, "batch_size": args.batch_size,
            "chunk_size": args.chunk_size, "bank_chunk_size": args.bank_chunk_size,
            "k": 200, "temperature": 0.1, "encoder": "identity",
            "input": "tf.data, stateless normal features generated batch by batch",
            "malloc_mmap_threshold": MMAP_THRESHOLD,
        },
        "machine": machine_info(started_at),
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "checks": checks,
        "pass": passed,
        "contrast_whole_bank": contrast,
        "records": records,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    for item in checks:
        print(json.dumps(item))
    if contrast:
        print("contrast (whole bank, informational):", json.dumps(contrast))
    print(("PASS" if passed else "FAIL") + f": wrote {args.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
