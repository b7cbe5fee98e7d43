"""The keras-contrast command with each model and distribution: replicas
with a gradient cache, the dual encoder, MoCo, Shuffle BN, two workers.
"""

import json
import os
import re
import sys

import numpy as np
import pytest

from tests import test_case
from tests.cli.commands import SMALL
from tests.cli.commands import SMALL_RUN
from tests.cli.commands import final_weights
from tests.cli.commands import main_in_process
from tests.cli.processes import run
from tests.cli.processes import run_on_terminal


# slow: ~90 s idle; GradCache under replicas is tested in tests/training, the
# --chunk-size and --replicas arguments in tests/cli/arguments_test.py.
@pytest.mark.slow
def test_replicas_with_gradient_cache_and_a_progress_bar_on_a_terminal(tmp_path):
    out = str(tmp_path / "cached")
    # 2 steps (the assertions do not depend on the size), stdout a terminal
    # and no --verbose: Keras' progress bar, redrawn in place within the epoch.
    returncode, shown, stderr = run_on_terminal(
        "train", *SMALL_RUN, "--train-size", "128", "--epochs", "1", "--replicas", "2",
        "--chunk-size", "16", "--norm", "sync", "--out", out)
    assert returncode == 0, stderr[-3000:]
    assert stderr == "", stderr[-3000:]
    # The bar after step 1 of 2, then its ETA in bold: verbose=1 (verbose=2
    # shows only "2/2 - ...").
    assert re.search(r"1/2\S* \S*\u2501\S* \x1b\[1m[\d:]+s?\x1b\[0m", shown), shown
    assert re.search(r"2/2\S* \S*\u2501", shown), shown
    results = json.load(open(os.path.join(out, "results.json")))
    assert np.isfinite(results["knn_accuracy"])
    history = open(os.path.join(out, "history_0.csv")).read()
    assert "grad_inf_norm/first" in history and "knn_accuracy" in history


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_dual_encoder_on_wordnet_under_two_replicas(tmp_path, capsys):
    out = str(tmp_path / "dual")
    # A smaller tokenizer and towers than the preset's: evaluate must hash
    # the held-out texts into the model's 4096 ids, also from the SavedModel.
    completed = run("train", "--model", "dual", "--dataset", "wordnet", "--epochs", "1",
                    "--batch-size", "64", "--train-size", "1200", "--replicas", "2",
                    "--vocabulary-size", "4096", "--width", "32", "--verbose", "0", "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= results["recall_at_1"] <= results["recall_at_5"] <= 1.0
    assert results["held_out_pairs"] == 120
    assert results["vocabulary_size"] == 4096
    import keras
    import tensorflow as tf

    trained = keras.models.load_model(os.path.join(out, "model.keras"))
    (embedding,) = [layer for layer in trained.tower_a.layers
                    if isinstance(layer, keras.layers.Embedding)]
    assert (embedding.input_dim, embedding.output_dim) == (4096, 32)

    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    tokens = np.ones((2, 32), np.int32)
    embeddings = loaded.encode_a(tokens).numpy()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)

    # evaluate: the same held-out pairs (split read from results.json), from
    # the .keras file and from the SavedModel.
    # (In this process: a subprocess each would add ~10 s of start-up.)
    for model_dir in (out, os.path.join(out, "saved_model")):
        capsys.readouterr()
        assert main_in_process(["evaluate", model_dir, "--dataset", "wordnet",
                                *(("--train-size", "1200") if "saved_model" in model_dir
                                  else ())]) == 0
        scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert scores["held_out_pairs"] == 120
        assert scores["recall_at_1"] == pytest.approx(results["recall_at_1"])
        assert scores["recall_at_5"] == pytest.approx(results["recall_at_5"])


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_dual_encoder_resumes_and_logs_held_out_recall_per_epoch(tmp_path):
    import signal

    from tests.cli.processes import kill_after_epoch

    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    arguments = ["train", "--model", "dual", "--dataset", "wordnet", "--epochs", "2",
                 "--batch-size", "64", "--train-size", "640", "--vocabulary-size", "512",
                 "--width", "8", "--verbose", "0"]
    completed = run(*arguments, "--out", full)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(full, "results.json")))
    import csv

    rows = list(csv.DictReader(open(os.path.join(full, "history_0.csv"))))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    # The last epoch's monitor is the run's final held-out recall.
    assert float(rows[-1]["recall_at_1"]) == pytest.approx(results["recall_at_1"])
    assert float(rows[-1]["recall_at_5"]) == pytest.approx(results["recall_at_5"])
    # Killed from outside after epoch 1's backup: the rerun resumes there and
    # ends with the uninterrupted run's weights and CSV rows.
    killed, recorded, stderr = kill_after_epoch([*arguments, "--out", resumed],
                                                os.path.join(resumed, "backup", "worker_0"))
    assert killed == -signal.SIGKILL and recorded == 1, stderr
    again = run(*arguments, "--out", resumed)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.load(open(os.path.join(resumed, "results.json")))["initial_epoch"] == 1
    for a, b in zip(final_weights(resumed), final_weights(full)):
        np.testing.assert_array_equal(a, b)
    assert open(os.path.join(resumed, "history_0.csv")).read() == \
        open(os.path.join(full, "history_0.csv")).read()


