"""One loss assembly for every model: the gradients the optimizer receives
on 2 and 4 replicas, for an even (8) and an uneven (11) global batch, equal
those of 1 device — SimCLR, MoCo, MoCoV3 and DualEncoder, each alone and
inside GradCache, with an L2 kernel regularizer on a backbone without
per-replica batch statistics (LayerNormalization); float32 and
mixed_float16."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.models import DualEncoder
from keras_contrast.models import MoCo
from keras_contrast.models import MoCoV3
from keras_contrast.models import SimCLR
from keras_contrast.training import GradCache
from keras_contrast.training import assemble_loss
from tests import test_case
from tests.models.common import StepGradientRecorder

# One fit of two steps: the even global batch, then the uneven one
# (tf.data splits 11 into 6 + 5 on 2 replicas and 3 + 3 + 3 + 2 on 4).
BATCHES = (8, 11)
REGULARIZER = 0.05


def regularized_dense(units, seed):
    return keras.layers.Dense(
        units, kernel_initializer=keras.initializers.GlorotUniform(seed),
        kernel_regularizer=keras.regularizers.L2(REGULARIZER))


def backbone(seed=0, inputs=6):
    """(b, inputs) → Dense(8, L2) → LayerNorm → tanh: no batch statistics."""
    return keras.Sequential([
        keras.Input((inputs,)), regularized_dense(8, seed),
        keras.layers.LayerNormalization(), keras.layers.Activation("tanh"),
    ])


# One-layer heads keep the traced steps small.
def make_simclr():
    return SimCLR(backbone(), projection_dims=(4,), projection_norm="layer")


def make_moco():
    return MoCo(backbone(), projection_dims=(4,), queue_size=12, momentum=0.9)


def make_mocov3():
    return MoCoV3(backbone(), (4,), (4,), momentum=0.9, projection_norm="layer")


def make_dual():
    return DualEncoder(backbone(0, inputs=6), backbone(1, inputs=5), projection_dim=4,
                       temperature=0.2)


MODELS = {
    "simclr": (make_simclr, lambda: losses.InfoNCE(0.5)),
    "moco": (make_moco, lambda: losses.InfoNCE(0.5)),
    "mocov3": (make_mocov3, lambda: losses.MoCoV3Loss(0.5)),
    "dual": (make_dual, lambda: losses.CLIPLoss(0.2)),
}


def data(name):
    """Two batches (8, then 11 samples) as one tf.data dataset."""
    rng = np.random.default_rng(0)
    total = sum(BATCHES)
    if name == "dual":
        a = rng.normal(size=(total, 6)).astype("float32")
        b = rng.normal(size=(total, 5)).astype("float32")
        parts = [((a[s:e], b[s:e]),) for s, e in ((0, 8), (8, total))]
        build_shape = ((None, 6), (None, 5))
    else:
        x = rng.normal(size=(total, 2, 6)).astype("float32")
        parts = [(x[s:e],) for s, e in ((0, 8), (8, total))]
        build_shape = (None, 2, 6)
    datasets = [tf.data.Dataset.from_tensors(part) for part in parts]
    return datasets[0].concatenate(datasets[1]), build_shape


def optimizer(policy):
    recorder = StepGradientRecorder(steps=len(BATCHES))
    if policy == "mixed_float16":
        # A modest scale: no float16 overflow, so neither step is skipped.
        return keras.optimizers.LossScaleOptimizer(recorder, initial_scale=2.0**8)
    return recorder


def recorded(trainer):
    inner = trainer.optimizer
    inner = getattr(inner, "inner_optimizer", inner)
    assert int(inner.iterations.numpy()) == len(BATCHES)  # no step skipped
    return [inner.gradients(step) for step in range(len(BATCHES))]


def train(name, policy, num_replicas, grad_cache, weights=None):
    """Two recorded steps; returns (per-step gradients, weights used)."""
    make_model, make_loss = MODELS[name]
    dataset, build_shape = data(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with test_case.strategy(num_replicas).scope():
            model = make_model()
            model.build(build_shape)
            if weights is None:
                weights = model.get_weights()  # before training: MoCo's queue changes
            model.set_weights(weights)
            trainer = GradCache(model, num_chunks=2) if grad_cache else model
            trainer.compile(optimizer=optimizer(policy), loss=make_loss())
        trainer.fit(dataset, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    return recorded(trainer), weights


@functools.lru_cache(maxsize=None)
def single_device(name, policy):
    return train(name, policy, 1, grad_cache=False)


# mixed_float16: the layers compute in float16 (unit roundoff 2^-11 ≈ 4.9e-4),
# and a matmul over a replica's (or chunk's) rows rounds its float16 outputs
# differently from the one-device matmul over the whole batch; measured:
# max |Δg| ≤ 8e-4 · max |g| (1-2 float16 roundoffs) over every model, replica
# count and wrapper. 5e-3 leaves a margin of 6 and is still far below the
# defects this test catches (a regularizer gradient applied R times instead
# of once: ≥ 10 % here; a per-replica mean on the uneven batch: ≥ 1 %).
# float32: rtol 1e-5, and an absolute floor of 1e-5 · max |g| for elements
# near 0, whose rounding is not relative to themselves: MoCoV3 in GradCache on
# 2 replicas once missed 1e-6 · max |g| by one element in a whole-suite run
# (|Δg| = 7.8e-7 = 1.8e-6 · max |g|; it passes alone — the reduction order of
# threaded CPU kernels varies with load). Still far below the defects above.
TOLERANCE = {"float32": (1e-5, 1e-5), "mixed_float16": (5e-3, 5e-3)}


# The fast set (the whole product takes ~8 min on 2 cores; the rest is
# marked slow): MoCo and DualEncoder, which assemble their own loss, in
# GradCache (MoCo on 4 replicas, DualEncoder on 2), alone on 2, and one
# mixed_float16 case each; SimCLR and MoCoV3 (Keras' own compute_loss) in
# GradCache on 2 replicas.
FAST = {
    ("moco", 2, False, "float32"), ("moco", 4, True, "float32"),
    ("dual", 2, True, "float32"),
    ("moco", 2, True, "mixed_float16"), ("dual", 2, False, "mixed_float16"),
    ("simclr", 2, True, "float32"), ("mocov3", 2, True, "float32"),
}


def cases():
    for policy in ("float32", "mixed_float16"):
        for name in MODELS:
            for num_replicas in (2, 4):
                for grad_cache in (False, True):
                    case = (name, num_replicas, grad_cache, policy)
                    marks = () if case in FAST else (pytest.mark.slow,)
                    wrapper = "grad_cache" if grad_cache else "plain"
                    yield pytest.param(*case, marks=marks,
                                       id=f"{name}-{num_replicas}-{wrapper}-{policy}")


@pytest.mark.parametrize("name,num_replicas,grad_cache,policy", list(cases()))
def test_optimizer_gradients_equal_one_device(name, num_replicas, grad_cache, policy):
    expected, weights = single_device(name, policy)
    actual, _ = train(name, policy, num_replicas, grad_cache, weights)
    rtol, atol_scale = TOLERANCE[policy]
    for step, batch in enumerate(BATCHES):
        assert len(actual[step]) == len(expected[step])
        for index, (a, e) in enumerate(zip(actual[step], expected[step])):
            assert np.max(np.abs(e)) > 0  # every weight gets a gradient
            test_case.assert_all_close(
                a, e, rtol=rtol, atol_scale=atol_scale,
                msg=f"step {step} (global batch {batch}), variable {index}")


@pytest.mark.parametrize("num_replicas,sizes", [(2, [6, 5]), (4, [3, 3, 3, 2])])
def test_the_second_batch_splits_unevenly(num_replicas, sizes):
    strategy = test_case.strategy(num_replicas)
    dataset, _ = data("simclr")
    batches = list(strategy.experimental_distribute_dataset(dataset))
    local = [[int(t[0].shape[0]) for t in strategy.experimental_local_results(b)]
             for b in batches]
    assert local == [[8 // num_replicas] * num_replicas, sizes]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum"])
def test_assemble_loss_replica_shares_add_up_to_the_global_loss(reduction):
    model = keras.Sequential([keras.Input((3,)), regularized_dense(2, seed=3)])
    kernel = model.layers[0].kernel.numpy().astype(np.float64)
    regularization = REGULARIZER * np.sum(kernel**2)
    rng = np.random.default_rng(4)
    values = rng.uniform(0.5, 2.0, size=7).astype("float32")
    weights = rng.uniform(0.5, 2.0, size=7).astype("float32")
    weighted = np.sum(weights.astype(np.float64) * values)
    expected = {"sum_over_batch_size": weighted / 7,
                "mean_with_sample_weight": weighted / np.sum(weights),
                "sum": weighted}[reduction] + regularization
    single = assemble_loss(model, values, weights, reduction)
    test_case.assert_all_close(single, expected)
    strategy = test_case.strategy(2)
    shares = strategy.run(
        tf.function(lambda v, w: assemble_loss(model, v, w, reduction)),
        args=(test_case.split_per_replica(strategy, values, sizes=[4, 3]),
              test_case.split_per_replica(strategy, weights, sizes=[4, 3])))
    total = sum(float(t.numpy()) for t in strategy.experimental_local_results(shares))
    test_case.assert_all_close(total, expected)


def test_assemble_loss_rejects_reductions_without_a_scalar():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    for reduction in ("none", None, "max"):
        with pytest.raises(ValueError, match="`reduction`"):
            assemble_loss(model, np.ones(4, "float32"), reduction=reduction)
