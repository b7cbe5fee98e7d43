"""Bad arguments of the BatchNorm family: a ValueError naming the argument,
raised when the layer is made (or built, for `axis` against the input
rank), where Keras' own layer takes them or fails with an internal error."""

import numpy as np
import pytest

from keras_contrast import layers

MAKERS = {
    "batch": lambda **kw: layers.BatchNormalization(**kw),
    "ghost": lambda **kw: layers.GhostBatchNormalization(4, **kw),
    "split": lambda **kw: layers.SplitBatchNormalization(2, **kw),
    "frozen": lambda **kw: layers.FrozenBatchNormalization(**kw),
}
BAD_MOMENTA = [-0.1, 1.5, "0.9", True, False, None, float("nan"), [0.9]]
BAD_EPSILONS = [0.0, -1e-3, "1e-3", True, None, float("nan"), float("inf")]


@pytest.mark.parametrize("momentum", BAD_MOMENTA, ids=repr)
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_rejects_momentum_outside_zero_one_or_not_a_number(kind, momentum):
    with pytest.raises(ValueError, match="`momentum` must be a number in \\[0, 1\\]"):
        MAKERS[kind](momentum=momentum)


@pytest.mark.parametrize("momentum", BAD_MOMENTA, ids=repr)
def test_rejects_bad_renorm_momentum(momentum):
    with pytest.raises(ValueError, match="`renorm_momentum` must be a number in \\[0, 1\\]"):
        layers.BatchNormalization(renorm=True, renorm_momentum=momentum)


@pytest.mark.parametrize("epsilon", BAD_EPSILONS, ids=repr)
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_rejects_epsilon_not_a_finite_number_above_zero(kind, epsilon):
    with pytest.raises(ValueError, match="`epsilon` must be a finite number > 0"):
        MAKERS[kind](epsilon=epsilon)


@pytest.mark.parametrize("axis", ["1", 1.0, True, None, (1,)], ids=repr)
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_rejects_an_axis_that_is_not_an_int(kind, axis):
    with pytest.raises(ValueError, match="`axis` must be an int"):
        MAKERS[kind](axis=axis)


@pytest.mark.parametrize("axis", [3, -4, 7])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_rejects_an_axis_out_of_range_when_built(kind, axis):
    layer = MAKERS[kind](axis=axis)
    with pytest.raises(ValueError, match=f"`axis` = {axis} is out of range"):
        layer.build((None, 4, 3))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_rejects_an_axis_on_an_unknown_dimension(kind):
    layer = MAKERS[kind](axis=1)
    with pytest.raises(ValueError, match="`axis` = 1 .*must be known"):
        layer.build((None, None, 3))


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_accepts_the_edges_and_numpy_numbers(kind):
    for momentum in (0.0, 1.0, np.float32(0.9), 0):
        layer = MAKERS[kind](momentum=momentum, epsilon=np.float64(1e-5), axis=np.int64(-1))
        layer.build((None, 3))
    assert layer.momentum == pytest.approx(0.0)

