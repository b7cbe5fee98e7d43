"""Smoke test of examples/bn_leak_moco.py (the full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick

ARMS = {"(a) per-replica BN", "(b) Shuffle BN", "(c) synchronised BN"}


def test_quick_run_logs_pretext_accuracy_and_leak_per_arm(tmp_path):
    record, table = run_quick("bn_leak_moco", tmp_path)
    assert set(record["runs"]) == ARMS
    windows = record["config"]["steps"] // 50
    for runs in record["runs"].values():
        run = runs[0]
        assert len(run["loss"]) == len(run["pretext_accuracy"]) == windows
        assert all(0.0 <= value <= 1.0 for value in run["pretext_accuracy"])
        assert 0.0 <= run["knn"] <= 1.0 and run["loss"][-1] > 0
        # (step, leak, spread) after every window in --quick.
        assert [step for step, _, _ in run["bn_leak"]] == [50 * (i + 1) for i in range(windows)]
        assert run["steps_to_90"] is None or run["steps_to_90"] % 50 == 0
    assert table.count("\n| ") == 4  # header + 3 rows
    assert "Expected (MoCo" in table and table.index("Expected") < table.index("Observed")
