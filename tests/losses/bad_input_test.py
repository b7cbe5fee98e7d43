"""Bad input to the losses: a TypeError or ValueError naming the argument as
the user wrote it, raised when tracing wherever the value is a Python number
or a static shape; run-time asserts only for values known at run time."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from tests import test_case
from tests.losses import reference

LOSS_CLASSES = [losses.InfoNCE, losses.NTXent, losses.DCL, losses.DCLW, losses.CLIPLoss,
                losses.SigLIPLoss, losses.MoCoV3Loss]
FUNCTIONS = [losses.info_nce, losses.dcl, losses.dclw, losses.clip_loss, losses.siglip_loss,
             losses.mocov3_loss]
LABELLED = [losses.InfoNCE, losses.DCL, losses.CLIPLoss, losses.SigLIPLoss]


def views_of(loss):
    return 4 if loss in (losses.MoCoV3Loss, losses.mocov3_loss) else 2


def embeddings(batch=4, views=2, dim=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, views, dim)).astype("float32")


BAD_NUMBERS = [
    (True, TypeError), (False, TypeError), (np.bool_(True), TypeError), ("0.1", TypeError),
    (None, TypeError), ([0.1], TypeError), (0.0, ValueError), (-0.1, ValueError),
    (float("nan"), ValueError), (float("inf"), ValueError),
]


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value,error", BAD_NUMBERS, ids=repr)
def test_rejects_bad_temperature_in_constructor(make, value, error):
    with pytest.raises(error, match="`temperature` must be a finite number > 0"):
        make(temperature=value)


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value,error", [v for v in BAD_NUMBERS if v[0] is not None], ids=repr)
def test_rejects_bad_temperature_at_call_time(make, value, error):
    y = embeddings(views=views_of(make))
    with pytest.raises(error, match="`temperature`"):
        make()(None, y, temperature=value)


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("value,error", BAD_NUMBERS, ids=repr)
def test_functions_reject_bad_temperature(function, value, error):
    with pytest.raises(error, match="`temperature`"):
        function(None, embeddings(views=views_of(function)), temperature=value)


def test_rejects_boolean_temperature():
    # The case: True was taken as the temperature 1.
    with pytest.raises(TypeError, match="`temperature` must be a finite number > 0, got True"):
        losses.InfoNCE(temperature=True)


def test_rejects_tensor_temperature_in_constructor():
    # A configured temperature is saved in the config: a tensor goes to the call.
    with pytest.raises(TypeError, match="`temperature`"):
        losses.CLIPLoss(temperature=tf.constant(0.1))


def test_call_time_none_temperature_uses_the_configured_one():
    y = embeddings()
    test_case.assert_all_close(losses.InfoNCE(0.3)(None, y, temperature=None),
                               np.mean(reference.two_view(y, 0.3)))


def test_numpy_temperature_is_accepted_and_saved_as_a_float():
    loss = losses.DCL(np.float32(0.25))
    assert type(loss.get_config()["temperature"]) is float
    test_case.assert_all_close(loss(None, embeddings()),
                               np.mean(reference.two_view(embeddings(), 0.25, kind="dcl")))


@pytest.mark.parametrize("temperature", [tf.constant([0.1, 0.2]), tf.constant("0.1"),
                                         tf.constant(True)], ids=["vector", "string", "bool"])
def test_rejects_non_scalar_or_non_numeric_temperature_tensor(temperature):
    with pytest.raises((TypeError, ValueError), match="`temperature`"):
        losses.CLIPLoss()(None, embeddings(), temperature=temperature)


def test_run_time_temperature_tensor_is_asserted():
    loss = losses.CLIPLoss()

    @tf.function
    def compute(temperature):
        return loss(None, embeddings(), temperature=temperature)

    with pytest.raises(tf.errors.InvalidArgumentError, match="`temperature` must be finite"):
        compute(tf.constant(-0.1))
    test_case.assert_all_close(compute(tf.constant(0.2)),
                               np.mean(reference.clip(embeddings(), 0.2)))


@pytest.mark.parametrize("value,error", BAD_NUMBERS, ids=repr)
def test_rejects_bad_sigma(value, error):
    with pytest.raises(error, match="`sigma` must be a finite number > 0"):
        losses.DCLW(sigma=value)
    with pytest.raises(error, match="`sigma`"):
        losses.dclw(None, embeddings(), sigma=value)


def test_sigma_tensor_is_checked():
    y = embeddings()
    # Known when tracing: static errors.
    with pytest.raises(ValueError, match="`sigma`"):
        losses.dclw(None, y, sigma=tf.constant(-0.5))
    with pytest.raises(ValueError, match="`sigma`"):
        losses.dclw(None, y, sigma=tf.constant(0.0))
    with pytest.raises(TypeError, match="`sigma`"):
        losses.dclw(None, y, sigma=tf.constant(True))
    # Known at run time: the assert.
    with pytest.raises(tf.errors.InvalidArgumentError, match="`sigma` must be finite"):
        losses.dclw(None, y, sigma=tf.Variable(-0.5))
    # A valid tensor gives the float's value.
    test_case.assert_all_close(losses.dclw(None, y, sigma=tf.Variable(0.7)),
                               reference.two_view(y, 0.1, kind="dclw", sigma=0.7))


@pytest.mark.parametrize("argument", ["gather", "normalize"])
@pytest.mark.parametrize("value", ["False", 0, None])
def test_rejects_non_boolean_flags(argument, value):
    with pytest.raises(TypeError, match=f"`{argument}` must be True or False"):
        losses.InfoNCE(**{argument: value})
    with pytest.raises(TypeError, match=f"`{argument}` must be True or False"):
        losses.info_nce(None, embeddings(), **{argument: value})


def test_rejects_non_boolean_weight_stop_gradient():
    with pytest.raises(TypeError, match="`weight_stop_gradient` must be True or False"):
        losses.DCLW(weight_stop_gradient="yes")


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("length", [1, 3, 5])
def test_rejects_sample_weight_of_another_length(make, length):
    y = embeddings(4, views_of(make))
    with pytest.raises(ValueError, match="`sample_weight` holds .* weights but the batch holds 4"):
        make()(None, y, sample_weight=np.ones(length, "float32"))


def test_sample_weight_of_another_dynamic_length_is_asserted():
    loss = losses.InfoNCE()

    @tf.function(input_signature=[tf.TensorSpec((None, 2, 3)), tf.TensorSpec((None,))])
    def compute(y, weight):
        return loss(None, y, sample_weight=weight)

    with pytest.raises(tf.errors.InvalidArgumentError, match="`sample_weight`"):
        compute(embeddings(4), tf.ones(3))


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum"])
def test_scalar_and_column_sample_weights(reduction):
    y = embeddings(5)
    per_sample = reference.two_view(y, 0.1)
    loss = losses.InfoNCE(reduction=reduction)
    expected = {"sum_over_batch_size": 2.0 * np.mean(per_sample),
                "mean_with_sample_weight": np.mean(per_sample),
                "sum": 2.0 * np.sum(per_sample)}[reduction]
    test_case.assert_all_close(loss(None, y, sample_weight=2.0), expected)
    test_case.assert_all_close(loss(None, y, sample_weight=np.full((5, 1), 2.0)), expected)
    with pytest.raises(ValueError, match="`sample_weight`"):
        loss(None, y, sample_weight=np.ones((5, 2)))
    with pytest.raises(TypeError, match="`sample_weight`"):
        loss(None, y, sample_weight=np.array(["1"] * 5))


@pytest.mark.parametrize("make", LABELLED, ids=lambda c: c.__name__)
def test_rejects_string_labels(make):
    with pytest.raises(TypeError, match="`y_true` must be None or integer class ids"):
        make()(np.array(["a", "b", "a", "c"]), embeddings())
    with pytest.raises(TypeError, match="`y_true`"):
        make()(tf.constant(["a", "b", "a", "c"]), embeddings())


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
def test_rejects_embeddings_of_dimension_zero(make):
    with pytest.raises(ValueError, match="`y_pred` has embedding dimension 0"):
        make()(None, np.zeros((4, views_of(make), 0), "float32"))


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
def test_rejects_non_numeric_embeddings(make):
    with pytest.raises(TypeError, match="`y_pred` must hold float embeddings"):
        make()(None, tf.fill((4, views_of(make), 3), "x"))


@pytest.mark.parametrize("make", LOSS_CLASSES, ids=lambda c: c.__name__)
def test_rejects_an_empty_batch_outside_a_strategy(make):
    with pytest.raises(ValueError, match="an empty batch has no negatives"):
        make()(None, np.zeros((0, views_of(make), 3), "float32"))


def test_rejects_bad_negatives_type():
    with pytest.raises(ValueError, match="`negatives`"):
        losses.DCL(negatives=["all"])
