"""Smoke test of examples/bn_leak.py (the full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_checks_the_emulation(tmp_path):
    record, table = run_quick("bn_leak", tmp_path)
    assert set(record["runs"]) == {"synchronised BN (any R) = 1 replica",
                                   "per-replica BN, 2 replicas"}
    for runs in record["runs"].values():
        run = runs[0]
        assert 0.0 <= run["knn"] <= 1.0 and run["loss"][-1] > 0
        assert len(run["bn_leak"]["2"]) == 1 and run["seconds"] > 0
    # The check runs 2 real replicas with per-replica BN in float64: the
    # one-device emulation (each half of the batch normalised alone) matches
    # it to rounding, and the whole batch's statistics do not.
    (check,) = record["checks"]
    assert check["replicas"] == 2
    assert check["relative_difference"] < 1e-12
    assert check["relative_difference_to_whole_batch"] > 1e-4
    assert table.count("\n| ") == 3  # header + 2 rows
