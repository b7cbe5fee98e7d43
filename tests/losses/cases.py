"""The losses under test, with their NumPy references, for parameterized tests."""

import dataclasses
from typing import Callable

import pytest

from keras_contrast import losses
from tests.losses import reference


@dataclasses.dataclass(frozen=True)
class LossCase:
    name: str
    make: Callable  # () -> keras_contrast loss object
    reference: Callable  # float64 y -> (batch,) per-sample losses
    views: int = 2

    def __repr__(self):
        return self.name


CASES = [
    LossCase(
        "infonce_all",
        lambda: losses.InfoNCE(0.1, negatives="all"),
        lambda y: reference.two_view(y, 0.1, "all", "infonce"),
    ),
    LossCase(
        "infonce_cross",
        lambda: losses.InfoNCE(0.1, negatives="cross"),
        lambda y: reference.two_view(y, 0.1, "cross", "infonce"),
    ),
    LossCase(
        "dcl_all",
        lambda: losses.DCL(0.1, negatives="all"),
        lambda y: reference.two_view(y, 0.1, "all", "dcl"),
    ),
    LossCase(
        "dcl_cross",
        lambda: losses.DCL(0.2, negatives="cross"),
        lambda y: reference.two_view(y, 0.2, "cross", "dcl"),
    ),
    LossCase(
        "dclw_all",
        lambda: losses.DCLW(0.1, sigma=0.5),
        lambda y: reference.two_view(y, 0.1, "all", "dclw", sigma=0.5),
    ),
    LossCase(
        "dclw_cross",
        lambda: losses.DCLW(0.3, sigma=0.7, negatives="cross"),
        lambda y: reference.two_view(y, 0.3, "cross", "dclw", sigma=0.7),
    ),
    LossCase(
        "clip",
        lambda: losses.CLIPLoss(0.07),
        lambda y: reference.clip(y, 0.07),
    ),
    LossCase(
        "siglip",
        lambda: losses.SigLIPLoss(0.2, bias=-2.0),
        lambda y: reference.siglip(y, 0.2, -2.0),
    ),
    LossCase(
        "mocov3",
        lambda: losses.MoCoV3Loss(0.2),
        lambda y: reference.mocov3(y, 0.2),
        views=4,
    ),
]

# One loss per family runs its multi-replica cases in `make test`; the rest
# are `slow` (the loss values themselves are checked for every case; SigLIP's
# replica cases, with pair ids and uneven batches, are in siglip_test.py).
FAST = ("infonce_all", "dclw_all", "clip", "mocov3")


def fast_cases():
    """`CASES` with every case outside `FAST` marked `slow`."""
    return [case if case.name in FAST else pytest.param(case, marks=pytest.mark.slow)
            for case in CASES]
