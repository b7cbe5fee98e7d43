"""Smoke test of examples/bn_leak.py (the full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_plot(tmp_path):
    record, table = run_quick("bn_leak", tmp_path)
    assert set(record["runs"]) == {"per-replica BN", "synchronised BN", "Shuffle BN", "LayerNorm"}
    for runs in record["runs"].values():
        assert 0.0 <= runs[0]["knn"] <= 1.0 and runs[0]["loss"][-1] > 0
    assert table.count("\n| ") == 5  # header + 4 rows
