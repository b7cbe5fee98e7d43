"""Argument checks of the contrastive losses: hyperparameters, flags,
embeddings, class ids and sample weights (docs/checks.md says which checks
are static and which stay run-time asserts)."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast.checks import is_positive_int

NEGATIVES = ("all", "cross")


def _is_number(value):
    """A real Python or NumPy number; bools are not numbers here. (NaN is
    a number: `check_positive` rejects it with a ValueError.)"""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_tensor(value):
    return tf.is_tensor(value) or isinstance(value, (np.ndarray, keras.Variable))


def check_positive(name, value, allow_tensor=True):
    """Static checks of a hyperparameter that must be > 0 (`temperature`,
    `sigma`).

    A Python or NumPy number must be finite and > 0. With `allow_tensor`,
    a scalar integer or float tensor is accepted too; its value is checked
    here when it is known at trace time (an eager tensor, a constant) and
    by `positive_tensor` at run time otherwise. Booleans, strings and None
    are rejected (`True` is not the temperature 1).

    Raises:
        TypeError: `value` is not a number (or not a numeric scalar tensor).
        ValueError: `value` is not finite and > 0, or a tensor not scalar.
    """
    expected = "a finite number > 0" + (" or a scalar float tensor" if allow_tensor else "")
    if _is_number(value):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
        return
    if not allow_tensor:
        raise TypeError(f"`{name}` must be {expected}, got {value!r}.")
    static = _scalar_tensor_value(name, value, expected)
    if static is not None and not (np.isfinite(static) and static > 0):
        raise ValueError(f"`{name}` must be {expected}, got a tensor holding {static}.")


def _scalar_tensor_value(name, value, expected):
    """Checks that `value` is a real scalar tensor; returns its value when
    known at trace time (None for a variable, whose value may change)."""
    if not _is_tensor(value):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}.")
    dtype = tf.as_dtype(value.dtype)
    if not (dtype.is_floating or dtype.is_integer) or dtype.is_complex:
        raise TypeError(f"`{name}` must be {expected}, got a tensor of dtype {dtype.name}.")
    shape = tf.TensorShape(value.shape)
    if shape.rank:
        raise ValueError(f"`{name}` must be a scalar, got a tensor of shape {tuple(shape)}.")
    if isinstance(value, (tf.Variable, keras.Variable)):
        return None
    return tf.get_static_value(value)


def check_bias(bias):
    """Static checks of SigLIP's `bias`: a finite real number, or a scalar
    real tensor (a learnable bias); booleans, strings and None are not."""
    expected = "a finite number or a scalar float tensor"
    if _is_number(bias):
        if not math.isfinite(bias):
            raise ValueError(f"`bias` must be {expected}, got {bias!r}.")
        return
    static = _scalar_tensor_value("bias", bias, expected)
    if static is not None and not np.isfinite(static):
        raise ValueError(f"`bias` must be {expected}, got a tensor holding {static}.")


def finite_tensor(value, name, loss_name, dtype=tf.float32):
    """A checked `bias` as a scalar tensor of `dtype`; a value known only at
    run time is asserted finite (an assert XLA drops)."""
    check_bias(value)
    if _is_number(value):
        return tf.constant(value, dtype)
    tensor = tf.cast(value, dtype)
    if not isinstance(value, (tf.Variable, keras.Variable)) and (
            tf.get_static_value(value) is not None):
        return tensor
    check = tf.debugging.Assert(tf.math.is_finite(tensor),
                                [f"{loss_name}: `{name}` must be finite, got", tensor])
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def configured_number(name, value):
    """A hyperparameter stored in a loss's config: checked by
    `check_positive` (no tensors) and returned as a Python number."""
    check_positive(name, value, allow_tensor=False)
    return value if isinstance(value, (int, float)) else float(value)


def check_bool(name, value):
    """Raises a TypeError unless `value` is True or False (so that the
    string "False" is not taken as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_negatives(negatives):
    if not isinstance(negatives, str) or negatives not in NEGATIVES:
        raise ValueError(
            f"`negatives` must be one of {NEGATIVES}, got {negatives!r}."
        )


def check_tile_size(tile_size):
    """Raises a ValueError unless `tile_size` is None or an int >= 1."""
    if tile_size is None:
        return
    if not is_positive_int(tile_size):
        raise ValueError(
            f"`tile_size` must be None (dense logits) or an integer >= 1 (columns per "
            f"tile), got {tile_size!r}."
        )


_NO_NEGATIVES_ARGUMENT = object()


def check_options(temperature, gather, normalize, tile_size,
                  negatives=_NO_NEGATIVES_ARGUMENT):
    """The checks of the options the per-sample loss functions share
    (`negatives` only for the losses that take it)."""
    check_positive("temperature", temperature)
    if negatives is not _NO_NEGATIVES_ARGUMENT:
        check_negatives(negatives)
    check_tile_size(tile_size)
    check_bool("gather", gather)
    check_bool("normalize", normalize)


def check_embeddings(y_pred, num_views, loss_name, gather=True):
    """Static checks of the `(batch, views, dim)` layout and dtype."""
    shape = y_pred.shape
    if not (y_pred.dtype.is_floating or y_pred.dtype.is_integer) or y_pred.dtype.is_complex:
        raise TypeError(
            f"{loss_name}: `y_pred` must hold float embeddings, got dtype "
            f"{y_pred.dtype.name}."
        )
    if shape.rank != 3:
        raise ValueError(
            f"{loss_name}: `y_pred` must have rank 3 (batch, views, dim), got "
            f"shape {tuple(shape) if shape.rank is not None else 'unknown'}."
        )
    if shape[1] != num_views:
        raise ValueError(
            f"{loss_name}: `y_pred` must hold {num_views} views on axis 1 "
            f"(batch, {num_views}, dim), got shape {tuple(shape)}."
        )
    if shape[2] == 0:
        raise ValueError(
            f"{loss_name}: `y_pred` has embedding dimension 0 (shape "
            f"{tuple(shape)}); the embeddings need at least one dimension."
        )
    if shape[0] is not None and shape[0] < 2 and (not gather or distribute.num_replicas() == 1):
        # Under a strategy with the gather, one replica may hold 0 or 1 of
        # the global batch's samples (the last batch of an epoch).
        what = "a batch of one sample" if shape[0] == 1 else "an empty batch"
        raise ValueError(
            f"{loss_name}: {what} has no negatives; `y_pred` "
            f"has shape {tuple(shape)}. Use a batch of at least 2 samples."
        )


def _per_sample_tensor(value, argument, expected, loss_name):
    """`value` as a real (integer, float or bool) tensor, a `(batch, 1)`
    column squeezed to `(batch,)`; a TypeError saying `expected` otherwise."""
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{loss_name}: `{argument}` must be {expected}, got {value!r}."
        ) from error
    dtype = tensor.dtype
    if not (dtype.is_integer or dtype.is_floating or dtype.is_bool) or dtype.is_complex:
        raise TypeError(
            f"{loss_name}: `{argument}` must be {expected}, got a tensor of dtype "
            f"{dtype.name}."
        )
    if tensor.shape.rank == 2 and tensor.shape[1] == 1:
        tensor = tf.squeeze(tensor, axis=1)
    return tensor


