"""Smoke test of `examples/digits_demo.py` (the `make demo` job).

The demo runs in a subprocess: it splits the CPU into its own logical devices
at start-up, which this process (configured by `tests/conftest.py`) can no
longer do.
"""

import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "examples" / "digits_demo.py"

FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)"
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s+DCLW loss " + FLOAT, re.M)
KNN_LINE = re.compile(
    r"^kNN accuracy \(k=\d+\): " + FLOAT + r" \(raw pixels " + FLOAT
    + r", untrained encoder " + FLOAT + r"\)",
    re.M,
)


def run_quick_demo():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(DEMO), "--quick"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# slow: `make demo-digits`'s smoke run (~40 s); the CLI's training is tested in tests/cli.
@pytest.mark.slow
def test_quick_demo_trains_and_reports_knn_accuracy():
    result = run_quick_demo()
    assert result.returncode == 0, (
        f"demo exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-5000:]}"
    )

    epochs = EPOCH_LINE.findall(result.stdout)
    assert [int(epoch) for epoch, _, _ in epochs] == [1, 2], result.stdout
    losses = [float(loss) for _, _, loss in epochs]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses), losses

    match = KNN_LINE.search(result.stdout)
    assert match, f"no kNN accuracy line in:\n{result.stdout}"
    accuracies = [float(value) for value in match.groups()]
    assert all(0.0 <= value <= 1.0 for value in accuracies), accuracies
