"""The keras-contrast command on streaming datasets: TFRecord shards and
class folders read inside tf.data, `--steps-per-epoch`, and the arguments
that only fit in-memory datasets."""

import argparse
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data

from keras_contrast.cli._datasets import ImageData
from keras_contrast.cli._datasets import open_images
from keras_contrast.cli._train import training_dataset
from tests.cli.commands import main_in_process
from tests.cli.processes import run


def write_digit_shards(root):
    """digits' train and test splits as `root/{split}-*.tfrecord`; returns
    the `--dataset` value and the arrays."""
    (x, y), (xt, yt) = data.load_digits()
    data.write_tfrecords((x[..., None], y), os.path.join(root, "train"), num_shards=3)
    data.write_tfrecords((xt[..., None], yt), os.path.join(root, "test"), num_shards=2)
    return "tfrecord:" + os.path.join(root, "{split}-*.tfrecord"), (x, y), (xt, yt)


def batches(dataset):
    return [b.numpy() for b in dataset]


def train_args(**overrides):
    values = dict(epochs=3, batch_size=32, seed=4, strategy="mirrored", train_size=None,
                  steps_per_epoch=None)
    values.update(overrides)
    return argparse.Namespace(**values)


def test_steps_per_epoch_cuts_each_epoch_and_a_resume_sees_the_same_batches():
    (x, y), test = data.load_digits()
    images = ImageData((x[..., None], y), test, (8, 8, 1))
    args = train_args(steps_per_epoch=2)
    full = batches(training_dataset(args, images, None, 0, 2))
    assert len(full) == 6
    # Epoch e is two_view_dataset(epoch=e)'s first 2 batches (the reference).
    for epoch in range(3):
        expected = batches(data.two_view_dataset(x[..., None], 32, seed=4, epoch=epoch).take(2))
        for actual, wanted in zip(full[2 * epoch:2 * epoch + 2], expected):
            np.testing.assert_array_equal(actual, wanted)
    resumed = batches(training_dataset(args, images, None, 1, 2))
    assert len(resumed) == 4
    for actual, wanted in zip(resumed, full[2:]):
        np.testing.assert_array_equal(actual, wanted)


def test_tfrecord_dataset_opens_both_splits_with_their_labels(tmp_path):
    name, (x, y), (xt, yt) = write_digit_shards(str(tmp_path))
    images = open_images(name, channels=1)
    assert images.streaming and images.image_shape == (8, 8, 1)
    assert (images.num_train, images.num_test) == (len(x), len(xt))
    labels = np.concatenate([b[1].numpy() for b in data.image_dataset(images.test, labels=True)])
    # Id order is the order the arrays were written in.
    np.testing.assert_array_equal(labels, yt)


# slow: ~120 s idle; TFRecordSource is tested in tests/data/tfrecords_test.py and the
# streaming command by test_train_on_a_folder_of_class_folders.
@pytest.mark.slow
def test_train_and_evaluate_on_tfrecord_shards(tmp_path, capsys):
    name, (x, _), (xt, _) = write_digit_shards(str(tmp_path / "records"))
    out = str(tmp_path / "out")
    # A child process: training sets the process's seeds and op determinism.
    completed = run("train", "--dataset", name, "--channels", "1", "--batch-size", "64",
                    "--width", "4", "--knn-k", "10", "--epochs", "2", "--steps-per-epoch", "1",
                    "--verbose", "0", "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["train_images"] == len(x) and results["knn_bank_size"] == len(x)
    assert results["steps_per_epoch"] == 1 and 0.0 <= results["knn_accuracy"] <= 1.0
    assert 0.0 <= results["knn_accuracy_raw_pixels"] <= 1.0
    history = open(os.path.join(out, "history_0.csv")).read().splitlines()
    assert len(history) == 3  # a header and 2 epochs
    capsys.readouterr()
    assert main_in_process(["evaluate", out, "--dataset", name, "--channels", "1",
                            "--knn-k", "10", "--probe-epochs", "1"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The same encoder, bank and test split as the training run's final kNN.
    assert scores["knn_accuracy"] == pytest.approx(results["knn_accuracy"], abs=1e-6)
    assert 0.0 <= scores["linear_probe_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "tfrecord:/tmp/records-*.tfrecord"], "needs '{split}' in its glob"),
        (["--steps-per-epoch", "0"], "--steps-per-epoch must be > 0"),
        (["--dataset", "digits", "--batch-size", "64", "--steps-per-epoch", "50"],
         "--steps-per-epoch 50 exceeds the 21 full batches of 64"),  # 1348 // 64
        (["--channels", "2"], "argument --channels: invalid choice: 2"),
    ],
)
def test_bad_streaming_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main_in_process(["train", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_train_size_with_a_streaming_folder_exits_2(tmp_path, capsys):
    for split in ("train", "test"):
        os.makedirs(tmp_path / "images" / split / "cat")
        tf.io.write_file(str(tmp_path / "images" / split / "cat" / "0.png"),
                         tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
    code = main_in_process(["train", "--dataset", str(tmp_path / "images"), "--train-size", "10",
                            "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--train-size applies to the datasets held in memory" in capsys.readouterr().err


def test_the_monitor_of_a_class_major_folder_holds_every_class(tmp_path, monkeypatch):
    from keras_contrast.cli import _train

    for split, count in (("train", 30), ("test", 10)):
        for name in ("a", "b", "c"):
            os.makedirs(tmp_path / split / name)
            for i in range(count):
                tf.io.write_file(str(tmp_path / split / name / f"{i:02d}.png"),
                                 tf.io.encode_png(np.full((4, 4, 1), i, np.uint8)))
    monkeypatch.setattr(_train, "MONITOR_BANK", 15)
    monkeypatch.setattr(_train, "MONITOR_TEST", 6)
    monitor = _train.monitor_splits(open_images(str(tmp_path), channels=1))
    bank = np.concatenate([y.numpy() for _, y in monitor.bank])
    test = np.concatenate([y.numpy() for _, y in monitor.test])
    # Ids spread evenly over the class-major list: 90 ids -> 0, 6.36, ..., 89;
    # 5 of them in each class of 30 (the first 15 ids would all be class 0).
    np.testing.assert_array_equal(np.bincount(bank, minlength=3), [5, 5, 5])
    np.testing.assert_array_equal(np.bincount(test, minlength=3), [2, 2, 2])
    assert monitor.sizes == (15, 6)
    pixels = np.concatenate([x.numpy() for x, _ in monitor.bank])[:, 0, 0, 0]
    ids = np.linspace(0, 89, 15).round().astype(int)
    np.testing.assert_allclose(pixels, (ids % 30) / 255.0, rtol=1e-6)


def test_a_usage_error_leaves_op_determinism_off(tmp_path, capsys):
    """The checks that need the dataset run before `train` enables op
    determinism, so a caller's process is left as it was."""
    from tensorflow.python.framework import config as tf_config

    assert main_in_process(["train", "--dataset", "digits", "--batch-size", "64",
                            "--steps-per-epoch", "50", "--out", str(tmp_path / "out")]) == 2
    assert not tf_config.is_op_determinism_enabled()
