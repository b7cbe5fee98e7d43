"""tools/supervised_reference.py: the run's length is fixed from timed
steps, a resumed run sees the batches of the uninterrupted one, and the
reference it writes has the fields `tools/make_preset.py` reads."""

import json

import numpy as np
import pytest

from tests.test_case import load_tool

reference = load_tool("supervised_reference")


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def as_arrays(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_resumed_batches_are_those_of_the_uninterrupted_run():
    x, y = images(300)
    full = as_arrays(reference.batches(x, y, seed=3, steps=5))
    resumed = as_arrays(reference.batches(x, y, seed=3, steps=5, first_step=2))
    assert len(full) == 5 and len(resumed) == 3
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Batches of BATCH, the image scaled to [0, 1]; another seed, other batches.
    assert all(len(yb) == reference.BATCH and 0.0 <= xb.min() and xb.max() <= 1.0
               for xb, yb in full)
    other = as_arrays(reference.batches(x, y, seed=4, steps=1))
    assert not np.array_equal(other[0][0], full[0][0])


@pytest.mark.parametrize("argv", [["--budget-seconds", "0"], ["--budget-seconds", "1",
                                                               "--width", "0"]])
def test_bad_arguments(argv, tmp_path):
    with pytest.raises(SystemExit):
        reference.main(argv + ["--out", str(tmp_path)])


def test_a_short_run_writes_the_plan_and_the_reference(tmp_path):
    reference.main(["--budget-seconds", "4", "--width", "2", "--train-size", "512",
                    "--test-size", "500", "--probe-epochs", "1", "--out", str(tmp_path)])
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["total_steps"] == max(2, int(4 / plan["step_seconds"]))
    (result,) = json.loads((tmp_path / "reference.json").read_text())
    # Whole epochs of 2 steps (512 examples): the plan rounded up by < 1 epoch.
    assert plan["total_steps"] <= result["steps"] < plan["total_steps"] + 2
    assert result["steps"] % 2 == 0 and result["epochs"] == result["steps"] / 2
    assert result["plan"] == plan
    for key in ("test_accuracy", "knn_accuracy", "linear_probe_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["knn_accuracy"] > 0.3  # features of a trained net, not chance (0.1)
    assert result["command"].startswith("python tools/supervised_reference.py --budget")
