"""examples/experiment_common.py's resume rule and bn_leak_moco's threshold
count, without training."""

import argparse
import json
import os
import sys

from tests import test_case

sys.path.insert(0, os.path.join(test_case.ROOT, "examples"))

import bn_leak_moco  # noqa: E402
import experiment_common  # noqa: E402


def test_resume_keeps_runs_only_of_the_same_configuration(tmp_path):
    config = {"steps": 1500, "lr": 1e-3, "groups": (4, 16)}
    runs = {"arm": [{"seed": 0, "knn": 0.5}]}
    (tmp_path / "name.json").write_text(json.dumps({"config": config, "runs": runs}))
    args = argparse.Namespace(out=str(tmp_path), resume=True)
    assert experiment_common.previous_runs(args, "name", config) == runs
    assert experiment_common.previous_runs(args, "name", dict(config, steps=1000)) == {}
    assert experiment_common.previous_runs(args, "other", config) == {}
    args.resume = False
    assert experiment_common.previous_runs(args, "name", config) == {}


def test_steps_to_threshold_counts_whole_windows():
    assert bn_leak_moco.steps_to([0.1, 0.5, 0.91, 0.95]) == 150
    assert bn_leak_moco.steps_to([0.1, 0.9]) is None  # strictly above
    assert bn_leak_moco.steps_to([]) is None
