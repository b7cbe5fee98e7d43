"""XLA in the configurations around a step: mixed precision with loss
scaling, several steps per execution, a smaller last batch, and split BN
inside a model. Each trains with `jit_compile=True` and without it from the
same weights and batches, and compares as `jit_training_test.py` does
(its tolerance and why)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers as kc_layers
from keras_contrast.normalization import DomainRoutedModel
from keras_contrast.training import GradCache
from tests.xla.jit_training_test import assert_close_training
from tests.xla.jit_training_test import case


def run(name, jit_compile, *, optimizer=None, grad_cache=None, samples=48, batch_size=16,
        drop_remainder=True, steps_per_execution=1, policy=None):
    """Trains case `name` one epoch over `samples` samples in batches of
    `batch_size` (a tf.data dataset, so `drop_remainder=False` leaves the
    last batch smaller and its size dynamic). Returns `(initial, final,
    paths, trainer)`."""
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model, loss, x = case(name)
        x = x[:samples]
        model.build((None, 2, 8, 8, 1))
        initial = [np.asarray(v) for v in model.variables]
        trainer = GradCache(model, num_chunks=grad_cache) if grad_cache else model
        trainer.compile(optimizer=optimizer() if optimizer else keras.optimizers.SGD(0.01),
                        loss=loss, jit_compile=jit_compile,
                        steps_per_execution=steps_per_execution)
        data = tf.data.Dataset.from_tensor_slices(x).batch(batch_size,
                                                           drop_remainder=drop_remainder)
        trainer.fit(data, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert trainer.jit_compile == jit_compile, "Keras changed jit_compile"
    final = [np.asarray(v) for v in model.variables]
    return initial, final, [v.path for v in model.variables], trainer


def loss_scaled_sgd(initial_scale):
    return lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01),
                                                       initial_scale=initial_scale)


# One step from the same weights, float32 graph as the reference. float16
# keeps 11 bits, and on these tiny models one step's update differs from
# float32's by a few percent on either path (measured: the op-by-op graph
# 4.1 %, XLA, which fuses and rounds less often, 2.0 %; in GradCache 12 %
# and 5.8 %). Over several steps that grows chaotically, so the test takes
# one. A wrong step differs by the whole update: unscaled gradients by the
# factor 2^8, a skipped step by 100 %.
@pytest.mark.parametrize("grad_cache", [None, 2], ids=["native", "grad_cache"])
def test_mixed_float16_with_loss_scaling_trains_the_same_under_xla(grad_cache):
    optimizer = loss_scaled_sgd(2.0**8)
    initial, expected, paths, _ = run("simclr", False, optimizer=optimizer,
                                      grad_cache=grad_cache, samples=16)
    for jit in (False, True):
        _, actual, _, trainer = run("simclr", jit, optimizer=optimizer, grad_cache=grad_cache,
                                    samples=16, policy="mixed_float16")
        assert trainer.optimizer.iterations.numpy() == 1  # not skipped
        assert trainer.optimizer.dynamic_scale.numpy() == 2.0**8
        convolutions = [layer for layer in trainer._flatten_layers()
                        if isinstance(layer, keras.layers.Conv2D)]
        assert convolutions and all(c.compute_dtype == "float16" for c in convolutions)
        assert_close_training(initial, expected, actual, paths, relative=0.25, floor=1e-4)


def test_loss_scale_overflow_skips_the_same_steps_under_xla():
    # 2^40 overflows float16 (max 65504) in the backward pass: the optimizer
    # skips the update and halves the scale, by a `tf.cond` on the finite
    # gradients that XLA must keep.
    results = {jit: run("simclr", jit, optimizer=loss_scaled_sgd(2.0**40),
                        policy="mixed_float16") for jit in (False, True)}
    initial, expected, paths, graph = results[False]
    _, actual, _, xla = results[True]
    for trainer in (graph, xla):
        assert trainer.optimizer.iterations.numpy() == 0  # all 3 skipped
        assert trainer.optimizer.dynamic_scale.numpy() == 2.0**37
    for start, a, e, path in zip(initial, actual, expected, paths):
        if "moving" not in path:  # BN statistics move in the forward pass
            np.testing.assert_array_equal(a, start, err_msg=path)
            np.testing.assert_array_equal(e, start, err_msg=path)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_grad_cache_with_several_steps_per_execution(jit):
    # MoCo: its queue and key-encoder update run after every optimizer step,
    # also inside one execution of 3 steps.
    initial, expected, paths, _ = run("moco", False, grad_cache=2)
    _, actual, _, trainer = run("moco", jit, grad_cache=2, steps_per_execution=3)
    assert trainer.optimizer.iterations.numpy() == 3
    assert_close_training(initial, expected, actual, paths)


def test_smaller_last_batch_under_xla():
    # 40 samples in batches of 16: 16, 16 and a last batch of 8 whose size
    # is only known at run time. GradCache(num_chunks=3) then splits with
    # run-time sizes (6, 5, 5, then 3, 3, 2); XLA compiles the step again for
    # the new shape.
    for grad_cache in (None, 3):
        initial, expected, paths, graph = run("simclr", False, grad_cache=grad_cache,
                                              samples=40, drop_remainder=False)
        _, actual, _, xla = run("simclr", True, grad_cache=grad_cache, samples=40,
                                drop_remainder=False)
        assert xla.optimizer.iterations.numpy() == graph.optimizer.iterations.numpy() == 3
        assert_close_training(initial, expected, actual, paths)


def test_smaller_last_batch_equals_its_own_step():
    # The 3rd, dynamic-size step equals a step on those 8 samples alone.
    _, final, _, _ = run("simclr", True, grad_cache=3, samples=40, drop_remainder=False)
    keras.utils.set_random_seed(0)
    model, loss, x = case("simclr")
    model.build((None, 2, 8, 8, 1))
    initial = [np.asarray(v) for v in model.variables]
    trainer = GradCache(model, num_chunks=3)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, jit_compile=False)
    for start in (0, 16, 32):
        stop = min(start + 16, 40)
        trainer.fit(x[start:stop], batch_size=stop - start, epochs=1, shuffle=False,
                    verbose=0)
    paths = [v.path for v in model.variables]
    expected = [np.asarray(v) for v in model.variables]
    assert_close_training(initial, expected, final, paths)


def split_bn_regressor():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = kc_layers.SplitBatchNormalization(num_domains=2, separate_affine=True,
                                          momentum=0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return DomainRoutedModel(keras.Model(inputs, keras.layers.Dense(1)(x)))


def test_split_batch_norm_in_a_model_trains_the_same_under_xla():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 8, 8, 1)).astype("float32")
    domain = rng.integers(0, 2, 48).astype("int32")
    x[domain == 1] *= 3.0  # the domains differ in scale
    y = rng.normal(size=(48, 1)).astype("float32")
    results = {}
    for jit in (False, True):
        model = split_bn_regressor()
        initial = [np.asarray(v) for v in model.variables]
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit)
        model.fit([x, domain], y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        assert model.jit_compile == jit
        results[jit] = [np.asarray(v) for v in model.variables], model
    (expected, graph), (actual, xla) = results[False], results[True]
    paths = [v.path for v in graph.variables]
    assert_close_training(initial, expected, actual, paths)
    # Each domain's statistics moved on its own samples only.
    split = [layer for layer in xla.model.layers
             if isinstance(layer, kc_layers.SplitBatchNormalization)][0]
    means = [np.asarray(d.moving_mean) for d in split.domain_layers]
    np.testing.assert_allclose(means[1], 3 * means[0], rtol=0.15)


def test_split_batch_norm_out_of_range_domain_under_xla():
    # docs/checks.md: the graph raises; XLA drops the assertion and gives
    # those samples NaN instead of another domain's statistics.
    model = split_bn_regressor()
    x = np.ones((4, 8, 8, 1), "float32")
    domain = tf.constant([0, 1, 2, 0])
    graph = tf.function(lambda x, d: model([x, d], training=True))
    with pytest.raises(tf.errors.InvalidArgumentError):
        graph(x, domain)
    output = tf.function(lambda x, d: model([x, d], training=True), jit_compile=True)(
        x, domain).numpy()
    assert np.isnan(output[2]).all() and np.isfinite(output[[0, 1, 3]]).all()
