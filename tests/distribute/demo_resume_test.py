"""The README's demo model under 4 simulated replicas (`keras-contrast train
--model simclr --loss dclw --replicas 4 --norm sync --width 8`): a run
killed from outside (SIGKILL) once its backup records epoch 1, then resumed
from that backup, ends with bit-identical weights to the uninterrupted run,
with synchronised and with per-replica BN (whose replica copies the CLI
averages before each backup)."""

import os
import signal

import numpy as np
import pytest

from tests.cli.processes import kill_after_epoch
from tests.cli.processes import run

DEMO = ["train", "--model", "simclr", "--loss", "dclw", "--replicas", "4",
        "--width", "8", "--dataset", "digits", "--batch-size", "32", "--train-size", "64",
        "--knn-k", "5", "--verbose", "0", "--seed", "3", "--epochs", "2"]


def train(out, *extra):
    return run(*DEMO, "--out", out, *extra, timeout=900)


def final_weights(out):
    import keras

    import keras_contrast  # noqa: F401  (registers the classes)

    return keras.models.load_model(os.path.join(out, "model.keras")).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["sync", "batch"])
def test_demo_resumes_under_four_replicas(tmp_path, norm):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    completed = train(full, "--norm", norm)
    assert completed.returncode == 0, completed.stderr[-3000:]
    killed, recorded, stderr = kill_after_epoch(
        [*DEMO, "--out", resumed, "--norm", norm], os.path.join(resumed, "backup", "worker_0"),
        epoch=1, timeout=900)
    assert killed == -signal.SIGKILL and recorded == 1, stderr
    assert not os.path.exists(os.path.join(resumed, "model.keras"))
    again = train(resumed, "--norm", norm)
    assert again.returncode == 0, again.stderr[-3000:]

    reference, weights = final_weights(full), final_weights(resumed)
    assert len(reference) == len(weights) > 0
    for a, b in zip(weights, reference):
        np.testing.assert_array_equal(a, b)
