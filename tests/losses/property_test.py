"""Property-based tests of every loss (hypothesis), dense and tiled, each
`negatives` mode, with and without class ids:

- the value and the gradient are finite for embedding scales up to 1e4,
  temperatures in [0.01, 1], batches of 2-16, dimensions 2-32, and equal
  the float64 NumPy reference;
- the tiled loss equals the dense one;
- float16 / bfloat16 embeddings give the float32 result on the same rounded
  inputs, up to the final cast (every loss computes in float32).

The examples run eagerly: shapes change from one example to the next, and
tracing a `tf.function` per shape would cost more than the computation.
About 25 examples per loss run by default; the `slow`-marked copies run 200.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_contrast import losses
from tests import test_case
from tests.losses import reference

DEFAULT_EXAMPLES = 25
SLOW_EXAMPLES = 200


def property_settings(max_examples):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    make: type  # the loss class
    negatives: str = None  # None: the loss has no `negatives` argument
    labels: bool = False  # takes class ids
    views: int = 2

    def __repr__(self):
        return self.name

    def loss(self, temperature, normalize, tile_size=None, **kwargs):
        if self.negatives is not None:
            kwargs["negatives"] = self.negatives
        return self.make(temperature=temperature, normalize=normalize, tile_size=tile_size,
                         **kwargs)

    def reference(self, y, temperature, labels):
        if self.make is losses.MoCoV3Loss:
            return reference.mocov3(y, temperature)
        if self.make is losses.CLIPLoss:
            return reference.clip(y, temperature, labels=labels)
        kind = {losses.InfoNCE: "infonce", losses.DCL: "dcl", losses.DCLW: "dclw"}[self.make]
        return reference.two_view(y, temperature, self.negatives, kind, labels=labels)


CONFIGS = [
    Config("infonce_all", losses.InfoNCE, "all", labels=True),
    Config("infonce_cross", losses.InfoNCE, "cross", labels=True),
    Config("dcl_all", losses.DCL, "all", labels=True),
    Config("dcl_cross", losses.DCL, "cross", labels=True),
    Config("dclw_all", losses.DCLW, "all"),
    Config("dclw_cross", losses.DCLW, "cross"),
    Config("clip", losses.CLIPLoss, labels=True),
    Config("mocov3", losses.MoCoV3Loss, views=4),
]


@st.composite
def problems(draw, config, max_scale=1e4):
    """A batch of embeddings, class ids or None, a temperature, a tile size."""
    batch = draw(st.integers(2, 16))
    dim = draw(st.integers(2, 32))
    scale = 10.0 ** draw(st.floats(-3.0, np.log10(max_scale)))
    structure = draw(st.sampled_from(["normal", "collapsed", "aligned", "one_hot"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.normal(size=(batch, config.views, dim))
    if structure == "collapsed":  # every embedding nearly the same vector
        y = y[:1, :1] + 1e-3 * y
    elif structure == "aligned":  # the views of a sample agree
        y = np.repeat(y[:, :1], config.views, axis=1)
    elif structure == "one_hot":
        y = np.eye(dim)[rng.integers(0, dim, size=(batch, config.views))]
    y = (scale * y / np.max(np.abs(y))).astype("float32")
    labels = None
    if config.labels and draw(st.booleans()):
        # 1 to 4 classes: a batch of a single class (no negatives) is common.
        classes = draw(st.integers(1, 4))
        labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=batch,
                                        max_size=batch)), "int32")
    temperature = draw(st.floats(0.01, 1.0))
    # At most 4 tiles (eager tile loops are slow); tiles of 1 column and
    # partial last tiles are in tiled_test.py.
    tile_size = draw(st.integers(max(1, batch // 2), 2 * batch + 1))
    return y, labels, temperature, tile_size


def value_and_gradients(loss, y, labels, temperature):
    """Per-sample losses and the gradients of their weighted sum with
    respect to the embeddings and the temperature."""
    y = tf.constant(y)
    temperature = tf.constant(temperature, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([y, temperature])
        values = loss.contrast(labels, y, temperature)
        total = tf.reduce_sum(values * tf.range(1.0, 1.0 + values.shape[0]))
    gradient_y, gradient_temperature = tape.gradient(total, [y, temperature])
    return values.numpy(), gradient_y.numpy(), gradient_temperature.numpy()


def max_logit(y, temperature, normalize):
    z = y.astype(np.float64)
    if normalize:
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-6)
    flat = z.reshape(-1, z.shape[-1])
    return np.max(np.abs(flat @ flat.T)) / temperature


def check_finite_reference_and_tiled(config, problem, normalize):
    y, labels, temperature, tile_size = problem
    dense = value_and_gradients(config.loss(temperature, normalize), y, labels, temperature)
    tiled = value_and_gradients(config.loss(temperature, normalize, tile_size), y, labels,
                                temperature)
    for result in (dense, tiled):
        for array in result:
            assert np.all(np.isfinite(array)), result
    # float32 logits carry an absolute error of a few ulps of the largest
    # logit; the losses are differences of such terms.
    logit_scale = max_logit(y, temperature, normalize)
    atol = 1e-6 * max(logit_scale, 1.0)
    if normalize and np.all(np.linalg.norm(y, axis=-1) > 1e-6):
        expected = config.reference(y, temperature, labels)
        np.testing.assert_allclose(dense[0], expected, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-5, atol=atol)
    # Rounding the logits s (error ~ eps·|s|) changes the probabilities
    # p = exp(s - lse) by a relative ~eps·|s|, hence ∂L/∂y = Σ w (p - t) c/τ
    # by ~eps·|s|·|c|/τ per term and ∂L/∂τ = -Σ w (p - t) s/τ by
    # ~eps·|s|²/τ: compared at float32 precision of those terms (w_i = 1 …
    # batch, the weights of the sum; MoCo v3 has 2 terms × 2τ per sample).
    terms = max(4 * temperature, 1.0) if config.views == 4 else 1.0
    logit_scale = max(logit_scale, 1.0)
    scale = 1e-5 * np.sum(np.arange(1, len(y) + 1)) * terms * logit_scale / temperature
    norms = np.maximum(np.linalg.norm(y.astype(np.float64), axis=-1, keepdims=True), 1e-6)
    # ∂z/∂y of the normalisation is 1/|y|; without it |c| <= max |y|.
    candidate_scale = 1.0 / norms if normalize else np.max(norms)
    assert np.all(np.abs(tiled[1] - dense[1]) <= 1e-4 * np.abs(dense[1]) + scale * candidate_scale)
    assert abs(tiled[2] - dense[2]) <= 1e-4 * abs(dense[2]) + scale * logit_scale


def check_half_precision(config, problem, dtype, tiled):
    """float16/bfloat16 embeddings, loss dtype `dtype`: the float32 loss on
    the rounded embeddings, rounded once (value and gradient)."""
    y, labels, temperature, tile_size = problem
    tile_size = tile_size if tiled else None
    half = tf.cast(tf.constant(y), dtype)
    rounded = tf.cast(half, tf.float32)
    results = []
    for inputs, loss_dtype in ((half, dtype), (rounded, "float32")):
        loss = config.loss(temperature, True, tile_size, dtype=loss_dtype)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            value = loss(labels, inputs)
        gradient = tape.gradient(value, inputs)
        assert value.dtype == tf.as_dtype(loss_dtype) and gradient.dtype == inputs.dtype
        results.append((tf.cast(value, tf.float64).numpy(),
                        tf.cast(gradient, tf.float64).numpy()))
    (half_value, half_gradient), (value, gradient) = results
    assert np.isfinite(half_value) and np.all(np.isfinite(half_gradient))
    # Round to nearest: relative error <= 2^-11 (float16) or 2^-8 (bfloat16)
    # for normal numbers, half the spacing of the subnormals below them.
    unit, subnormal = {"float16": (2.0**-11, 2.0**-25), "bfloat16": (2.0**-8, 2.0**-134)}[dtype]
    assert abs(half_value - value) <= unit * abs(value) + subnormal
    assert np.all(np.abs(half_gradient - gradient) <= unit * np.abs(gradient) + subnormal)


@st.composite
def finite_cases(draw, config):
    return draw(problems(config)), draw(st.booleans())


@st.composite
def half_cases(draw, config):
    # float16 holds up to 65504: the embeddings stay below 3e4.
    return (draw(problems(config, max_scale=3e4)), draw(st.sampled_from(["float16", "bfloat16"])),
            draw(st.booleans()))


def _finite_test(max_examples):
    @pytest.mark.parametrize("config", CONFIGS, ids=repr)
    @property_settings(max_examples)
    @given(data=st.data())
    def test(config, data):
        problem, normalize = data.draw(finite_cases(config))
        check_finite_reference_and_tiled(config, problem, normalize)

    return test


def _half_test(max_examples):
    @pytest.mark.parametrize("config", CONFIGS, ids=repr)
    @property_settings(max_examples)
    @given(data=st.data())
    def test(config, data):
        problem, dtype, tiled = data.draw(half_cases(config))
        check_half_precision(config, problem, dtype, tiled)

    return test


test_finite_equal_to_reference_and_tiled_equals_dense = _finite_test(DEFAULT_EXAMPLES)
test_half_precision_is_float32_up_to_final_cast = _half_test(DEFAULT_EXAMPLES)
test_finite_equal_to_reference_and_tiled_equals_dense_slow = pytest.mark.slow(
    _finite_test(SLOW_EXAMPLES))
test_half_precision_is_float32_up_to_final_cast_slow = pytest.mark.slow(
    _half_test(SLOW_EXAMPLES))


def test_single_class_dcl_found_by_property_testing_stays_finite():
    # The case the property run found: batch 2, one class.
    y = np.random.default_rng(0).normal(size=(2, 2, 3)).astype("float32")
    for negatives in ("all", "cross"):
        config = Config("dcl", losses.DCL, negatives, labels=True)
        check_finite_reference_and_tiled(config, (y, np.array([1, 1], "int32"), 0.1, 1), True)
    test_case.assert_all_close(losses.dcl([1, 1], y), [0.0, 0.0])