def check_labels(y_true, y_pred, loss_name):
    """Returns class ids as int32 `(batch,)`, or None when `y_true` is None."""
    if y_true is None:
        return None
    expected = "None or integer class ids of shape (batch,)"
    y_true = _per_sample_tensor(y_true, "y_true", expected, loss_name)
    if y_true.shape.rank is not None and y_true.shape.rank != 1:
        raise ValueError(
            f"{loss_name}: `y_true` must be {expected}, got shape {tuple(y_true.shape)}."
        )
    batch, label_batch = y_pred.shape[0], y_true.shape[0]
    if batch is not None and label_batch is not None and batch != label_batch:
        raise ValueError(
            f"{loss_name}: `y_true` has {label_batch} labels but `y_pred` "
            f"holds {batch} samples."
        )
    if y_true.dtype.is_floating:
        y_true = tf.round(y_true)
    return tf.cast(y_true, tf.int32)


def check_sample_weight(sample_weight, values, loss_name):
    """`sample_weight` as a tensor of `values`' dtype: a scalar, or one
    weight per sample (`(batch,)` or `(batch, 1)`). A length that differs
    from the batch is a ValueError when both are static, a run-time assert
    (dropped by XLA) otherwise."""
    weight = _per_sample_tensor(
        sample_weight, "sample_weight",
        "None, a number or a float tensor of shape (batch,)", loss_name)
    if weight.shape.rank is not None and weight.shape.rank > 1:
        raise ValueError(
            f"{loss_name}: `sample_weight` must be a scalar or hold one weight per "
            f"sample, shape (batch,), got shape {tuple(weight.shape)}."
        )
    weight = tf.cast(weight, values.dtype)
    if weight.shape.rank == 0:
        return tf.broadcast_to(weight, tf.shape(values))
    batch, length = values.shape[0], weight.shape[0]
    if batch is not None and length is not None:
        if batch != length:
            raise ValueError(
                f"{loss_name}: `sample_weight` holds {length} weights but the batch "
                f"holds {batch} samples."
            )
        return weight
    check = tf.debugging.assert_equal(
        tf.shape(weight)[0], tf.shape(values)[0],
        message=f"{loss_name}: `sample_weight` must hold one weight per sample.",
    )
    with tf.control_dependencies([check]):
        return tf.identity(weight)


def positive_tensor(value, name, loss_name, dtype=tf.float32):
    """A hyperparameter (`temperature`, `sigma`) as a scalar tensor of
    `dtype`, checked statically by `check_positive` and, when its value is
    only known at run time, by an assert (which XLA drops)."""
    check_positive(name, value)
    static = _is_number(value) or (
        not isinstance(value, (tf.Variable, keras.Variable))
        and tf.get_static_value(value) is not None
    )
    # A Python float goes straight to `dtype` (tf.cast would round it to
    # float32 first).
    value = tf.constant(value, dtype) if _is_number(value) else tf.cast(value, dtype)
    if static:
        return value
    check = tf.debugging.Assert(
        tf.logical_and(value > 0, tf.math.is_finite(value)),
        [f"{loss_name}: `{name}` must be finite and > 0, got", value],
    )
    with tf.control_dependencies([check]):
        return tf.identity(value)
