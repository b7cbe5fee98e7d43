"""simulated_cpu_strategy: devices, caching, and the too-late error."""

import subprocess
import sys

import pytest

from keras_contrast import distribute


def test_strategy_has_requested_replicas_and_is_reused():
    strategy = distribute.simulated_cpu_strategy(2)
    assert strategy.num_replicas_in_sync == 2
    assert distribute.simulated_cpu_strategy(2) is strategy
    assert distribute.simulated_cpu_strategy(4).num_replicas_in_sync == 4


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4", True])
def test_rejects_bad_replica_count(bad):
    with pytest.raises(ValueError, match="num_devices"):
        distribute.simulated_cpu_strategy(bad)


def test_clear_error_when_devices_already_initialised():
    # The conftest configured 4 logical CPUs in this process: asking for
    # more after TensorFlow initialised them must say why it cannot.
    with pytest.raises(RuntimeError, match="before any TensorFlow op"):
        distribute.simulated_cpu_strategy(8)


# slow: a child process (~15 s); the 4-device split is what every test uses.
@pytest.mark.slow
def test_fresh_process_can_split_into_eight():
    code = (
        "from keras_contrast import distribute;"
        "print(distribute.simulated_cpu_strategy(8).num_replicas_in_sync)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "8"