# slow: ~25-45 s, nearly all fixed cost of a child process (imports ~14 s,
# WordNet, the preset's 2 x 32768-token towers saved as a 200 MB .keras
# file and a SavedModel); the registry, preset and model tests cover the
# parts in `make test`.
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_dual_encoder_with_the_sigmoid_loss_on_wordnet(tmp_path):
    """`--model dual --loss siglip` trains the SigLIP preset (learnable τ
    from 0.1 and bias from -10; --temperature does not reach them) and
    exports the calibrated pair probability σ(t·s + b)."""
    import keras
    import tensorflow as tf

    from keras_contrast import losses

    out = str(tmp_path / "siglip")
    completed = run("train", "--model", "dual", "--dataset", "wordnet", "--loss", "siglip",
                    "--epochs", "1", "--batch-size", "32", "--train-size", "320",
                    "--temperature", "0.5", "--verbose", "0", "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= results["recall_at_1"] <= results["recall_at_5"] <= 1.0
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert model.learnable_bias and model.initial_bias == -10.0
    assert model.initial_temperature == 0.1
    assert isinstance(model.loss, losses.SigLIPLoss) and model.loss.bias == -10.0
    bias, scale = float(model.logit_bias.numpy()), float(np.exp(model.temperature.log_scale))
    assert bias != -10.0 and scale != pytest.approx(10.0, rel=1e-9)  # both were trained
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    assert float(loaded.logit_bias()) == bias
    assert float(loaded.logit_scale()) == pytest.approx(scale, rel=1e-6)
    rng = np.random.default_rng(0)
    tokens_a, tokens_b = (rng.integers(1, 100, size=(3, 32)).astype(np.int32) for _ in "ab")
    za, zb = (np.asarray(z, np.float64) for z in (model.encode_a(tokens_a),
                                                 model.encode_b(tokens_b)))
    expected = 1.0 / (1.0 + np.exp(-(scale * np.sum(za * zb, axis=1) + bias)))
    test_case.assert_all_close(loaded.pair_probability(tokens_a, tokens_b).numpy(), expected,
                               rtol=1e-5)


@pytest.mark.parametrize(
    "args,message",
    [(["--loss", "clip", "--preset", "siglip_dual_encoder_small"],
      "--preset siglip_dual_encoder_small trains with --loss siglip, not clip"),
     (["--loss", "siglip", "--preset", "dual_encoder_small"],
      "--loss siglip trains --preset siglip_dual_encoder_small")],
)
def test_a_preset_that_does_not_fit_the_loss_exits_2_with_one_line(args, message, tmp_path,
                                                                    capsys):
    out = str(tmp_path / "out")
    assert main_in_process(["train", "--model", "dual", "--dataset", "wordnet", *args,
                            "--out", out]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert not os.path.exists(out)


def write_digit_folder(root, train=256, test=100):
    """digits' first `train` / `test` images as gray PNGs in class folders."""
    import tensorflow as tf

    from keras_contrast import data

    for split, (x, y) in zip(("train", "test"), data.load_digits()):
        for index in range((train, test)[split == "test"]):
            folder = os.path.join(root, split, f"digit{y[index]}")
            os.makedirs(folder, exist_ok=True)
            tf.io.write_file(os.path.join(folder, f"{index:04d}.png"),
                             tf.io.encode_png(x[index][..., None]))


# slow: ~140 s each; two-worker exactness is also tested, without the command
# line, by tests/distribute/multi_worker_test.py in `make test`.
@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["arrays", "folder"])
def test_two_workers_on_loopback_equal_a_single_process_run(tmp_path, streamed):
    """`--strategy multiworker`: 2 worker processes on 127.0.0.1 (TF_CONFIG)
    with synchronised BN end with bit-identical weights, equal to one
    process with 2 simulated replicas on the same global batches. A
    streamed folder goes through `distribute_two_view_dataset` (each
    worker decodes its own examples) in the workers and through
    `two_view_dataset` in the single process."""
    args = [*SMALL, "--epochs", "1", "--train-size", "256", "--norm", "sync"]
    if streamed:
        write_digit_folder(str(tmp_path / "digits"))
        args = ["--dataset", str(tmp_path / "digits"), "--channels", "1", "--batch-size", "64",
                "--width", "4", "--knn-k", "10", "--seed", "3", "--verbose", "0",
                "--epochs", "1", "--norm", "sync"]
    workers = str(tmp_path / "workers")
    command = [sys.executable, "-m", "keras_contrast", "train", *args,
               "--strategy", "multiworker", "--out", workers]
    test_case.run_worker_processes([command, command], timeout=300)
    single = str(tmp_path / "single")
    completed = run("train", *args, "--replicas", "2", "--out", single)
    assert completed.returncode == 0, completed.stderr[-3000:]

    chief, other = final_weights(workers), final_weights(os.path.join(workers, "worker_1"))
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)
    reference = final_weights(single)
    scale = max(np.abs(w).max() for w in reference)
    # The two runs sum the same numbers in a different order; AdamW's
    # normalised steps grow those last-bit differences (measured: 1.1e-6
    # after these 4 steps, against weights up to 1.5).
    for a, b in zip(chief, reference):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
    history = [open(os.path.join(workers, f"history_{i}.csv")).read() for i in range(2)]
    assert history[0] == history[1]


