"""Masks with any channel axis: Ghost and Split BN against Keras' own BN.

Keras' `BatchNormalization` (and the masks that `Masking` produces) take a
mask shaped like the inputs without their LAST axis, whatever `axis` is;
every keras_contrast BN must read it the same way.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import layers
from tests import test_case

MOMENTUM = 0.7
# (5, 2, 3) and (4, 3, 3, 3): the shapes on which the channel-axis reading
# crashed, and was silently wrong; (4, 3, 5, 2): every axis of its own size.
SHAPES = [(5, 2, 3), (4, 3, 3, 3), (4, 3, 5, 2)]


def make_inputs(shape, seed, masked):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, size=shape).astype("float32")
    if not masked:
        return x, None
    mask = rng.uniform(size=shape[:-1]) > 0.4
    mask[0] = True  # every channel, whatever the axis, keeps some elements
    mask[-1] = False
    return x, mask


def make_layer(kind, axis, batch):
    if kind == "keras":
        return keras.layers.BatchNormalization(axis=axis, momentum=MOMENTUM)
    if kind == "batch":
        return layers.BatchNormalization(axis=axis, momentum=MOMENTUM)
    if kind == "ghost":
        return layers.GhostBatchNormalization(batch, axis=axis, momentum=MOMENTUM)
    return layers.SplitBatchNormalization(1, axis=axis, momentum=MOMENTUM)


def statistics_layer(layer):
    return layer.domain_layers[0] if isinstance(layer, layers.SplitBatchNormalization) else layer


def set_affine(layer, shape, axis):
    layer.build(shape)
    channels = shape[axis]
    rng = np.random.default_rng(11)
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
    layer.beta.assign(rng.normal(size=channels))
    stats = statistics_layer(layer)
    stats.moving_mean.assign(rng.normal(size=channels))
    stats.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def call(layer, x, training, mask):
    kwargs = {"domain": 0} if isinstance(layer, layers.SplitBatchNormalization) else {}
    return layer(x, training=training, mask=mask, **kwargs)


def train_step(layer, x, mask, upstream):
    """Output, and the gradients of sum(output · upstream) with respect to
    the inputs, gamma and beta."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = call(layer, x, True, mask)
        loss = tf.reduce_sum(outputs * upstream)
    gradients = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [outputs] + gradients


