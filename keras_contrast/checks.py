"""Argument checks shared across the package."""

import numbers
import os
import tempfile

import numpy as np


def is_positive_int(value):
    """True for a Python int >= 1 (bools, floats and tensors are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_int(value):
    """True for a Python or NumPy integer; bools are not integers here."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def is_number(value):
    """True for a real Python or NumPy number that is not a bool or NaN
    (strings, None, bools and tensors are not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        return False
    return not np.isnan(value)


def check_writable_directory(path, name="path"):
    """Raises a ValueError naming `name` unless `path` is a folder that can
    be written, or could be created (its nearest existing parent is a
    writable folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike), got {path!r}.")
    path = os.fspath(path)
    if not path:
        raise ValueError(f"`{name}` must be a non-empty path, got {path!r}.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{name}` {path!r} exists and is not a folder.")
    target = os.path.abspath(path)
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        raise ValueError(f"`{name}` {path!r} lies under a file, not a folder.")
    try:  # root passes os.access checks: try for real, then clean up
        handle, probe = tempfile.mkstemp(dir=target, prefix=".keras_contrast_probe")
        os.close(handle)
        os.remove(probe)
    except OSError:
        raise ValueError(f"`{name}` {path!r} is not writable.") from None


def check_positive_int(value, name, expected="an int > 0", numpy_ints=False):
    """Raises a ValueError naming `name` unless `value` is an int >= 1.

    Bools, floats, strings and tensors are rejected; NumPy integers only
    with `numpy_ints=True`.

    Args:
        value: the argument as the user passed it.
        name: the argument's name, as the user wrote it.
        expected: how the message describes what is accepted
            (`"`{name}` must be {expected}, got {value!r}."`).
        numpy_ints: bool, also accept NumPy integers.

    Returns:
        `value`, unchanged.
    """
    valid = is_int(value) and value >= 1 if numpy_ints else is_positive_int(value)
    if not valid:
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    return value


def check_unit_interval(value, name, number=False):
    """Raises a ValueError naming `name` unless 0 <= `value` <= 1.

    Args:
        value: the argument as the user passed it (a momentum, a rate).
        name: the argument's name, as the user wrote it.
        number: bool. False: only the range is checked (`value` may be
            anything that compares with floats) and the message says
            "must lie in [0, 1]". True: `value` must also be a real number
            (`is_number`: not a bool, string or NaN) and the message says
            "must be a number in [0, 1]".

    Returns:
        `value`, unchanged.
    """
    if number:
        if not is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    elif not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}.")
    return value
