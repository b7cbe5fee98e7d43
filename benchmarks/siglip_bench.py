"""Time and memory of the sigmoid pairwise loss (SigLIP) against CLIP's
softmax loss, dense and tiled.

What is measured
----------------
`SigLIPLoss(0.1, bias=-10)` and `CLIPLoss(0.07)` on N pairs of random
128-d embeddings, `(N, 2, 128)` float32, one device, as `fit` runs them
with a learnable temperature (and, for SigLIP, bias): the loss and its
gradient with respect to the embeddings, the log-scale s (τ = exp(-s)) and
the bias, in one `tf.function`. Dense: SigLIP builds one `(N, N)` logit
matrix (A·Bᵀ), CLIP two (A·Bᵀ and B·Aᵀ) and their softmaxes; tiled
(`tile_size` columns per tile, recomputing custom gradient): a few
`(N, tile_size)` tiles.

Each configuration (loss, path, N) runs in its own fresh interpreter (this
script re-invoked with `--single`), all in one run so that the SigLIP/CLIP
ratios compare runs under the same machine load:

- Time: traced and run once (warm-up), then `repeats` runs; the median.
- Memory: peak RSS (VmHWM) minus the RSS just before the first call
  (inputs already exist): the loss's working memory plus tracing; glibc's
  mmap threshold is fixed (`MALLOC_MMAP_THRESHOLD_`) so that freed buffers
  leave RSS (as benchmarks/tiled_loss_bench.py).
- A watchdog stops a process whose RSS grows beyond the cap (`--cap-gib`,
  default 8 GiB, lowered to what the machine has available minus
  `--headroom-gib` when it is spawned: other jobs share it): recorded as
  out of memory, not a crash; so is a timeout.

Results go to `benchmarks/results/siglip.json`.

Usage:
    python benchmarks/siglip_bench.py                     # ~10 min on 2 cores
    python benchmarks/siglip_bench.py --sizes 1024 2048 --repeats 1 --output /tmp/s.json
    python benchmarks/siglip_bench.py --append --paths dense  # re-measure one path
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
    os.path.dirname(os.path.abspath(__file__)), "results", "siglip.json"
)
DIM = 128
SIZES = (1024, 2048, 4096, 8192, 16384)
LOSSES = ("siglip", "clip")
PATHS = ("dense", "tiled")
TEMPERATURE = {"siglip": 0.1, "clip": 0.07}
BIAS = -10.0


def measure(loss_name, path, batch_size, tile_size, repeats, cap_gib):
    import math

    import tensorflow as tf

    from keras_contrast import losses

    tiles = tile_size if path == "tiled" else None
    log_scale = tf.Variable(math.log(1.0 / TEMPERATURE[loss_name]), name="log_scale")
    variables = [log_scale]
    if loss_name == "siglip":
        loss = losses.SigLIPLoss(TEMPERATURE["siglip"], bias=BIAS, tile_size=tiles)
        bias = tf.Variable(BIAS, name="bias")
        variables.append(bias)
        compute = lambda y: loss(None, y, temperature=tf.exp(-log_scale), bias=bias)  # noqa
    else:
        loss = losses.CLIPLoss(TEMPERATURE["clip"], tile_size=tiles)
        compute = lambda y: loss(None, y, temperature=tf.exp(-log_scale))  # noqa: E731
    y = random_pairs(batch_size, DIM)

    @tf.function
    def value_and_gradients(y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = compute(y)
        return value, tape.gradient(value, [y, *variables])

    fields, (value, gradients) = measure_time_and_memory(
        value_and_gradients, y, repeats, f"{loss_name} {path}", batch_size, cap_gib)
    return {
        "loss": loss_name,
        "config": path,
        "N": batch_size,
        "tile_size": tiles,
        **fields,
        "value": float(value),
        "gradient_norms": [float(tf.norm(g)) for g in gradients],
        "load_average_1_min": os.getloadavg()[0],
        "versions": {"tensorflow": tf.__version__},
    }


def source_hashes():
    """sha256 (first 16 hex digits) of the measured loss modules, so a result
    can be matched to the code it timed."""
    import hashlib

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras_contrast",
                          "losses")
    hashes = {}
    for name in ("siglip.py", "clip.py", "tiled.py"):
        with open(os.path.join(folder, name), "rb") as handle:
            hashes[name] = hashlib.sha256(handle.read()).hexdigest()[:16]
    return hashes


def available_gib():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def run_spawned(loss_name, path, batch_size, args):
    """One configuration in a fresh interpreter; an out-of-memory stop or a
    timeout is returned as a record, not raised."""
    cap_gib = max(0.5, min(args.cap_gib, available_gib() - args.headroom_gib))
    cap_gib = round(cap_gib, 1)
    hashes = source_hashes()  # the code this process imports
    key = {"loss": loss_name, "config": path, "N": batch_size}
    command = child_command(__file__, [loss_name, path], sizes=batch_size,
                            tile_size=args.tile_size, repeats=args.repeats, cap_gib=cap_gib)
    record = run_child(
        command, key, args.timeout,
        timed_out=lambda: {**key, "error": f"timed out after {args.timeout:g} s",
                           "load_average_1_min": os.getloadavg()[0]},
        stopped=lambda growth_mib: {**key, "out_of_memory": True, "cap_gib": cap_gib,
                                    "stopped_at_growth_mib": growth_mib,
                                    "load_average_1_min": os.getloadavg()[0]})
    if "error" in record:  # timed out or crashed: the record has no hashes
        return record
    return {**record, "source_sha256": hashes}


def failure(record):
    if record is None:
        return "not run"
    return "out of memory" if record.get("out_of_memory") else record.get("error")


def summarise(records):
    """One row per (path, N): both losses' time and peak, SigLIP/CLIP
    ratios, and tiled-vs-dense value agreement per loss."""
    by_key = {(r["loss"], r["config"], r["N"]): r for r in records}
    rows = []
    for path in PATHS:
        for n in sorted({r["N"] for r in records}):
            row = {"config": path, "N": n}
            for name in LOSSES:
                record = by_key.get((name, path, n))
                if record and "median_seconds" in record:
                    row[f"{name}_seconds"] = record["median_seconds"]
                    row[f"{name}_peak_rss_growth_mib"] = record["peak_rss_growth_mib"]
                else:
                    row[f"{name}_failure"] = failure(record)
            if "siglip_seconds" in row and "clip_seconds" in row:
                row["time_siglip_vs_clip"] = row["siglip_seconds"] / row["clip_seconds"]
                row["memory_siglip_vs_clip"] = (row["siglip_peak_rss_growth_mib"]
                                                / row["clip_peak_rss_growth_mib"])
            if path == "tiled":
                for name in LOSSES:
                    dense, tiled = by_key.get((name, "dense", n)), by_key.get((name, "tiled", n))
                    if dense and tiled and "value" in dense and "value" in tiled:
                        row[f"{name}_tiled_vs_dense_relative_difference"] = (
                            abs(tiled["value"] - dense["value"]) / abs(dense["value"]))
            rows.append(row)
    return rows


def table(rows):
    """The side-by-side table (Markdown)."""

    def cell(row, name, kind):
        if f"{name}_seconds" not in row:
            return row[f"{name}_failure"]
        if kind == "time":
            return f"{row[f'{name}_seconds']:.3f}"
        return f"{row[f'{name}_peak_rss_growth_mib']:.0f}"

    lines = ["| path | N | SigLIP s | CLIP s | time SigLIP/CLIP | SigLIP MiB | CLIP MiB | "
             "memory SigLIP/CLIP |", "|" + "---|" * 8]
    for row in rows:
        ratio_t = f"{row['time_siglip_vs_clip']:.2f}" if "time_siglip_vs_clip" in row else "–"
        ratio_m = (f"{row['memory_siglip_vs_clip']:.2f}" if "memory_siglip_vs_clip" in row
                   else "–")
        lines.append(f"| {row['config']} | {row['N']} | {cell(row, 'siglip', 'time')} | "
                     f"{cell(row, 'clip', 'time')} | {ratio_t} | {cell(row, 'siglip', 'mem')} | "
                     f"{cell(row, 'clip', 'mem')} | {ratio_m} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cap-gib", type=float, default=8.0,
                        help="RSS growth at which a run is stopped as out of memory")
    parser.add_argument("--headroom-gib", type=float, default=6.0,
                        help="memory left to other jobs: the cap is at most the available "
                        "memory minus this")
    parser.add_argument("--timeout", type=float, default=240.0,
                        help="seconds per configuration before it is recorded as timed out")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--append", action="store_true",
                        help="keep the records already in --output except those this run "
                        "measures again (same loss, path, N) and summarise them together")
    parser.add_argument("--single", nargs=2, metavar=("LOSS", "PATH"), help="(internal)")
    args = parser.parse_args(argv)
    if args.single:
        loss_name, path = args.single
        record = measure(loss_name, path, args.sizes[0], args.tile_size, args.repeats,
                         args.cap_gib)
        print(json.dumps(record), flush=True)
        return

    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg()
    hashes = source_hashes()
    records = []
    # SigLIP and CLIP of one (path, N) run back to back, so their ratio
    # compares runs under nearly the same load.
    for path in args.paths:
        for n in args.sizes:
            for name in args.losses:
                records.append(run_spawned(name, path, n, args))
                print(describe(records[-1], f"{name:<6} {path:<5} N={n:<6}", "value", 3),
                      flush=True)
    previous_runs = []
    if args.append and os.path.exists(args.output):
        with open(args.output) as handle:
            previous = json.load(handle)
        measured = {(r["loss"], r["config"], r["N"]) for r in records}
        records = [r for r in previous["records"]
                   if (r["loss"], r["config"], r["N"]) not in measured] + records
        previous_runs = previous.get("previous_runs", []) + [{
            "date": previous["machine"]["date"],
            **{k: previous.get(k) for k in ("load_average_start", "load_average_end",
                                            "total_seconds", "source_sha256")}}]
    rows = summarise(records)
    markdown = table(rows)
    results = {
        "benchmark": "siglip",
        "description": __doc__.split("\n\n", 1)[0],
        "losses": {
            "siglip": f"SigLIPLoss({TEMPERATURE['siglip']}, bias={BIAS}): value and gradient "
                      "wrt (N, 2, 128) float32, the log-scale and the bias",
            "clip": f"CLIPLoss({TEMPERATURE['clip']}): value and gradient wrt (N, 2, 128) "
                    "float32 and the log-scale",
        },
        "tile_size": args.tile_size,
        "repeats": args.repeats,
        "cap_gib": args.cap_gib,
        "headroom_gib": args.headroom_gib,
        "malloc_mmap_threshold": MMAP_THRESHOLD,
        "machine": machine_info(started_at),
        "source_sha256": hashes,
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "note": "The load average is recorded per configuration (the benchmark's own "
                "process adds about 1 to it on 2 cores); above ~2.5 other jobs shared the "
                "machine and inflate absolute times. The ratios compare back-to-back runs.",
        "total_seconds": round(time.perf_counter() - started, 1),
        "previous_runs": previous_runs,
        "summary": rows,
        "table": markdown.splitlines(),
        "records": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    print(markdown)
    print(f"load average {load_at_start[0]:.1f} -> {results['load_average_end'][0]:.1f}; "
          f"{results['total_seconds']:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
