"""Smoke test of examples/mocov3_stability.py (full run: `make experiments`)."""

import math

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_plot(tmp_path):
    record, _ = run_quick("mocov3_stability", tmp_path)
    for run in record["runs"].values():
        assert len(run["first"]) == len(run["last"]) == len(run["loss"]) == 4
        assert all(math.isfinite(v) for v in run["loss"])
