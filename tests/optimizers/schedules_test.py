"""WarmupCosineDecay and scaled_learning_rate against their formulas."""

import numpy as np
import pytest

from keras_contrast.optimizers import WarmupCosineDecay
from keras_contrast.optimizers import scaled_learning_rate


def reference(step, peak=2.0, warmup=10, total=110, start=0.1, end=0.01):
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return end + (peak - end) * (1 + np.cos(np.pi * progress)) / 2


@pytest.mark.parametrize("step", [0, 5, 10, 35, 60, 109, 110, 500])
def test_schedule_equals_formula(step):
    schedule = WarmupCosineDecay(2.0, 10, 110, start=0.1, end=0.01)
    np.testing.assert_allclose(float(schedule(step)), reference(step), rtol=1e-5, atol=1e-6)
    restored = WarmupCosineDecay.from_config(schedule.get_config())
    np.testing.assert_allclose(float(restored(step)), reference(step), rtol=1e-5, atol=1e-6)


def test_scaling_rules_and_errors():
    assert scaled_learning_rate(0.3, 4096) == pytest.approx(4.8)
    assert scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    for args, match in (((0.3, 0), "batch_size"), ((0.3, 256, "log"), "rule"), ((0.0, 256), "base")):
        with pytest.raises(ValueError, match=match):
            scaled_learning_rate(*args)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosineDecay(1.0, 10, 10)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((True, 0, 10), {}, "`peak` must be a number > 0, got True"),
        (("1.0", 0, 10), {}, "`peak` must be a number > 0"),
        ((1.0, 0, True), {}, "`total_steps` must be an int"),
        ((1.0, 0, 10.0), {}, "`total_steps` must be an int"),
        ((1.0, False, 10), {}, "`warmup_steps` must be an int >= 0"),
        ((1.0, 0, 10), {"start": "0"}, "`start` must be a number >= 0"),
        ((1.0, 0, 10), {"end": True}, "`end` must be a number >= 0, got True"),
        ((1.0, 0, 10), {"end": None}, "`end` must be a number >= 0, got None"),
    ],
)
def test_schedule_rejects_booleans_and_strings(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarmupCosineDecay(*args, **kwargs)


@pytest.mark.parametrize(
    "args,match",
    [((True, 256), "`base` must be a number > 0, got True"), (("0.3", 256), "`base`"),
     ((0.3, True), "`batch_size` must be an int > 0, got True"), ((0.3, 256.0), "`batch_size`")],
)
def test_scaled_learning_rate_rejects_booleans_and_strings(args, match):
    with pytest.raises(ValueError, match=match):
        scaled_learning_rate(*args)
