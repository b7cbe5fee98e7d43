"""examples/experiment_common.py's resume rule and bn_leak_moco's threshold
count, without training."""

import argparse
import json
import os
import sys
import time

from tests import test_case

sys.path.insert(0, os.path.join(test_case.ROOT, "examples"))

import bn_leak_moco  # noqa: E402
import experiment_common  # noqa: E402


def test_resume_keeps_runs_only_of_the_same_configuration(tmp_path):
    config = {"steps": 1500, "lr": 1e-3, "groups": (4, 16)}
    runs = {"arm": [{"seed": 0, "knn": 0.5}]}
    (tmp_path / "name.json").write_text(json.dumps({"config": config, "runs": runs,
                                                     "minutes": 7.5}))
    args = argparse.Namespace(out=str(tmp_path), resume=True)
    assert experiment_common.previous_runs(args, "name", config) == runs
    assert args.previous_minutes == 7.5
    assert experiment_common.previous_runs(args, "name", dict(config, steps=1000)) == {}
    assert experiment_common.previous_runs(args, "other", config) == {}
    # A sweep that records each run's value of a key may change that key.
    assert experiment_common.previous_runs(args, "name", dict(config, lr=3e-3),
                                           may_differ=("lr",)) == runs
    assert experiment_common.previous_runs(args, "name", dict(config, lr=3e-3, steps=1),
                                           may_differ=("lr",)) == {}
    args.resume = False
    assert experiment_common.previous_runs(args, "name", config) == {}


def test_steps_to_threshold_counts_whole_windows():
    assert bn_leak_moco.steps_to([0.1, 0.5, 0.91, 0.95]) == 150
    assert bn_leak_moco.steps_to([0.1, 0.9]) is None  # strictly above
    assert bn_leak_moco.steps_to([]) is None


def test_resumed_record_counts_the_earlier_minutes(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), quick=False, started=time.time() - 60, load=0.5,
                              previous_minutes=10.0)
    experiment_common.write_results(args, "name", "title", ["a"], [[1]], ["note"], {})
    record = json.loads((tmp_path / "name.json").read_text())
    assert 10.9 < record["minutes"] < 11.2  # 10 earlier + this invocation's minute
    assert "10.0 of them in the earlier invocations" in (tmp_path / "name.md").read_text()


def test_seed_spread_is_the_larger_population_std():
    # Population std of (1, 3) is 1; of (0, 4) is 2.
    assert experiment_common.seed_spread([1.0, 3.0], [0.0, 4.0]) == 2.0
    assert experiment_common.seed_spread([1.0, 3.0], [5.0]) is None
    assert experiment_common.seed_spread() is None


def test_judge_counts_a_difference_only_beyond_the_std():
    judge = experiment_common.judge
    assert judge(0.5, 0.25) == "+0.500, outside the seed-to-seed std (0.250)"
    assert judge(-0.25, 0.25) == "-0.250, within the seed-to-seed std (0.250)"
    assert judge(0.012, 0.02, scale=100.0, digits=1, unit=" points") == (
        "+1.2 points, within the seed-to-seed std (2.0 points)")
    assert judge(0.1, None) == "+0.100 (one seed: no spread to judge against)"
