"""TPU-safe training steps: each model's train step (and GradCache's)
compiles whole with `tf.function(jit_compile=True)` on CPU, as TPUStrategy
compiles a replica step, and its HLO holds no custom-call (an op XLA
cannot lower itself), no host transfer (send/recv, infeed/outfeed,
host compute) and no float64."""

import re

import keras
import pytest
import tensorflow as tf

from keras_contrast.training import GradCache
from tests.xla.jit_training_test import case

# HLO instructions that a TPU either lacks or runs through the host.
FORBIDDEN = ("custom-call", "send", "recv", "send-done", "recv-done", "infeed", "outfeed")


def step_hlo(name, tile=None, grad_cache=False):
    keras.utils.set_random_seed(0)
    model, loss, x = case(name, tile)
    model.build(((None, 6), (None, 6)) if name.startswith("dual") else (None, 2, 8, 8, 1))
    trainer = GradCache(model, num_chunks=2) if grad_cache else model
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    trainer.optimizer.build(trainer.trainable_variables)
    data = (tuple(tf.constant(v[:16]) for v in x),) if isinstance(x, tuple) else tf.constant(
        x[:16])

    def train_step(batch):
        return trainer.train_step(batch)

    return tf.function(train_step, jit_compile=True).experimental_get_compiler_ir(data)(
        stage="hlo")


def instructions(hlo):
    """The HLO opcodes used (`%x = f32[4]{0} add(...)` → `add`)."""
    return set(re.findall(r"=\s*\S+\s+([a-z][a-z0-9\-]*)\(", hlo))


@pytest.mark.parametrize("name,tile,grad_cache", [
    ("simclr", None, False), ("simclr:shuffle_bn", None, False), ("simclr:dclw", 4, False),
    ("moco", None, False), ("mocov3", None, False), ("mocov3", 4, False),
    ("dual:clip", 4, False), ("dual:siglip", 4, False), ("dual:siglip", None, False),
    ("simclr", None, True), ("moco", None, True), ("dual:clip", None, True)])
def test_train_step_hlo_is_tpu_safe(name, tile, grad_cache):
    hlo = step_hlo(name, tile, grad_cache)
    used = instructions(hlo)
    assert {"dot", "add"} <= used or {"convolution", "add"} <= used, sorted(used)
    assert not used & set(FORBIDDEN), sorted(used & set(FORBIDDEN))
    assert "f64[" not in hlo and "f64 " not in hlo
    # A host round trip would also show as a Python callback.
    assert "py_func" not in hlo.lower() and "host" not in " ".join(sorted(used))
