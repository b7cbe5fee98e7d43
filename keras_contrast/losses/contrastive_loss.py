"""The base class of the contrastive losses: the constructor arguments, the
`__call__`, the reduction and the `get_config` they all share.

A loss is a pure per-sample function (`info_nce`, `dcl`, …; its math in
its own module) wrapped by a `ContrastiveLoss` subclass that adds only
its own arguments. `GlobalBatch` and `reduce_contrastive` are also
importable from here (they live in `global_batch`).
"""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_bool
from keras_contrast.losses._checks import check_tile_size
from keras_contrast.losses._checks import configured_number
from keras_contrast.losses.global_batch import GlobalBatch  # noqa: F401 (re-export)
from keras_contrast.losses.global_batch import reduce_contrastive

_SHARED_ARGS = """gather: bool. Gather embeddings from all replicas (with
            gradients) when called inside a distribution strategy.
        normalize: bool. L2-normalise the embeddings (cosine similarity).
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; docs/design.md §2.9).
        reduction: a Keras reduction, default `"sum_over_batch_size"`. The
            mean reductions divide by the global number of samples, so they
            stay exact when replicas hold different numbers of samples
            (docs/design.md §3).
        name: str.
        dtype: dtype of the returned loss. The loss is computed in float32
            (float16 and bfloat16 embeddings are cast up), or in float64
            for float64 embeddings or under `keras.config.floatx() ==
            "float64"`."""


_FUNCTION_OPTIONS = """gather: bool. Score local anchors against the gathered global batch.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None or int >= 1, columns per tile of the tiled path
            (docs/design.md §2.9).

    Returns:
        `(batch,)` float32 (float64 for float64 embeddings or under
        `floatx() == "float64"`)"""


def _with_shared_args(doc):
    return doc.replace("{shared_args}", _SHARED_ARGS) if doc else doc


def per_sample_loss(fn):
    """Decorates a per-sample loss function: its docstring's `{options}`
    line becomes the `gather`, `normalize`, `tile_size` and Returns
    paragraphs every such function shares."""
    fn.__doc__ = fn.__doc__.replace("{options}", _FUNCTION_OPTIONS)
    return fn


@keras_contrast_export("keras_contrast.losses.ContrastiveLoss")
class ContrastiveLoss(keras.losses.Loss):
    """Base class of the contrastive losses: `(batch, views, dim)` in,
    per-sample losses out, exact under a `tf.distribute` strategy.

    Like `keras.losses.LossFunctionWrapper`: a subclass passes its pure
    per-sample function `fn(y_true, y_pred, temperature, gather, normalize,
    tile_size, **options)` and its own arguments `options`; each option
    becomes an attribute and a `get_config` entry. A subclass docstring's
    `{shared_args}` line becomes the paragraphs of the arguments below
    from `gather` on.

    Argument checks: Python numbers and static shapes are checked when the
    loss is built or traced (a TypeError or ValueError naming the
    argument): `temperature` and `sigma` (numbers > 0, not booleans or
    strings), the flags (True or False), `y_pred` (float, rank 3, the
    views, a dimension > 0, at least 2 samples outside a strategy),
    `y_true` (numeric class ids, one per sample), `sample_weight` (a scalar
    or one weight per sample). What stays a run-time `tf.debugging` assert,
    which XLA drops:
        - a `temperature` or `sigma` tensor whose value is unknown when
          tracing (a variable, a learnable temperature) must be finite
          and > 0 (SigLIP's `bias` tensor: finite);
        - the global batch must hold at least 2 samples when its size is
          dynamic or gathered across replicas (without the assert, DCL and
          DCLW give 0, the others their finite value);
        - the embeddings must be finite;
        - a `sample_weight` of dynamic length must match the batch.

    Args:
        fn: the per-sample loss function.
        temperature: float > 0.
        options: dict, the further arguments of `fn`.
        {shared_args}
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__doc__ = _with_shared_args(cls.__doc__)

    def __init__(
        self,
        fn,
        temperature=0.1,
        options=None,
        *,
        gather=True,
        normalize=True,
        tile_size=None,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        # A configured temperature is a number (it is saved in the config);
        # a tensor temperature is passed at call time.
        self.temperature = configured_number("temperature", temperature)
        check_tile_size(tile_size)
        self.fn = fn
        self.gather = check_bool("gather", gather)
        self.normalize = check_bool("normalize", normalize)
        self._fn_kwargs = {"tile_size": tile_size, **(options or {})}
        for key, value in self._fn_kwargs.items():
            setattr(self, key, value)

    # Further `fn` options a model may pass as tensors at call time (SigLIP's
    # learnable `bias`); a subclass names them.
    call_overrides = ()

    def __call__(self, y_true, y_pred, sample_weight=None, temperature=None, **overrides):
        """Computes the reduced loss.

        Unlike `keras.losses.Loss.__call__`, accepts `y_true=None` (what
        `model.fit(x)` without labels passes) and an optional `temperature`
        tensor that overrides the configured one (a learnable temperature
        fed by a model's `compute_loss`); `temperature=None` uses the
        configured one. A subclass's `call_overrides` (SigLIP's `bias`)
        are passed the same way.
        """
        with tf.name_scope(self.name):
            if temperature is None:
                temperature = self.temperature
            values = self.contrast(y_true, y_pred, temperature, **overrides)
            values = reduce_contrastive(values, sample_weight, self.reduction,
                                        type(self).__name__)
            return tf.cast(values, self.dtype)

    def call(self, y_true, y_pred):
        return self.contrast(y_true, y_pred, self.temperature)

    def contrast(self, y_true, y_pred, temperature, **overrides):
        """Per-sample `(batch,)` losses at the given temperature (and the
        given `call_overrides`; None keeps the configured value)."""
        unknown = sorted(set(overrides) - set(self.call_overrides))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} takes no call argument {unknown}"
                + (f"; it takes {list(self.call_overrides)}." if self.call_overrides else "."))
        options = dict(self._fn_kwargs)
        options.update({k: v for k, v in overrides.items() if v is not None})
        return self.fn(
            y_true,
            y_pred,
            temperature=temperature,
            gather=self.gather,
            normalize=self.normalize,
            **options,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "temperature": self.temperature,
                "gather": self.gather,
                "normalize": self.normalize,
                **self._fn_kwargs,
            }
        )
        return config


ContrastiveLoss.__doc__ = _with_shared_args(ContrastiveLoss.__doc__)
