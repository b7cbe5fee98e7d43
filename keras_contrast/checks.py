"""Argument checks shared across the package."""


def is_positive_int(value):
    """True for a Python int >= 1 (bools, floats and tensors are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
