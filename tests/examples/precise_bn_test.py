"""Smoke test of examples/precise_bn.py (full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_plot(tmp_path):
    record, _ = run_quick("precise_bn", tmp_path)
    assert len(record["knn"]) == 3
    assert all(0.0 <= values[0] <= 1.0 for values in record["knn"].values())
