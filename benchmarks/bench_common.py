"""What every benchmark records about the machine it ran on, the memory
and time probes they share (Linux `/proc`), and the running of each
configuration in a fresh interpreter of its own."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# glibc's mmap threshold (bytes) a configuration's process runs with: fixed,
# so that freed buffers leave RSS (see gradcache_bench.py).
MMAP_THRESHOLD = 65536


def machine_info(started_at=None):
    """CPU, memory, platform and start time, for a results file's `machine`.

    Args:
        started_at: aware `datetime` the run started (default: now, UTC).
    """
    started_at = started_at or datetime.datetime.now(datetime.timezone.utc)
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "total_ram_gib": round(total_ram / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": started_at.isoformat(timespec="seconds"),
    }


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def current_rss_kib():
    """VmRSS: this process's resident memory now."""
    return _status_kib("VmRSS")


def reset_peak_rss():
    """Resets the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_kib():
    """VmHWM: peak RSS since the process started or since `reset_peak_rss`."""
    return _status_kib("VmHWM")


def timed(function, argument, repeats, after_warmup=None):
    """Median and list of wall times of `repeats` runs (after a warm-up)."""
    start = time.perf_counter()
    _block(function(argument))
    warmup = time.perf_counter() - start
    if after_warmup is not None:
        after_warmup()
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


def start_watchdog(config, batch_size, baseline_kib, budget_mib):
    """Ends the process (reporting it) as soon as its RSS grows more than
    `budget_mib` above `baseline_kib`: the run does not fit the budget."""
    import threading

    def watch():
        while True:
            growth_mib = (current_rss_kib() - baseline_kib) / 1024
            if growth_mib > budget_mib:
                record = {
                    "config": config,
                    "N": batch_size,
                    "budget_mib": budget_mib,
                    "within_budget": False,
                    "stopped_at_growth_mib": growth_mib,
                }
                print(json.dumps(record), flush=True)
                os._exit(0)
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()


def random_pairs(batch_size, dim, seed=0):
    """`(batch_size, 2, dim)` float32 standard-normal embeddings, a constant."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(batch_size, 2, dim)).astype("float32"))


def measure_time_and_memory(function, argument, repeats, config, batch_size, cap_gib):
    """Times `function(argument)` and its memory, in the process of one
    configuration.

    Starts the watchdog (`start_watchdog`: growth above `cap_gib` ends the
    process), then `timed`: a warm-up call (tracing included) and `repeats`
    timed calls, the peak-RSS mark read and reset between them; then calls
    `function` once more.

    Args:
        function: the step (e.g. a `tf.function`).
        argument: its input, created before this call (not counted).
        repeats: int, timed calls after the warm-up.
        config: the configuration's name, for the watchdog's record.
        batch_size: int, for the watchdog's record.
        cap_gib: float, RSS growth that ends the process.

    Returns:
        `(fields, outputs)`: the record's entries `median_seconds`,
        `seconds`, `warmup_seconds`, `peak_rss_growth_mib` (over the whole
        run, tracing included) and `step_peak_rss_growth_mib` (the calls
        after the warm-up), growths over the RSS at the start; and the
        outputs of the last call.
    """
    baseline_kib = current_rss_kib()
    start_watchdog(config, batch_size, baseline_kib, cap_gib * 1024)
    marks = {}

    def after_warmup():
        marks["peak_with_tracing_kib"] = peak_rss_kib()
        reset_peak_rss()

    median, times, warmup = timed(function, argument, repeats, after_warmup)
    peak_kib = max(peak_rss_kib(), marks["peak_with_tracing_kib"])
    outputs = function(argument)
    fields = {
        "median_seconds": median,
        "seconds": times,
        "warmup_seconds": warmup,
        "peak_rss_growth_mib": (peak_kib - baseline_kib) / 1024,
        "step_peak_rss_growth_mib": (peak_rss_kib() - baseline_kib) / 1024,
    }
    return fields, outputs


def child_command(script, single, **options):
    """The command that runs `script` again for one configuration:
    `--single *single`, then each option as `--name value` (underscores in
    `name` written as dashes), in the order given."""
    command = [sys.executable, os.path.abspath(script), "--single", *single]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def run_child(command, key, timeout, timed_out, stopped):
    """Runs one configuration's `command` in a fresh interpreter, with glibc's
    mmap threshold fixed (`MMAP_THRESHOLD`), and returns its record: the last
    JSON line it printed.

    A failure is returned as a record, not raised: `timed_out()` when it
    runs past `timeout` seconds, `stopped(growth_mib)` when the watchdog
    stopped it at that RSS growth, and `{**key, "error": "exit <status>:
    <last line of stderr>"}` when it printed no record.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                   env=env)
    except subprocess.TimeoutExpired:
        return timed_out()
    json_lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not json_lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**key, "error": f"exit {completed.returncode}: {tail[0]}"}
    record = json.loads(json_lines[-1])
    if record.get("within_budget") is False:  # the watchdog stopped it
        return stopped(record["stopped_at_growth_mib"])
    return record


def describe(record, head, value_key, digits):
    """One line of the log for `record`: `head` (its configuration), then
    its failure, or its median time (`digits` decimals), RSS growth,
    `record[value_key]` (the loss) and the load average."""
    if "error" in record:
        return f"{head} FAILED: {record['error']}"
    if record.get("out_of_memory"):
        return (f"{head} out of memory (stopped at "
                f"{record['stopped_at_growth_mib'] / 1024:.1f} GiB > {record['cap_gib']} GiB)")
    return (f"{head} {record['median_seconds']:8.{digits}f} s "
            f"{record['peak_rss_growth_mib']:9.1f} MiB  loss {record[value_key]:.6f} "
            f"(load {record['load_average_1_min']:.1f})")