# slow: ~70 s idle; MoCo's training is tested in tests/models/moco_test.py, the
# command's train/evaluate/export by tests/cli/train_test.py.
@pytest.mark.slow
def test_moco_trains_evaluates_and_exports(tmp_path, capsys):
    out = str(tmp_path / "moco")
    completed = run("train", "--model", "moco", *SMALL, "--epochs", "1", "--train-size", "128",
                    "--queue-size", "128", "--momentum", "0.9", "--optimizer", "sgd",
                    "--loss", "dcl", "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert np.isfinite(results["knn_accuracy"]) and results["optimizer"] == "sgd"
    import keras

    from keras_contrast.models import MoCo

    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert isinstance(model, MoCo)
    assert (model.queue_size, model.momentum) == (128, 0.9)
    # Two steps of 64 keys replaced all 128 rows of the initial queue.
    assert int(model.queue_pointer.numpy()) == 0
    fresh = MoCo.from_config(model.get_config())
    fresh.build((None, 2, 8, 8, 1))
    assert np.all(np.any(fresh.queue.numpy() != model.queue.numpy(), axis=1))
    np.testing.assert_allclose(np.linalg.norm(model.queue.numpy(), axis=1), 1.0, rtol=1e-5)
    # evaluate and export in this process (they set no global state; a
    # subprocess each would add ~10 s of TensorFlow start-up).
    from keras_contrast import cli

    capsys.readouterr()
    assert cli.main(["evaluate", out, "--dataset", "digits", "--knn-k", "10",
                     "--probe-epochs", "1"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["knn_accuracy"] == pytest.approx(results["knn_accuracy"])
    assert cli.main(["export", out, "--out", str(tmp_path / "exported")]) == 0
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype("float32")
    features = model.encoder(images, training=False).numpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    test_case.assert_all_close(loaded.serve(images).numpy(), features, rtol=1e-5)


@pytest.mark.parametrize("model", ["simclr", "moco"])
def test_shuffle_bn_reaches_the_model(model, tmp_path):
    from keras_contrast import cli
    from keras_contrast import models

    args = cli.build_parser().parse_args(["train", "--model", model, "--shuffle-bn", "--width",
                                          "4", "--batch-size", "64", "--out", str(tmp_path)])
    cli.validate_train(args)
    overrides = cli.preset_overrides(args, (8, 8, 1), 10)
    built = models.from_preset(args.preset, **overrides)
    assert type(built).__name__ == {"simclr": "SimCLR", "moco": "MoCo"}[model]
    assert built.shuffle_bn is True


def test_patch_size_reaches_the_vit(tmp_path):
    from keras_contrast import cli
    from keras_contrast import models

    def grid(*options, shape=(28, 28, 1)):
        args = cli.build_parser().parse_args(["train", "--model", "mocov3", "--preset",
                                              "mocov3_vit_mini", *options,
                                              "--out", str(tmp_path)])
        cli.validate_train(args)
        model = models.from_preset(args.preset, **cli.preset_overrides(args, shape, 10))
        model.build((None, 2) + shape)
        # The patch projection: a convolution with kernel = stride = patch size.
        tokens = model.encoder.get_layer("tokens").num_patches
        return tuple(model.encoder.patch_projection.kernel.shape[:2]), tokens

    assert grid() == ((4, 4), 49)  # the default 7x7 grid
    assert grid("--patch-size", "7") == ((7, 7), 16)
    assert grid("--patch-size", "14") == ((14, 14), 4)
    # A streamed dataset's size is known once opened: checked in preset_overrides.
    args = cli.build_parser().parse_args(["train", "--model", "mocov3", "--patch-size", "5",
                                          "--out", str(tmp_path)])
    with pytest.raises(cli.UsageError, match="--patch-size 5 must divide the image size 32"):
        cli.preset_overrides(args, (32, 32, 3), 10)
