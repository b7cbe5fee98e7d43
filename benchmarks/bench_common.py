"""What every benchmark records about the machine it ran on, and the
memory and time probes they share (Linux `/proc`)."""

import datetime
import json
import os
import platform
import statistics
import time


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
