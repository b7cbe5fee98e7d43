"""Time and memory of the tiled contrastive loss against the dense one.

What is measured
----------------
InfoNCE (SimCLR's "all" negatives, τ = 0.1, L2-normalised) on N pairs of
random 128-d embeddings, `(N, 2, 128)` float32, one device: the loss and
its gradient with respect to the embeddings, in one `tf.function`
(forward + backward, what a training step spends on the loss). The dense
path builds two `(N, 2N)` logit matrices (8·N² bytes each: 2 GiB at
N = 16k, 8 GiB at 32k) plus their softmax in the backward pass; the tiled
path (`tile_size` columns per tile) holds a few `(N, tile_size)` tiles.

Each configuration (path, N) runs in its own fresh interpreter (this script
re-invoked with `--single`), side by side in one run:

- Time: traced and run once (warm-up), then `repeats` runs; the median.
- Memory: peak RSS of the process (VmHWM) minus the RSS just before the
  first call (inputs already exist), i.e. the loss's working memory plus
  tracing; glibc's mmap threshold is fixed (`MALLOC_MMAP_THRESHOLD_`) so
  that freed buffers leave RSS (see gradcache_bench.py).
- A watchdog stops a process whose RSS grows beyond `--cap-gib` (default
  20 GiB on this 24 GiB machine): recorded as out of memory.
- Largest N in 8 GiB: from the measured peaks, the largest N of the run
  whose peak stays within 8 GiB, per path (`--budget-gib`); the extra sizes
  (`--dense-extra`, `--tiled-extra`) are timed once.

Results go to `benchmarks/results/tiled_loss.json`.

Usage:
    python benchmarks/tiled_loss_bench.py                 # ~35 min
    python benchmarks/tiled_loss_bench.py --sizes 1024 4096 --repeats 1
    python benchmarks/tiled_loss_bench.py --append --sizes --dense-extra 8192 12288 \
        --tiled-extra                                     # add sizes to the results
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from bench_common import MMAP_THRESHOLD  # noqa: E402
from bench_common import child_command  # noqa: E402
from bench_common import describe  # noqa: E402
from bench_common import machine_info  # noqa: E402
from bench_common import measure_time_and_memory  # noqa: E402
from bench_common import random_pairs  # noqa: E402
from bench_common import run_child  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "tiled_loss.json"
)
DIM = 128
SIZES = (4096, 16384, 32768)
# Extra sizes for "the largest N within 8 GiB": dense between 16k and 32k,
# tiled beyond 32k.
DENSE_EXTRA = (24576,)
TILED_EXTRA = (65536,)


def measure(path, batch_size, tile_size, repeats, cap_gib):
    import tensorflow as tf

    from keras_contrast import losses

    loss = losses.InfoNCE(0.1, tile_size=tile_size if path == "tiled" else None)
    y = random_pairs(batch_size, DIM)

    @tf.function
    def value_and_gradient(y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = loss(None, y)
        return value, tape.gradient(value, y)

    fields, (value, _) = measure_time_and_memory(value_and_gradient, y, repeats, path,
                                                 batch_size, cap_gib)
    return {
        "config": path,
        "N": batch_size,
        "tile_size": tile_size if path == "tiled" else None,
        **fields,
        "loss": float(value),
        "load_average_1_min": os.getloadavg()[0],
        "versions": {"tensorflow": tf.__version__},
    }


def run_spawned(path, batch_size, tile_size, repeats, cap_gib, timeout):
    key = {"config": path, "N": batch_size}
    command = child_command(__file__, [path], sizes=batch_size, tile_size=tile_size,
                            repeats=repeats, cap_gib=cap_gib)
    return run_child(
        command, key, timeout,
        timed_out=lambda: {**key, "error": f"timed out after {timeout} s"},
        stopped=lambda growth_mib: {**key, "out_of_memory": True,
                                    "stopped_at_growth_mib": growth_mib, "cap_gib": cap_gib})


def summarise(records, budget_gib):
    by_key = {(r["config"], r["N"]): r for r in records}
    rows = []
    for n in sorted({r["N"] for r in records}):
        dense, tiled = by_key.get(("dense", n)), by_key.get(("tiled", n))
        row = {"N": n}
        for name, record in (("dense", dense), ("tiled", tiled)):
            if record and "median_seconds" in record:
                row[f"{name}_seconds"] = record["median_seconds"]
                row[f"{name}_peak_rss_growth_mib"] = record["peak_rss_growth_mib"]
            elif record:
                row[f"{name}_failure"] = "out of memory" if record.get("out_of_memory") \
                    else record.get("error")
        if "dense_seconds" in row and "tiled_seconds" in row:
            row["time_tiled_vs_dense"] = row["tiled_seconds"] / row["dense_seconds"]
            row["memory_tiled_vs_dense"] = (row["tiled_peak_rss_growth_mib"]
                                            / row["dense_peak_rss_growth_mib"])
            row["loss_relative_difference"] = abs(by_key[("tiled", n)]["loss"]
                                                  - dense["loss"]) / abs(dense["loss"])
        rows.append(row)
    largest = {}
    for path in ("dense", "tiled"):
        fitting = [r["N"] for r in records if r["config"] == path and "peak_rss_growth_mib" in r
                   and r["peak_rss_growth_mib"] <= budget_gib * 1024]
        largest[path] = max(fitting) if fitting else None
    return rows, largest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--dense-extra", type=int, nargs="*", default=list(DENSE_EXTRA))
    parser.add_argument("--tiled-extra", type=int, nargs="*", default=list(TILED_EXTRA))
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cap-gib", type=float, default=20.0,
                        help="RSS growth at which a run is stopped as out of memory")
    parser.add_argument("--budget-gib", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--append", action="store_true",
                        help="add this run's records to those already in --output (e.g. more "
                        "sizes to locate a limit) and summarise them together")
    parser.add_argument("--single", choices=("dense", "tiled"), help="(internal)")
    args = parser.parse_args(argv)
    if args.single:
        record = measure(args.single, args.sizes[0], args.tile_size, args.repeats, args.cap_gib)
        print(json.dumps(record), flush=True)
        return

    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()
    previous = []
    if args.append and os.path.exists(args.output):
        with open(args.output) as handle:
            previous = json.load(handle)["records"]
    plan = [(path, n, args.repeats) for n in args.sizes for path in ("dense", "tiled")]
    # The extra sizes only locate the memory limit: one timed run each.
    plan += [("dense", n, 1) for n in args.dense_extra]
    plan += [("tiled", n, 1) for n in args.tiled_extra]
    records = []
    for path, n, repeats in plan:
        records.append(run_spawned(path, n, args.tile_size, repeats, args.cap_gib,
                                   args.timeout))
        print(describe(records[-1], f"{path:<6} N={n:<6}", "loss", 2), flush=True)
    records = previous + records
    rows, largest = summarise(records, args.budget_gib)
    results = {
        "benchmark": "tiled_loss",
        "description": __doc__.split("\n\n", 1)[0],
        "loss": "InfoNCE(0.1, negatives='all'), value and gradient wrt (N, 2, 128) float32",
        "tile_size": args.tile_size,
        "repeats": args.repeats,
        "malloc_mmap_threshold": MMAP_THRESHOLD,
        "machine": machine_info(started_at),
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "summary": rows,
        f"largest_N_within_{args.budget_gib:g}_gib": largest,
        "records": records,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    for row in rows:
        print(json.dumps(row))
    print(f"largest N within {args.budget_gib:g} GiB: {largest}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
