"""A per-call switch that reaches BatchNorm layers deep inside a model."""

import contextlib
import threading

import tensorflow as tf

_DOMAINS = threading.local()

_FLAG = []


def _flag():
    """The process-wide switch, a variable so that traced functions read its
    value when they run (a Python flag would be frozen into each trace)."""
    if not _FLAG:
        with tf.init_scope():
            _FLAG.append(
                tf.Variable(
                    False,
                    trainable=False,
                    name="keras_contrast_frozen_statistics",
                    # Set identically by every replica: keep the first.
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
            )
    return _FLAG[0]


@contextlib.contextmanager
def frozen_statistics():
    """Within this context, keras_contrast BatchNorm layers called in training
    mode normalise with batch statistics but leave their moving statistics
    untouched (DESIGN.md 1.3, the GAN fake-batch case).

    Keras passes only `training` and `mask` to nested layers, so a keyword
    argument cannot reach a BN layer inside a functional model or a
    converted `ResNet50`; this switch can. It is a variable assigned on
    entry and restored on exit, so it works eagerly, inside a custom
    `train_step`, and with functions traced outside the context. Layers
    that honour it: every `keras_contrast.layers` BatchNorm
    (`BatchNormalization`, `GhostBatchNormalization`,
    `SplitBatchNormalization`) and every BN of a model produced by
    `keras_contrast.normalization.convert_batch_norm`.

    Example:
    >>> with keras_contrast.layers.frozen_statistics():
    ...     fake_logits = discriminator(fake_images, training=True)
    """
    flag = _flag()
    previous = flag.read_value()
    flag.assign(True)
    try:
        yield
    finally:
        flag.assign(previous)


def statistics_frozen():
    """A scalar bool tensor: True inside `frozen_statistics()`."""
    return _flag().read_value()


def effective_momentum(momentum):
    """`momentum`, or 1 (no update: m·1 + batch·0 = m) inside the context."""
    return tf.where(statistics_frozen(), tf.constant(1.0), tf.constant(momentum, tf.float32))


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