def to_numpy(value):
    return keras.ops.convert_to_numpy(value).astype("float64")


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("axis", [1, 2, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["batch", "ghost", "split"])
def test_one_group_equals_keras_batch_norm_with_masks_on_any_axis(kind, shape, axis, masked):
    """Ghost BN with one group, Split BN with one domain and our
    BatchNormalization: training outputs, gradients and moving statistics
    over two steps, then inference, all equal Keras' BN's."""
    reference = make_layer("keras", axis, shape[0])
    layer = make_layer(kind, axis, shape[0])
    for bn in (reference, layer):
        set_affine(bn, shape, axis)
    upstream = np.random.default_rng(5).normal(size=shape).astype("float32")
    for step in range(2):
        x, mask = make_inputs(shape, step, masked)
        ours, theirs = train_step(layer, x, mask, upstream), train_step(reference, x, mask,
                                                                        upstream)
        for name, a, b in zip(("outputs", "d/dx", "d/dgamma", "d/dbeta"), ours, theirs):
            test_case.assert_all_close(a, b, atol_scale=1e-5, msg=f"step {step}: {name}")
        for name in ("moving_mean", "moving_variance"):
            test_case.assert_all_close(
                getattr(statistics_layer(layer), name), getattr(reference, name),
                msg=f"step {step}: {name}",
            )
    x, mask = make_inputs(shape, 2, masked)
    test_case.assert_all_close(call(layer, x, False, mask), call(reference, x, False, mask))


@pytest.mark.parametrize("axis", [1, 2])
def test_ghost_groups_equal_keras_batch_norm_on_each_masked_group(axis):
    shape = (6, 3, 5, 2)
    x, mask = make_inputs(shape, 3, masked=True)
    mask[::2] = True  # the first sample of every group keeps all channels
    ghost = layers.GhostBatchNormalization(2, axis=axis, momentum=0.0)
    set_affine(ghost, shape, axis)
    outputs = to_numpy(ghost(x, training=True, mask=mask))
    means, variances = [], []
    for start in range(0, 6, 2):
        reference = keras.layers.BatchNormalization(axis=axis, momentum=0.0)
        reference.build(shape)
        reference.set_weights(ghost.get_weights())
        group = slice(start, start + 2)
        test_case.assert_all_close(
            outputs[group], reference(x[group], training=True, mask=mask[group]),
            atol_scale=1e-5,
        )
        means.append(to_numpy(reference.moving_mean))
        variances.append(to_numpy(reference.moving_variance))
    # One EMA step (momentum 0) towards the count-weighted group average.
    counts = np.stack([
        np.broadcast_to(mask[s : s + 2, ..., None], x[s : s + 2].shape)
        .sum(axis=tuple(a for a in range(4) if a != axis))
        for s in range(0, 6, 2)
    ]).astype("float64")
    test_case.assert_all_close(
        ghost.moving_mean, (counts * np.array(means)).sum(0) / counts.sum(0)
    )
    test_case.assert_all_close(
        ghost.moving_variance, (counts * np.array(variances)).sum(0) / counts.sum(0)
    )


@pytest.mark.parametrize("axis", [1, 2])
def test_split_domains_equal_keras_batch_norm_on_each_masked_domain(axis):
    shape = (6, 3, 5, 2)
    x, mask = make_inputs(shape, 4, masked=True)
    domain = np.array([0, 1, 0, 1, 1, 0], "int32")
    mask[:2] = True
    split = layers.SplitBatchNormalization(2, axis=axis, momentum=0.0)
    set_affine(split, shape, axis)
    outputs = to_numpy(split(x, training=True, mask=mask, domain=domain))
    for d in (0, 1):
        reference = keras.layers.BatchNormalization(axis=axis, momentum=0.0)
        reference.build(shape)
        reference.gamma.assign(split.gamma)
        reference.beta.assign(split.beta)
        rows = domain == d
        test_case.assert_all_close(
            outputs[rows], reference(x[rows], training=True, mask=mask[rows]), atol_scale=1e-5
        )
        for name in ("moving_mean", "moving_variance"):
            test_case.assert_all_close(
                getattr(split.domain_layers[d], name), getattr(reference, name)
            )


def test_masking_layer_mask_reaches_ghost_batch_norm_on_axis_1():
    """In a functional model the mask of `Masking` (the inputs without the
    last axis) drives Ghost BN on axis 1 exactly as Keras' BN."""
    x, _ = make_inputs((5, 2, 3), 6, masked=False)
    x[1, 0] = 0.0  # a masked time step
    x[3, 1] = 0.0

    def model(norm):
        inputs = keras.Input((2, 3))
        return keras.Model(inputs, norm(keras.layers.Masking(0.0)(inputs)))

    ghost = model(layers.GhostBatchNormalization(5, axis=1, momentum=0.0))
    reference = model(keras.layers.BatchNormalization(axis=1, momentum=0.0))
    test_case.assert_all_close(ghost(x, training=True), reference(x, training=True),
                               atol_scale=1e-5)
    test_case.assert_all_close(ghost.layers[-1].moving_variance,
                               reference.layers[-1].moving_variance)


@pytest.mark.parametrize("kind", ["ghost", "split"])
def test_rejects_a_mask_shaped_without_the_channel_axis(kind):
    layer = make_layer(kind, 1, 4)
    x = np.zeros((4, 2, 3), "float32")
    with pytest.raises(ValueError, match="without their last axis"):
        call(layer, x, True, np.ones((4, 3), bool))  # (batch, last): not Keras' shape
