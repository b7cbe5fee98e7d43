"""The keras-contrast command trains: a short run on digits, resume after
the process is killed from outside equal to the uninterrupted run, evaluate
and export; a folder of class folders; plots from the CSV log.
"""

import json
import os
import re
import signal

import numpy as np
import pytest

from tests import test_case
from tests.cli.commands import SMALL
from tests.cli.commands import SMALL_RUN
from tests.cli.commands import final_weights
from tests.cli.commands import main_in_process
from tests.cli.processes import kill_after_epoch
from tests.cli.processes import run


def test_train_resume_evaluate_export(tmp_path, capsys):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    # One replica: runs are bit-identical (under MirroredStrategy they agree
    # only to float tolerance, see README), so the resume check is exact. The
    # cosine schedule with warm-up reads optimizer.iterations, so it resumes too.
    schedule = ["--schedule", "cosine", "--warmup-steps", "3", "--learning-rate", "3e-3"]
    # No --verbose: the default when stdout is not a terminal (a pipe here).
    completed = run("train", *SMALL_RUN, *schedule, "--epochs", "2", "--out", full)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Nothing on stderr: no warnings (Keras warned about `shuffle=True` on every run).
    assert completed.stderr == "", completed.stderr[-3000:]
    assert "kNN accuracy" in completed.stdout
    # Not a terminal: Keras' one line per epoch ("8/8 - 2s - 250ms/step - loss: ..."),
    # no progress bar redrawn with carriage returns.
    assert "\r" not in completed.stdout and "\u2501" not in completed.stdout
    assert len(re.findall(r"^8/8 - .*loss: ", completed.stdout, re.MULTILINE)) == 2
    outputs = ("loss.png", "knn.png", "grad_norms.png", "results.json", "model.keras",
               os.path.join("saved_model", "saved_model.pb"))
    for name in outputs:
        assert os.path.exists(os.path.join(full, name)), name
    # The closing summary names the outputs and how to open the TensorBoard logs.
    summary = completed.stdout[completed.stdout.index("kNN accuracy"):]
    for name in ("model.keras", "saved_model", "loss.png", "knn.png", "grad_norms.png",
                 "results.json", "history_0.csv"):
        assert os.path.join(full, name) in summary, name
    assert f"tensorboard --logdir {os.path.join(full, 'logs')}" in summary
    assert any(name.startswith("events.out.tfevents")
               for _, _, files in os.walk(os.path.join(full, "logs")) for name in files)
    results = json.load(open(os.path.join(full, "results.json")))
    assert 0.0 <= results["knn_accuracy"] <= 1.0 and results["knn_accuracy_raw_pixels"] > 0.9
    assert results["knn_bank_size"] == 1348 and results["train_images"] == 512

    # A run killed from outside right after epoch 1's backup resumes from it at epoch 2.
    killed, recorded, stderr = kill_after_epoch(
        ["train", *SMALL, *schedule, "--epochs", "2", "--out", resumed],
        os.path.join(resumed, "backup", "worker_0"))
    assert killed == -signal.SIGKILL and recorded == 1, stderr
    assert not os.path.exists(os.path.join(resumed, "model.keras"))
    again = run("train", *SMALL, *schedule, "--epochs", "2", "--out", resumed)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.load(open(os.path.join(resumed, "results.json")))["initial_epoch"] == 1
    for a, b in zip(final_weights(resumed), final_weights(full)):
        np.testing.assert_array_equal(a, b)

    # evaluate and export in this process (they set no global state; a
    # subprocess each would add ~10 s of TensorFlow start-up).
    capsys.readouterr()
    assert main_in_process(["evaluate", full, "--dataset", "digits", "--knn-k", "10",
                            "--probe-epochs", "3"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["knn_accuracy"] == pytest.approx(results["knn_accuracy"])

    assert main_in_process(["export", full, "--out", str(tmp_path / "exported")]) == 0
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype("float32")
    reference = tf.saved_model.load(os.path.join(full, "saved_model"))
    test_case.assert_all_close(loaded.serve(images).numpy(), reference.serve(images).numpy())


def test_train_on_a_folder_of_class_folders(tmp_path):
    import tensorflow as tf

    from tests.data.folders_test import write_folder

    rng = np.random.default_rng(0)
    folder = str(tmp_path / "images")
    write_folder(folder, sizes=((10, 12), (9, 9)))
    for i in range(30):  # more training images: 2 batches of 16
        image = rng.integers(0, 256, (11, 7, 3), dtype=np.uint8)
        tf.io.write_file(os.path.join(folder, "train", ("cat", "dog")[i % 2], f"extra{i}.png"),
                         tf.io.encode_png(image))
    out = str(tmp_path / "out")
    completed = run("train", "--dataset", folder, "--image-size", "8", "--batch-size", "16",
                    "--epochs", "1", "--width", "4", "--knn-k", "3", "--verbose", "0",
                    "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["knn_bank_size"] == 36 and results["train_images"] == 36
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    features = loaded.serve(np.zeros((2, 8, 8, 3), np.float32)).numpy()
    assert features.shape[0] == 2 and np.all(np.isfinite(features))


def test_plots_read_the_whole_run_from_the_csv_log(tmp_path):
    from keras_contrast import cli

    csv_path = tmp_path / "history_0.csv"
    # A run resumed after epoch 2 appends epoch 3 to the CSV; Keras' own
    # history of the resumed process holds only epoch 3.
    csv_path.write_text("epoch,knn_accuracy,loss,val_loss\n0,0.5,6.0,NA\n1,0.6,5.0,NA\n"
                        "2,0.7,4.5,NA\n")
    merged = cli.read_history(str(csv_path), {"loss": [4.5], "knn_accuracy": [0.7]})
    assert merged == {"knn_accuracy": [0.5, 0.6, 0.7], "loss": [6.0, 5.0, 4.5]}
    assert cli.read_history(str(tmp_path / "missing.csv"), {"loss": [1.0]}) == {"loss": [1.0]}
    results = {"knn_accuracy": 0.8, "knn_accuracy_raw_pixels": 0.75, "knn_bank_size": 600}
    cli.write_plots(str(tmp_path), merged, {"grad_inf_norm/first": [1.0, 2.0]}, results)
    for name in ("loss.png", "knn.png", "grad_norms.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_the_csv_log_keeps_a_knn_monitor_that_skips_the_first_epoch(tmp_path):
    # --knn-every 2: epoch 0 logs no kNN; Keras' CSVLogger fixed its columns
    # there and dropped every later kNN value (and a resumed run whose first
    # epoch is a kNN epoch appended columns that did not fit the header).
    from keras_contrast import cli
    from keras_contrast.cli._runs import HistoryCSV

    path = str(tmp_path / "history_0.csv")
    epochs = [{"loss": 3.0}, {"loss": 2.0, "knn_accuracy": 0.5}, {"loss": 1.5},
              {"loss": 1.0, "knn_accuracy": 0.75}]
    for first, last, append in ((0, 2, False), (2, 4, True)):  # the second resumes at epoch 2
        logger = HistoryCSV(path, append=append)
        logger.on_train_begin()
        for epoch in range(first, last):
            logger.on_epoch_end(epoch, dict(epochs[epoch]))
        logger.on_train_end()
    rows = open(path).read().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "knn_accuracy", "loss"]
    assert [row.split(",")[1] for row in rows[1:]] == ["NA", "0.5", "NA", "0.75"]
    assert cli.read_history(path, {}) == {"knn_accuracy": [0.5, 0.75],
                                          "loss": [3.0, 2.0, 1.5, 1.0]}
