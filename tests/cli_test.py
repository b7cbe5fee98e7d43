"""The keras-contrast command: argument errors (exit 2, one line, nothing
written), a short training run on digits, resume after the process is killed
from outside equal to the uninterrupted run, evaluate and export.

Most argument errors run in this process (`cli.main(argv)`): a child
process costs ~10 s of TensorFlow start-up. Two run as the command itself,
through `python -m keras_contrast` and the `keras-contrast` console script.
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import test_case
from tests.cli.processes import command_env
from tests.cli.processes import kill_after_epoch
from tests.cli.processes import run
from tests.cli.processes import run_on_terminal

# A tiny run; SMALL keeps Keras quiet, SMALL_RUN leaves --verbose to its default.
SMALL_RUN = ["--dataset", "digits", "--batch-size", "64", "--width", "4", "--knn-k", "10",
             "--train-size", "512", "--seed", "3"]
SMALL = [*SMALL_RUN, "--verbose", "0"]


def main_in_process(argv):
    """`cli.main(argv)`'s exit code, also when argparse exits."""
    from keras_contrast import cli

    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse
        return exit_.code


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "resnet"], "unknown --model"),
        (["--loss", "clip"], "does not fit --model"),
        (["--preset", "nope"], "unknown --preset"),
        (["--batch-size", "30", "--replicas", "4"], "must split into --replicas"),
        (["--batch-size", "64", "--replicas", "2", "--chunk-size", "5"], "not divisible"),
        (["--dataset", "/no/such/folder"], "neither"),
        (["--out", "/proc/keras_contrast_out"], "not writable"),
        (["--epochs", "0"], "--epochs must be > 0"),
        (["--model", "dual"], "--model dual trains on --dataset wordnet"),
        (["--dataset", "wordnet"], "--model dual trains on --dataset wordnet"),
        (["--dataset", "/"], "neither Fashion-MNIST IDX files nor train/ and test/"),
        (["--image-size", "0"], "--image-size must be > 0"),
        (["--warmup-steps", "3"], "--warmup-steps must be >= 0 and needs --schedule cosine"),
        (["--schedule", "cosine", "--warmup-steps", "-1"], "--warmup-steps must be >= 0"),
        (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
        (["--model", "moco", "--loss", "dclw"], "--loss dclw does not fit --model moco"),
        (["--model", "moco", "--loss", "mocov3"], "--loss mocov3 does not fit --model moco"),
        (["--model", "moco", "--preset", "mocov3_vit_tiny"], "is not a moco preset"),
        (["--model", "mocov3", "--preset", "moco_resnet_tiny"], "is not a mocov3 preset"),
        (["--queue-size", "512"], "--queue-size needs --model moco"),
        (["--model", "moco", "--queue-size", "128"], "--queue-size 128 must be >= --batch-size"),
        (["--model", "moco", "--queue-size", "0"], "--queue-size must be > 0"),
        (["--momentum", "0.9"], "--momentum needs --model moco or mocov3"),
        (["--model", "moco", "--momentum", "1.5"], "--momentum must lie in [0, 1]"),
        (["--model", "mocov3", "--shuffle-bn"], "--shuffle-bn needs --model simclr or moco"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (["--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'"),
        # The former test hook is gone: the resume test kills the process from outside.
        (["--interrupt-after-epoch", "1"], "unrecognized arguments: --interrupt-after-epoch"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["train", "--out", out, *args] if "--out" not in args else ["train", *args]
    assert main_in_process(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert captured.out == ""
    assert not os.path.exists(out)


@pytest.mark.parametrize("console_script", [False, True], ids=["python_m", "console_script"])
def test_the_command_exits_2_with_one_line(console_script, tmp_path):
    """The command itself: its start-up writes nothing on stderr (TensorFlow's
    C++ chatter included) and TFDS logs nothing around the one line."""
    out = str(tmp_path / "out")
    if console_script:
        script = os.path.join(os.path.dirname(sys.executable), "keras-contrast")
        if not os.path.exists(script):
            pytest.skip("the keras-contrast console script is not installed next to this Python")
        completed = subprocess.run([script, "train", "--out", out, "--epochs", "two"],
                                   capture_output=True, text=True, timeout=600,
                                   env=command_env())
        message = "train: argument --epochs: invalid int value: 'two'"
    else:
        completed = run("train", "--out", out, "--dataset", "tfds:fashion_mnist",
                        "--data-dir", "/no/such/tfds")
        message = "not prepared"
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], completed.stderr
    assert lines[0].startswith("keras-contrast: error: ")
    assert not os.path.exists(out)


def final_weights(out):
    import keras

    model = keras.models.load_model(os.path.join(out, "model.keras"))
    return model.get_weights()


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


def test_cosine_schedule_learning_rates():
    from keras_contrast import cli

    args = cli.build_parser().parse_args(["train", "--out", "unused", "--schedule", "cosine",
                                          "--warmup-steps", "4", "--learning-rate", "0.01"])
    optimizer = cli.make_optimizer(args, total_steps=20, variables=[])
    rates = []
    for step in range(21):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    # Linear warm-up 0 -> 0.01 over 4 steps, then 0.01 * (1 + cos(pi t / 16)) / 2.
    expected = [0.01 * step / 4 for step in range(4)] + [
        0.005 * (1 + np.cos(np.pi * t / 16)) for t in range(17)]
    np.testing.assert_allclose(rates, expected, atol=1e-7)
    constant = cli.make_optimizer(cli.build_parser().parse_args(["train", "--out", "unused"]), 20,
                                  [])
    assert float(constant.learning_rate) == pytest.approx(2e-3)


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
    completed = run("train", "--model", "dual", "--dataset", "wordnet", "--epochs", "1",
                    "--batch-size", "64", "--train-size", "1200", "--replicas", "2",
                    "--verbose", "0", "--out", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0.0 <= results["recall_at_1"] <= results["recall_at_5"] <= 1.0
    assert results["held_out_pairs"] == 120
    import tensorflow as tf

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


# slow: ~140 s; two-worker exactness is also tested, without the command
# line, by tests/distribute/multi_worker_test.py in `make test`.
@pytest.mark.slow
def test_two_workers_on_loopback_equal_a_single_process_run(tmp_path):
    """`--strategy multiworker`: 2 worker processes on 127.0.0.1 (TF_CONFIG)
    with synchronised BN end with bit-identical weights, equal to one
    process with 2 simulated replicas on the same global batches."""
    args = [*SMALL, "--epochs", "1", "--train-size", "256", "--norm", "sync"]
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


class _Decayable:
    """A model with every kind of variable the CLI's models hold: kernels
    (rank 2), an embedding table (rank 2), a bias and BN's γ/β (rank 1),
    the learnable temperature (rank 0). Its loss is 0·outputs, so every
    gradient is exactly 0 and a step changes only what weight decay
    reaches."""

    @staticmethod
    def build():
        import keras

        from keras_contrast import layers

        class Model(keras.Model):
            def __init__(self):
                super().__init__()
                init = keras.initializers.RandomNormal(seed=1)
                self.dense = keras.layers.Dense(3, kernel_initializer=init,
                                                bias_initializer=init)
                self.norm = keras.layers.BatchNormalization(
                    gamma_initializer=init, beta_initializer=init)
                self.embed = keras.layers.Embedding(5, 3, embeddings_initializer=init)
                self.temperature = layers.LearnableTemperature()

            def call(self, x):
                ids = keras.ops.zeros((keras.ops.shape(x)[0],), "int32")
                return self.norm(self.dense(x)) * self.temperature() + self.embed(ids)

        model = Model()
        model(np.ones((1, 4), "float32"))  # creates the variables
        return model


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "lars"])
def test_weight_decay_reaches_only_variables_of_rank_two_or_more(optimizer, replicas):
    import keras

    from keras_contrast import cli

    args = cli.build_parser().parse_args(["train", "--out", "unused", "--optimizer", optimizer,
                                          "--learning-rate", "0.1", "--weight-decay", "0.5",
                                          "--batch-size", "64"])
    with test_case.strategy(replicas).scope():
        model = _Decayable.build()
        model.compile(optimizer=cli.make_optimizer(args, 10, model.trainable_variables),
                      loss=lambda y, p: 0.0 * keras.ops.sum(p))
    before = {v.path: v.numpy().astype(np.float64) for v in model.trainable_variables}
    model.fit(np.ones((4, 4), "float32"), np.zeros((4, 3), "float32"), batch_size=4, epochs=1,
              verbose=0)
    # With a zero gradient, one step multiplies a decayed w by (hand-derived):
    #   AdamW, SGD (decoupled decay): 1 - lr·λ = 1 - 0.1·0.5;
    #   LARS: g = λw, trust η‖w‖/‖g‖ = η/λ, step lr·η·w, with lr = 0.1·√64 (sqrt rule).
    factor = {"adamw": 1 - 0.1 * 0.5, "sgd": 1 - 0.1 * 0.5, "lars": 1 - 0.1 * 8 * 0.001}[optimizer]
    decayed = set()
    for variable in model.trainable_variables:
        expected = before[variable.path] * (factor if len(variable.shape) >= 2 else 1.0)
        test_case.assert_all_close(variable.numpy(), expected, rtol=1e-6, msg=variable.path)
        if len(variable.shape) >= 2:
            decayed.add(variable.path.split("/")[-1])
    assert decayed == {"kernel", "embeddings"}
    assert {len(v.shape) for v in model.trainable_variables} == {0, 1, 2}


def test_optimizer_defaults_follow_simclr_and_moco_recipes():
    from keras_contrast import cli

    def settings(*argv):
        return cli.optimizer_settings(cli.build_parser().parse_args(
            ["train", "--out", "unused", "--batch-size", "256", *argv]))

    assert settings() == (2e-3, 1e-4)
    assert settings("--optimizer", "lars") == (pytest.approx(0.075 * 16), 1e-6)
    assert settings("--optimizer", "lars", "--lr-scaling", "linear",
                    "--learning-rate", "0.3") == (pytest.approx(0.3), 1e-6)
    assert settings("--optimizer", "sgd", "--weight-decay", "0") == (0.03, 0.0)


def test_train_checks_matplotlib_and_tensorboard_before_it_starts(tmp_path, monkeypatch,
                                                                  capsys):
    out = str(tmp_path / "out")
    # Both modules hidden: `import matplotlib` raises ImportError and
    # importlib.util.find_spec returns None for them.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main_in_process(["train", *SMALL, "--epochs", "1", "--train-size", "64",
                            "--out", out]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "train needs matplotlib" in lines[0] and "tensorboard" in lines[0]
    assert "keras-contrast[cli]" in lines[0]
    assert not os.path.exists(out)


def test_missing_requirements_per_model(monkeypatch):
    from keras_contrast import cli

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert cli.missing_requirements("simclr") == ["tensorboard"]
    assert cli.missing_requirements("dual") == []  # no TensorBoard callback
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.missing_requirements("dual") == ["matplotlib"]


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


def test_shuffle_bn_with_a_moco_that_has_none_exits_2(monkeypatch, tmp_path, capsys):
    from keras_contrast import cli

    from keras_contrast.cli import registry

    # A MoCo without the `shuffle_bn` argument (keras_contrast before it).
    monkeypatch.setattr(registry, "init_arguments", lambda model: {"self": None,
                                                                    "backbone": None})
    out = str(tmp_path / "out")
    assert cli.main(["train", "--model", "moco", "--shuffle-bn", "--out", out]) == 2
    assert "this version of keras_contrast.models.MoCo has no Shuffle BN" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["train", "--model", "moco", "--out", out])
    cli.validate_train(args)
    assert "shuffle_bn" not in cli.preset_overrides(args, (8, 8, 1), 10)
