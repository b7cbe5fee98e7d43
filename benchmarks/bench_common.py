"""What every benchmark records about the machine it ran on."""

import datetime
import os
import platform


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
