"""Smoke test of examples/gradcache_equivalence.py (full run: `make experiments`)."""

import math

from tests.examples.experiment_runner import run_quick

ARMS = ("native", "grad_cache", "accumulation")


def test_quick_run_writes_table_and_plot(tmp_path):
    record, table = run_quick("gradcache_equivalence", tmp_path)
    config = record["config"]
    seeds = record["seeds"]
    total_steps = config["epochs"] * (config["train"] // config["batch"])

    # GradCache is the big batch up to float32 rounding (and far closer in a
    # float64 encoder); accumulating the chunks' own losses is a different
    # gradient.
    assert [d["step"] for d in record["differences"]] == [0, total_steps // 2, total_steps]
    for difference in record["differences"]:
        assert difference["grad_cache"] < 1e-5
        assert difference["grad_cache_float64"] < 1e-5
        assert difference["accumulation"] > 100 * difference["grad_cache"]

    # Accumulation's micro-batches are the slices of the native batches.
    assert record["same_pairs_per_update"] is True
    assert len(seeds) == 2
    for arm in ARMS:
        runs = record["runs"][arm]
        assert [run["seed"] for run in runs] == seeds
        for run in runs:
            # The same number of optimizer updates in every arm, counted by
            # the optimizer (a reset that failed would double it for seed 1).
            assert run["optimizer_steps"] == total_steps
            steps = [step for step, _ in run["big_batch_curve"]]
            assert steps[0] == 0 and steps[-1] == total_steps
            assert steps == sorted(set(steps))
            assert math.isfinite(run["big_batch_loss"]) and run["big_batch_loss"] > 0
            assert run["big_batch_loss"] == run["big_batch_curve"][-1][1]
            assert 0.0 <= run["knn"] <= 1.0
    # The three arms of a seed start from the same weights: the same
    # held-out loss before the first step; the two seeds do not.
    for index in range(len(seeds)):
        start = {record["runs"][arm][index]["big_batch_curve"][0][1] for arm in ARMS}
        assert len(start) == 1
    assert (record["runs"]["native"][0]["big_batch_curve"][0][1]
            != record["runs"]["native"][1]["big_batch_curve"][0][1])

    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert len(rows) == 3
    assert "2 seeds" in table
