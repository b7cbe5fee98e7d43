"""Tests of examples/mocov3_stability.py: its analysis functions on
constructed inputs, and the `--quick` smoke run (full run: `make
experiments`)."""

import importlib
import math
import os
import sys

import numpy as np
import pytest

from tests import test_case
from tests.examples.experiment_runner import run_quick


@pytest.fixture(scope="module")
def experiment():
    sys.path.insert(0, os.path.join(test_case.ROOT, "examples"))
    try:
        yield importlib.import_module("mocov3_stability")
    finally:
        sys.path.remove(os.path.join(test_case.ROOT, "examples"))


@pytest.mark.parametrize("shift", [0, 1, 3, 7, -2, -5])
def test_peak_lag_finds_a_known_shift_with_its_sign(experiment, shift):
    noise = np.random.default_rng(4).normal(size=200)
    first = noise[20:180]
    # last[t] = first[t - shift]: shift > 0 means the first series leads.
    last = noise[20 - shift:180 - shift]
    lag, correlation = experiment.peak_lag(first, last, max_lag=10)
    assert lag == shift
    assert correlation > 0.9


def test_peak_lag_finds_a_lagged_spike_on_a_drifting_series(experiment):
    steps = np.arange(120)
    first = np.exp(-steps / 60) * (1 + 0.01 * np.random.default_rng(0).random(120))
    last = first.copy() * 0.1
    first[50] *= 20.0  # a first-layer spike ...
    last[54] *= 20.0  # ... reaching the last layer 4 steps later
    lag, _ = experiment.peak_lag(experiment.relative_log(first), experiment.relative_log(last))
    assert lag == 4


def test_peak_lag_ignores_shifts_beyond_the_window_and_short_series(experiment):
    noise = np.random.default_rng(1).normal(size=300)
    lag, _ = experiment.peak_lag(noise[30:250], noise[15:235], max_lag=10)  # true lag 15
    assert lag is not None and abs(lag) <= 10
    assert experiment.peak_lag([1.0, 2.0], [2.0, 1.0]) == (None, None)
    assert experiment.peak_lag(np.ones(20), np.arange(20.0)) == (None, None)


def test_relative_log_stops_at_the_first_non_finite_value(experiment):
    trace = [1.0] * 12 + [8.0, float("nan"), 1.0, 1.0]
    residual = experiment.relative_log(trace, window=10)
    np.testing.assert_allclose(residual, [0.0, 0.0, math.log(8.0)], atol=1e-12)


def test_spikes_counts_steps_above_three_times_the_recent_median(experiment):
    # 2.9 < 3; a non-finite step is a divergence, not a spike.
    trace = [1.0] * 10 + [3.5, 1.0, 2.9, 1.0, float("inf"), float("nan"), 1.0]
    assert experiment.spikes(trace, factor=3.0, window=10) == [10]
    rising = [1.0, 1.1, 1.2, 1.3, 4.0, 1.5, 1.6]  # median of the 3 before step 4: 1.2
    assert experiment.spikes(rising, factor=3.0, window=3) == [4]


def _runs(table):
    """`(lr, final loss finite?, [kNN per seed])` → records as the script writes them."""
    runs = []
    for lr, finite, accuracies in table:
        for seed, accuracy in enumerate(accuracies):
            runs.append({"lr": lr, "seed": seed, "knn": accuracy,
                         "loss": [5.0, 4.0 if finite else float("nan")]})
    return runs


def test_highest_stable_rate_needs_finite_loss_and_ninety_percent_of_the_best_knn(experiment):
    runs = _runs([
        (1e-4, True, [0.50, 0.52]),   # mean 0.51
        (3e-4, True, [0.70, 0.72]),   # best: 0.71, threshold 0.639
        (1e-3, True, [0.64, 0.645]),  # 0.6425 >= 0.639: stable
        (3e-3, True, [0.63, 0.64]),   # 0.635 < 0.639: accuracy fell
        (1e-2, False, [0.90, 0.90]),  # best kNN but a seed's loss is NaN: diverged
    ])
    rate, stable = experiment.highest_stable_rate(runs)
    assert rate == 1e-3
    assert stable == {1e-4: False, 3e-4: True, 1e-3: True, 3e-3: False, 1e-2: False}


def test_highest_stable_rate_is_the_highest_qualifying_rate_even_after_a_gap(experiment):
    runs = _runs([(1e-4, True, [0.6]), (3e-4, True, [0.4]), (1e-3, True, [0.58])])
    assert experiment.highest_stable_rate(runs)[0] == 1e-3
    # One non-finite seed makes the rate diverged though its mean kNN is fine.
    runs = _runs([(1e-4, True, [0.6]), (3e-4, True, [0.6])])
    runs[-1]["loss"][-1] = float("inf")
    assert experiment.highest_stable_rate(runs)[0] == 1e-4
    assert experiment.highest_stable_rate(_runs([(1e-4, False, [0.6])])) == (None, {1e-4: False})


def test_step_losses_undo_the_running_mean(experiment):
    losses = np.random.default_rng(2).uniform(2.0, 6.0, size=300)
    means = np.cumsum(losses) / np.arange(1, 301)
    np.testing.assert_allclose(experiment.step_losses(means), losses, rtol=1e-9)


def test_quick_run_writes_curves_and_summary_per_projection(tmp_path):
    record, table = run_quick("mocov3_stability", tmp_path)
    config = record["config"]
    assert set(record["runs"]) == {"learned", "frozen"}
    rates = record["learning_rates"]
    assert len(rates) == len(config["multipliers"]) == 2
    assert rates[0] == pytest.approx(1.5e-4 * config["batch"] / 256)
    for runs in record["runs"].values():
        assert sorted(r["lr"] for r in runs) == rates
        for run in runs:
            assert len(run["loss"]) == len(run["first"]) == len(run["last"]) == config["steps"]
            assert all(math.isfinite(v) and v > 0 for v in run["first"] + run["last"])
            assert run["finite"] and all(math.isfinite(v) for v in run["loss"])
            assert 0.0 <= run["knn"] <= 1.0 and run["seconds"] > 0
            assert run["lag"] is None or abs(run["lag"]) <= config["max_lag"]
            for key in ("first_spikes", "last_spikes", "loss_jumps"):
                assert 0 <= run[key] <= config["steps"]
    for summary in record["summary"].values():
        assert summary["highest_stable_lr"] in rates
    # 2 projections x 2 rates, then one summary row per projection.
    assert table.count("\n| ") == 1 + 4 + 2
    assert table.count("highest stable lr") == 2
    assert "Expected (MoCo v3" in table and table.index("Expected") < table.index("Observed")
