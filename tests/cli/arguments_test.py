"""The keras-contrast command's arguments: errors exit 2 with one line and
write nothing; the optimizer, schedule and weight-decay settings they build.

Most argument errors run in this process (`cli.main(argv)`): a child
process costs ~10 s of TensorFlow start-up. Two run as the command itself,
through `python -m keras_contrast` and the `keras-contrast` console script.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests import test_case
from tests.cli.commands import SMALL
from tests.cli.commands import main_in_process
from tests.cli.processes import command_env
from tests.cli.processes import run


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
        (["--vocabulary-size", "512"], "--vocabulary-size needs --model dual"),
        (["--model", "dual", "--dataset", "wordnet", "--vocabulary-size", "1"],
         "--vocabulary-size must be >= 2 (id 0 is the padding), got 1"),
        (["--width", "0"], "--width must be > 0, got 0"),
        (["--patch-size", "7"], "--patch-size needs --model mocov3"),
        (["--model", "mocov3", "--patch-size", "0"], "--patch-size must be > 0, got 0"),
        (["--model", "mocov3", "--patch-size", "5"],
         "--patch-size 5 must divide the image size 28"),
        (["--model", "mocov3", "--dataset", "digits", "--patch-size", "3"],
         "--patch-size 3 must divide the image size 8"),
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


# `python -m` (slow) runs the same `main` as the installed console script.
@pytest.mark.parametrize("console_script", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["python_m", "console_script"])
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


def test_shuffle_bn_with_a_moco_that_has_none_exits_2(monkeypatch, tmp_path, capsys):
    from keras_contrast import cli

    from keras_contrast.cli import _registry as registry

    # A MoCo without the `shuffle_bn` argument (keras_contrast before it).
    monkeypatch.setattr(registry, "init_arguments", lambda model: {"self": None,
                                                                    "backbone": None})
    out = str(tmp_path / "out")
    assert cli.main(["train", "--model", "moco", "--shuffle-bn", "--out", out]) == 2
    assert "this version of keras_contrast.models.MoCo has no Shuffle BN" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["train", "--model", "moco", "--out", out])
    cli.validate_train(args)
    assert "shuffle_bn" not in cli.preset_overrides(args, (8, 8, 1), 10)
