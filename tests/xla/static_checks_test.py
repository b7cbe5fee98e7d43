"""The run-time checks XLA drops (docs/checks.md): every `tf.debugging`
assertion of the training path is listed there, and each one whose value
is known when the step is traced also has a static check that raises a
ValueError under `jit_compile=True`."""

import ast
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast import layers
from keras_contrast import losses
from keras_contrast import models
from keras_contrast.training import GradCache
from tests import test_case
from tests.xla.jit_training_test import conv_backbone

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "keras_contrast"
CHECKS = PACKAGE.parent / "docs" / "checks.md"
# Module → the "Where" cell of its row(s) in docs/checks.md. keras_contrast/data
# is left out: its assertions run in tf.data, which XLA never compiles.
DOCUMENTED = {
    "losses/_checks.py": ["contrastive losses", "`SigLIPLoss`"],
    "losses/global_batch.py": ["contrastive losses"],
    "training/grad_cache.py": ["`GradCache(num_chunks=k)`"],
    "models/moco.py": ["`MoCo`"],
    "distribute/shuffle.py": ["`shuffle_across_replicas` (Shuffle BN)"],
    "layers/split_batch_normalization.py": ["`SplitBatchNormalization`"],
}


def debugging_calls(path):
    """Lines of `tf.debugging.*(...)` calls in a module's code (not its
    docstrings or comments)."""
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "debugging"]


def test_every_run_time_check_of_the_training_path_is_documented():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith("data/") and debugging_calls(path):
            found[relative] = debugging_calls(path)
    assert set(found) == set(DOCUMENTED), (
        "a module gained or lost tf.debugging checks; update docs/checks.md and DOCUMENTED",
        sorted(found))
    rows = [line.split("|")[1].strip() for line in CHECKS.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| Where")]
    for module, wheres in DOCUMENTED.items():
        for where in wheres:
            assert where in rows, (module, where, rows)


def jit(function):
    return tf.function(function, jit_compile=True)


VIEWS = np.random.default_rng(0).normal(size=(4, 2, 3)).astype("float32")


def test_loss_checks_with_values_known_at_trace_time_hold_under_xla():
    with pytest.raises(ValueError, match="temperature"):
        jit(lambda z: losses.info_nce(None, z, temperature=tf.constant(0.0)))(VIEWS)
    with pytest.raises(ValueError, match="temperature"):
        jit(lambda z: losses.info_nce(None, z, temperature=tf.constant(np.inf)))(VIEWS)
    with pytest.raises(ValueError, match="bias"):
        jit(lambda z: losses.siglip_loss(None, z, bias=tf.constant(np.inf)))(VIEWS)
    with pytest.raises(ValueError, match="no negatives"):
        jit(lambda z: losses.DCL(0.2)(None, z))(VIEWS[:1])
    with pytest.raises(ValueError, match="holds 3 weights but the batch holds 4"):
        jit(lambda z: losses.InfoNCE(0.2)(None, z, sample_weight=tf.ones(3)))(VIEWS)
    # The run-time assertion itself is gone under XLA: a dynamic batch of one
    # sample passes (the no-negatives value of docs/checks.md), while the
    # graph raises.
    spec = [tf.TensorSpec((None, 2, 3))]
    graph = tf.function(lambda z: losses.DCL(0.2)(None, z), input_signature=spec)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than 2"):
        graph(VIEWS[:1])
    xla = tf.function(lambda z: losses.DCL(0.2)(None, z), input_signature=spec,
                      jit_compile=True)
    assert np.isfinite(xla(VIEWS[:1]).numpy())


def images(n):
    return np.random.default_rng(0).uniform(size=(n, 2, 8, 8, 1)).astype("float32")


def test_grad_cache_and_moco_batch_checks_hold_under_xla():
    simclr = models.SimCLR(conv_backbone(), projection_dims=(8, 4))
    trainer = GradCache(simclr, num_chunks=4)
    trainer.compile(optimizer="sgd", loss=losses.InfoNCE(0.2), jit_compile=True)
    with pytest.raises(ValueError, match="smaller than `num_chunks`=4"):
        trainer.fit(images(3), batch_size=3, verbose=0)
    moco = models.MoCo(conv_backbone(), projection_dims=(8, 4), queue_size=8, momentum=0.9)
    moco.compile(optimizer="sgd", loss=losses.InfoNCE(0.2), jit_compile=True)
    with pytest.raises(ValueError, match="exceeds `queue_size`=8"):
        moco.fit(images(16), batch_size=16, verbose=0)


def test_split_batch_norm_ids_known_at_trace_time_are_checked_under_xla():
    layer = layers.SplitBatchNormalization(2)
    x = np.ones((3, 4), "float32")
    with pytest.raises(ValueError, match=r"num_domains=2\), got 2"):
        jit(lambda x: layer(x, training=True, domain=tf.constant([0, 2, 1])))(x)
    with pytest.raises(ValueError, match="one id per sample"):
        jit(lambda x: layer(x, training=True, domain=tf.constant([0, 1])))(x)


def test_unshuffle_row_count_is_checked_statically():
    strategy = test_case.strategy(2)

    def replica_fn(x):
        _, unshuffle = distribute.shuffle_across_replicas(x, seed=tf.constant([1, 2]))
        return unshuffle(x[:1])

    x = test_case.split_per_replica(strategy, np.zeros((4, 3), "float32"))
    with pytest.raises(ValueError, match=r"returned \(2\), got `y` with 1"):
        tf.function(lambda x: strategy.run(replica_fn, args=(x,)))(x)
    keras.backend.clear_session()
