"""Smoke test of examples/dcl_vs_infonce.py (the full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_plot(tmp_path):
    record, table = run_quick("dcl_vs_infonce", tmp_path)
    assert set(record["accuracy"]) == {f"{n}@{b}" for n in ("InfoNCE", "DCL", "DCLW")
                                       for b in (64,)}
    assert all(0.0 <= v[0] <= 1.0 for v in record["accuracy"].values())
