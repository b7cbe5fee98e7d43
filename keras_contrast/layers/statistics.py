"""A per-call switch that reaches BatchNorm layers deep inside a model."""

import contextlib
import threading

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export

_DOMAINS = threading.local()

_FLAG = []
# Contexts entered while tracing a function or inside a replica of a
# strategy, per thread (MirroredStrategy traces each replica in a thread).
_TRACED = threading.local()


def _flag():
    """The switch for contexts entered eagerly: a variable, so that functions
    traced outside the context read its value when they run (a Python flag
    would be frozen into each trace). Created on first use, lifted out of
    any function being traced."""
    if not _FLAG:
        with tf.init_scope():
            _FLAG.append(
                tf.Variable(
                    False,
                    trainable=False,
                    name="keras_contrast_frozen_statistics",
                    # Only ever assigned eagerly, outside replicas.
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
            )
    return _FLAG[0]


def create_switch():
    """Creates the `frozen_statistics()` variable if it does not exist yet.

    Layers call it from `build`, where creating variables is allowed: a
    function retraced later (not its first trace) may not create one.
    """
    _flag()


def _traced_depth():
    return getattr(_TRACED, "depth", 0)


def _in_replica_of_several():
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


@keras_contrast_export("keras_contrast.layers.frozen_statistics")
@contextlib.contextmanager
def frozen_statistics():
    """Within this context, keras_contrast BatchNorm layers called in training
    mode normalise with batch statistics but leave their moving statistics
    untouched (docs/design.md §4, the GAN fake-batch case).

    Keras passes only `training` and `mask` to nested layers, so a keyword
    argument cannot reach a BN layer inside a functional model or a
    converted `ResNet50`; this switch can. Entered eagerly (e.g. around
    `model.fit`), it sets a variable that every function reads when it runs,
    so functions traced before or outside the context behave right. Entered
    inside a traced function or a replica function (a custom `train_step`),
    it is part of that trace and holds for the layers called within it, on
    each replica separately. Layers that honour it: every
    `keras_contrast.layers` BatchNorm (`BatchNormalization`,
    `GhostBatchNormalization`, `SplitBatchNormalization`) and every BN of a
    model produced by `keras_contrast.normalization.convert_batch_norm`.

    Example:
    >>> with keras_contrast.layers.frozen_statistics():
    ...     fake_logits = discriminator(fake_images, training=True)
    """
    if tf.inside_function() or _in_replica_of_several():
        depth = _traced_depth()
        _TRACED.depth = depth + 1
        try:
            yield
        finally:
            _TRACED.depth = depth
        return
    flag = _flag()
    previous = bool(flag.numpy())
    flag.assign(True)
    try:
        yield
    finally:
        flag.assign(previous)


def statistics_frozen():
    """A scalar bool tensor: True inside `frozen_statistics()`."""
    if _traced_depth() > 0:
        return tf.constant(True)
    return _flag().read_value()


def effective_momentum(momentum, dtype=tf.float32):
    """`momentum`, or 1 (no update: m·1 + batch·0 = m) inside the context.

    Args:
        momentum: Python float.
        dtype: float dtype of the result, that of the statistics it
            multiplies (float64 under `keras.config.set_floatx("float64")`).
    """
    dtype = tf.as_dtype(dtype)
    return tf.where(
        statistics_frozen(), tf.constant(1.0, dtype), tf.constant(momentum, dtype)
    )


@keras_contrast_export("keras_contrast.layers.domain_scope")
@contextlib.contextmanager
def domain_scope(domain):
    """Makes `domain` the ids that `SplitBatchNormalization` layers called
    without `domain=` use, for the duration of the context.

    Unlike `frozen_statistics`, this scope is entered by the model's own
    `call` (see `keras_contrast.normalization.DomainRoutedModel`), so the
    ids are a tensor of the same trace and a Python-level scope is exact.

    Args:
        domain: int ids `(batch,)` or a scalar id.
    """
    stack = _DOMAINS.__dict__.setdefault("stack", [])
    stack.append(domain)
    try:
        yield
    finally:
        stack.pop()


def current_domain():
    """The ids of the innermost `domain_scope`, or None."""
    stack = getattr(_DOMAINS, "stack", None)
    return stack[-1] if stack else None
