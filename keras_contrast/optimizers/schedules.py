"""Learning-rate schedules and SimCLR's batch-size scaling rules."""

import math

import keras
from keras import ops

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number


@keras_contrast_export("keras_contrast.optimizers.WarmupCosineDecay")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to `end`.

    `lr(k) = start + (peak − start)·k/W` for k < W, then
    `end + (peak − end)·(1 + cos(π·(k − W)/(T − W)))/2` until T, `end`
    after (SimCLR and MoCo v3 train this way).

    Args:
        peak: float > 0, the learning rate at the end of warmup.
        warmup_steps: int >= 0, W.
        total_steps: int > warmup_steps, T.
        start: float >= 0, the learning rate at step 0.
        end: float >= 0, the final learning rate.

    Example:
    >>> schedule = WarmupCosineDecay(scaled_learning_rate(0.3, 4096), 10 * steps, 100 * steps)
    """

    def __init__(self, peak, warmup_steps, total_steps, start=0.0, end=0.0):
        if not (is_number(peak) and peak > 0):
            raise ValueError(f"`peak` must be a number > 0, got {peak!r}.")
        if not (is_int(warmup_steps) and warmup_steps >= 0):
            raise ValueError(f"`warmup_steps` must be an int >= 0, got {warmup_steps!r}.")
        if not (is_int(total_steps) and total_steps > warmup_steps):
            raise ValueError(
                f"`total_steps` must be an int > `warmup_steps`={warmup_steps}, "
                f"got {total_steps!r}."
            )
        for name, value in (("start", start), ("end", end)):
            if not (is_number(value) and value >= 0):
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.start = float(start)
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1)
        progress = ops.clip(
            (step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0
        )
        cosine = self.end + (self.peak - self.end) * (1.0 + ops.cos(math.pi * progress)) / 2.0
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "start": self.start,
            "end": self.end,
        }


@keras_contrast_export("keras_contrast.optimizers.scaled_learning_rate")
def scaled_learning_rate(base, batch_size, rule="linear"):
    """SimCLR's learning-rate scaling with the batch size (appendix B.1).

    Args:
        base: float > 0.
        batch_size: int > 0, the global batch size B.
        rule: `"linear"`: `base · B / 256` (SimCLR with LARS: base 0.3);
            `"sqrt"`: `base · √B` (SimCLR: base 0.075, better for small
            batches and long training).

    Returns:
        float.
    """
    if not (is_number(base) and base > 0):
        raise ValueError(f"`base` must be a number > 0, got {base!r}.")
    check_positive_int(batch_size, "batch_size")
    if rule == "linear":
        return base * batch_size / 256.0
    if rule == "sqrt":
        return base * math.sqrt(batch_size)
    raise ValueError(f'`rule` must be "linear" or "sqrt", got {rule!r}.')
