"""Precise BN and Adaptive BN: population statistics for every BN layer."""

import itertools
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import layers as kc_layers
from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.layers.ghost_batch_normalization import group_moments

ORDERS = ("one_sweep", "layer_by_layer")


def check_arguments(num_batches, order):
    """Raises ValueError for a bad `num_batches` or `order` (shared with the
    `PreciseBN` callback, which checks them when it is built)."""
    check_positive_int(num_batches, "num_batches", "an int >= 1", numpy_ints=True)
    if order not in ORDERS:
        raise ValueError(f"`order` must be one of {ORDERS}, got {order!r}.")


def _is_frozen(layer):
    """A BN layer that normalises with its moving statistics in training too:
    Keras' `trainable=False` BN, or a `FrozenBatchNormalization`."""
    return not layer.trainable or isinstance(layer, kc_layers.FrozenBatchNormalization)


class _Unit:
    """A layer whose `call` Precise BN wraps, and the BN layers whose
    statistics it sets from that layer's inputs: the layer itself for a BN
    layer; the per-domain `domain_layers` for a `SplitBatchNormalization`,
    which computes all domains in its own call without calling them."""

    def __init__(self, layer):
        self.layer = layer
        self.split = isinstance(layer, kc_layers.SplitBatchNormalization)
        self.targets = list(layer.domain_layers) if self.split else [layer]

    def input_statistics(self, inputs, kwargs):
        """Per target, per channel `(n_b, μ_b, σ²_b)` of this call's input
        (biased variance, two-pass, at least float32 as BN itself)."""
        x = tf.convert_to_tensor(inputs)
        x = tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)
        axis = self.layer.axis % x.shape.rank
        if self.split:
            ids = self.layer._domain_ids(kwargs.get("domain"), x)
        else:
            ids = tf.zeros(tf.shape(x)[:1], tf.int32)
        mean, variance, count = group_moments(
            x, ids, len(self.targets), axis, kwargs.get("mask")
        )
        if self.split or kwargs.get("mask") is not None:
            count = tf.cast(tf.round(tf.broadcast_to(count, tf.shape(mean))), tf.int64)
        else:
            # Exact beyond float32's 2**24 (e.g. large 3-D activations).
            per_channel = tf.size(x, out_type=tf.int64) // tf.shape(x, out_type=tf.int64)[axis]
            count = tf.fill(tf.shape(mean), per_channel)
        return [(count[i], mean[i], variance[i]) for i in range(len(self.targets))]


def _units(model):
    """The units whose statistics Precise BN re-estimates, and the names of
    the frozen BN layers it leaves alone; nested models and layers held
    inside other layers included."""
    everything = model._flatten_layers(include_self=True, recursive=True)
    splits = [
        layer for layer in everything if isinstance(layer, kc_layers.SplitBatchNormalization)
    ]
    inner = {id(domain) for split in splits for domain in split.domain_layers}
    units, frozen = [], []
    for layer in everything:
        if id(layer) in inner or not isinstance(
            layer, (keras.layers.BatchNormalization, kc_layers.SplitBatchNormalization)
        ):
            continue
        if _is_frozen(layer):
            frozen.append(layer.name)
        else:
            units.append(_Unit(layer))
    return units, frozen


class _Accumulator:
    """Merges per-batch (n_b, μ_b, σ²_b) into the population estimate, in
    float64:

        μ_pop = Σ n_b μ_b / Σ n_b
        σ²_pop = Σ n_b (σ²_b + μ_b²) / Σ n_b − μ_pop²

    computed in the equivalent running form of Chan et al. (merge counts,
    means and sums of squared deviations), which avoids cancelling two large
    terms when |μ| ≫ σ.
    """

    def __init__(self):
        self.count = None
        self.mean = None
        self.m2 = None

    def add(self, count, mean, variance):
        count = np.asarray(count, np.float64)
        mean = np.asarray(mean, np.float64)
        variance = np.asarray(variance, np.float64)
        if self.count is None:
            self.count = np.zeros_like(mean)
            self.mean = np.zeros_like(mean)
            self.m2 = np.zeros_like(mean)
        total = self.count + count
        safe_total = np.where(total > 0, total, 1.0)
        delta = np.where(count > 0, mean - self.mean, 0.0)
        self.mean = self.mean + delta * count / safe_total
        self.m2 = (
            self.m2
            + np.where(count > 0, count * variance, 0.0)
            + delta**2 * self.count * count / safe_total
        )
        self.count = total

    def result(self):
        if self.count is None or not np.all(self.count > 0):
            return None
        return {
            "mean": self.mean,
            "variance": np.maximum(self.m2 / self.count, 0.0),
            "count": self.count.astype(np.int64),
        }


class _Patched:
    """Replaces each unit layer's `call` by a wrapper (an instance attribute,
    which `Layer.__call__` looks up before the class method) that forces
    the layer's mode and records the statistics of its input; restores the
    original `call` on exit."""

    def __init__(self, units):
        self.units = units
        self.training = {}  # unit key -> bool; absent: inference mode
        self.capture = set()  # unit keys whose input statistics are wanted
        self.collected = None  # unit key -> per call, per target (n, μ, σ²)
        self.call_order = None  # unit keys, in the order of their first call
        self._saved = {}

    def __enter__(self):
        for key, unit in enumerate(self.units):
            self._saved[key] = unit.layer.__dict__.get("call")
            unit.layer.call = self._wrapper(key, unit, unit.layer.call)
        return self

    def __exit__(self, *exc_info):
        for key, unit in enumerate(self.units):
            if self._saved[key] is None:
                del unit.layer.call
            else:
                unit.layer.call = self._saved[key]
        return False

    def _wrapper(self, key, unit, original):
        def call(inputs, *args, **kwargs):
            kwargs["training"] = self.training.get(key, False)
            if self.call_order is not None and key not in self.call_order:
                self.call_order.append(key)
            if self.collected is not None and key in self.capture:
                self.collected.setdefault(str(key), []).append(
                    unit.input_statistics(inputs, kwargs)
                )
            return original(inputs, *args, **kwargs)

        return call


def _inputs_of(element):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
    return tf.nest.map_structure(tf.convert_to_tensor, x)


def _any_batch_size(tensor):
    shape = tensor.shape
    if shape.rank:
        shape = tf.TensorShape([None]).concatenate(shape[1:])
    return tf.TensorSpec(shape, tensor.dtype)


def _batches(dataset, num_batches):
    return itertools.islice(iter(dataset), num_batches)


def _sweep(model, patched, dataset, num_batches, training, capture):
    """One pass over the batches in which unit `key` runs in training mode
    iff `training[key]`. Returns ({(unit key, target index): population
    statistics or None} for the units in `capture`, number of batches)."""
    patched.training = training
    patched.capture = set(capture)

    @tf.function(reduce_retracing=True)
    def step(x):
        patched.collected = {}
        model(x, training=False)
        collected, patched.collected = patched.collected, None
        return collected

    accumulators = {
        (key, index): _Accumulator()
        for key in capture
        for index in range(len(patched.units[key].targets))
    }
    seen = 0
    for element in _batches(dataset, num_batches):
        x = _inputs_of(element)
        if not seen:
            # One trace for every batch size (the last batch is often smaller).
            step.get_concrete_function(tf.nest.map_structure(_any_batch_size, x))
        seen += 1
        for key, calls in step(x).items():
            for per_target in calls:
                for index, (count, mean, variance) in enumerate(per_target):
                    accumulators[int(key), index].add(
                        count.numpy(), mean.numpy(), variance.numpy()
                    )
    return {target: acc.result() for target, acc in accumulators.items()}, seen


def _call_order(model, patched, first):
    """The unit keys in the order the forward pass first calls them, read
    while tracing on batch `first` (nothing is computed)."""
    patched.training = {}
    patched.capture = set()
    patched.call_order = []
    tf.function(lambda x: model(x, training=False)).get_concrete_function(
        _inputs_of(first)
    )
    order, patched.call_order = patched.call_order, None
    return order


def _assign(layer, statistics):
    """Sets the moving statistics of BN `layer` (and, for Batch
    Renormalization, its moving stddev and renorm averages, so that they
    agree with them)."""
    mean, variance = statistics["mean"], statistics["variance"]
    layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
    layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    if getattr(layer, "renorm", False):
        stddev = np.sqrt(variance + layer.epsilon)
        layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))
        layer.renorm_mean.assign(mean.astype(layer.renorm_mean.dtype))
        layer.renorm_stddev.assign(stddev.astype(layer.renorm_stddev.dtype))


def _check_model_and_dataset(model, dataset, order, dataset_argument):
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model or layer, got {type(model).__name__}.")
    units, frozen = _units(model)
    if not units:
        detail = (
            f" (its BN layers {frozen} are frozen: trainable=False or "
            "FrozenBatchNormalization)"
            if frozen
            else ""
        )
        raise ValueError(
            f"`model` has no BatchNormalization layer whose statistics can be "
            f"re-estimated{detail}."
        )
    unbuilt = [
        target.name for unit in units for target in unit.targets if not target.built
    ]
    if unbuilt:
        raise ValueError(
            f"`model` must be built (call it on a batch first); the BN layers "
            f"{unbuilt} are not."
        )
    try:
        iter(dataset)
    except TypeError:
        raise ValueError(
            f"`{dataset_argument}` must be a tf.data.Dataset or an iterable of "
            f"batches, got {type(dataset).__name__}."
        ) from None
    if order == "layer_by_layer" and iter(dataset) is dataset:
        raise ValueError(
            f"`{dataset_argument}` must be re-iterable (a tf.data.Dataset or a "
            'list) for order="layer_by_layer", which reads it once per BN '
            "layer; got an iterator."
        )
    return units


def _estimate(model, units, dataset, num_batches, order):
    """Runs the sweeps; returns ({(unit key, target index): statistics},
    number of batches read). Leaves the last estimated layers' moving
    statistics set (layer by layer) or polluted (one sweep): the caller
    restores them."""
    with _Patched(units) as patched:
        if order == "one_sweep":
            keys = range(len(units))
            return _sweep(
                model, patched, dataset, num_batches, dict.fromkeys(keys, True), keys
            )
        first = next(iter(_batches(dataset, 1)), None)
        if first is None:
            return {}, 0
        estimates, seen = {}, num_batches
        for key in _call_order(model, patched, first):
            statistics, seen_now = _sweep(
                model, patched, dataset, num_batches, {key: True}, [key]
            )
            seen = min(seen, seen_now)
            estimates.update(statistics)
            # The units after `key` see it in inference mode, with these.
            for (_, index), value in statistics.items():
                if value is not None:
                    _assign(units[key].targets[index], value)
        return estimates, seen


def _precise_batch_norm(model, dataset, num_batches, order, dataset_argument):
    check_arguments(num_batches, order)
    units = _check_model_and_dataset(model, dataset, order, dataset_argument)
    variables = {}
    for unit in units:
        for layer in [unit.layer] + unit.targets:
            for variable in layer.non_trainable_variables:
                variables[id(variable)] = variable
    saved = [(variable, np.array(variable.numpy())) for variable in variables.values()]
    try:
        estimates, seen = _estimate(model, units, dataset, num_batches, order)
    finally:
        # Undo the moving-average updates of the training-mode passes.
        for variable, value in saved:
            variable.assign(value)
    if seen == 0:
        raise ValueError(f"`{dataset_argument}` yielded no batch.")
    if seen < num_batches:
        warnings.warn(
            f"precise_batch_norm: `{dataset_argument}` has {seen} batches, fewer than "
            f"num_batches={num_batches}; the statistics use those {seen}.",
            stacklevel=3,
        )
    result = {}
    for key, unit in enumerate(units):
        for index, layer in enumerate(unit.targets):
            statistics = estimates.get((key, index))
            name = layer.path or layer.name
            if statistics is None:
                warnings.warn(
                    f"precise_batch_norm: the BN layer {name!r} received no input "
                    "in the forward passes (for a split BN: no sample of its "
                    "domain); its statistics are unchanged.",
                    stacklevel=3,
                )
                continue
            _assign(layer, statistics)
            result[name] = statistics
    return result


@keras_contrast_export("keras_contrast.normalization.precise_batch_norm")
def precise_batch_norm(model, dataset, num_batches=200, order="one_sweep"):
    """Sets every BN layer's moving statistics to population statistics.

    Precise BN (docs/design.md §4): with the weights fixed, runs forward passes
    in which the BN layers normalise with batch statistics, and replaces
    each layer's exponential moving average, which can be far from the
    statistics of the current weights ("false overfitting"), by the
    population estimate over those batches,

        μ_pop = Σ n_b μ_b / Σ n_b,
        σ²_pop = Σ n_b (σ²_b + μ_b²) / Σ n_b − μ_pop²,

    where `n_b` is the number of values per channel in batch `b` (batch x
    spatial positions) and `σ²_b` the biased batch variance — the variance
    of all the values pooled, not the average of the batch variances. The
    sums are accumulated in float64.

    Every `keras.layers.BatchNormalization` (subclasses included) found in
    `model` is re-estimated, including those of nested models and those
    held inside other layers; the per-domain layers of a
    `SplitBatchNormalization` each get the statistics of their domain's
    samples, and a `GhostBatchNormalization` the statistics of its whole
    input (the population, not the ghost batches). Frozen layers
    (`trainable=False`, which Keras runs in inference mode, and
    `FrozenBatchNormalization`) keep their statistics and run in inference
    mode, as in training; to re-estimate one, set its `trainable` to True
    first. A mask that reaches a BN layer (from `Masking`, or an
    `Embedding(mask_zero=True)`) leaves the masked elements out of its
    statistics, read as Keras' BatchNormalization reads it: shaped like the
    layer's input without the last axis, whatever `axis` is. Only the
    BN layers run in training mode; every other layer (Dropout, ...) runs
    in inference mode, so the statistics are those of the activations
    inference sees (fvcore's `update_bn_stats` also keeps dropout on). No
    gradient is applied and no other variable changes; if an error occurs,
    the model is left as it was. The passes run in a `tf.function` on one
    device: call it outside `strategy.run` (under a `MirroredStrategy` the
    new statistics reach every replica).

    Orders:
        "one_sweep": every BN layer in training mode in one pass per batch,
            so each layer's input comes from upstream BN layers using batch
            statistics (as fvcore). One pass over `num_batches` batches.
        "layer_by_layer": layer k (in the order the forward pass calls them)
            is estimated with the layers before it already using their
            precise statistics in inference mode, i.e. exactly on the
            activations inference will see. One pass per BN layer, so
            `dataset` must be re-iterable; it should yield the same batches
            each time for the estimate to use one set of batches.

    Args:
        model: a built Keras model (functional, Sequential or subclassed) or
            layer.
        dataset: a `tf.data.Dataset` or an iterable of batches `x`, `(x,)`,
            `(x, y)` or `(x, y, sample_weight)` (only `x` is used). Fewer
            than `num_batches` batches: all of them are used, with a warning.
        num_batches: int >= 1. Batches to read per pass (docs/design.md §4: 100 to
            1000).
        order: `"one_sweep"` or `"layer_by_layer"`.

    Returns:
        A dict from each re-estimated layer's `path` to
        `{"mean": (C,) float64, "variance": (C,) float64, "count": (C,) int64}`
        (count: the values per channel pooled over all batches). A BN layer
        that the forward pass never calls is left unchanged, with a warning,
        and is not in the dict.

    Raises:
        ValueError: `num_batches` < 1, an unknown `order`, a `model` without a
            re-estimable BN layer or not built, an empty or non-iterable
            `dataset`, or an iterator with `order="layer_by_layer"`.

    Example:
    >>> model.fit(train_ds, epochs=90)
    >>> keras_contrast.normalization.precise_batch_norm(
    ...     model, train_ds, num_batches=200)
    >>> model.evaluate(val_ds)
    """
    return _precise_batch_norm(model, dataset, num_batches, order, "dataset")


@keras_contrast_export("keras_contrast.normalization.adapt_batch_norm")
def adapt_batch_norm(model, target_dataset, num_batches=200):
    """Adaptive BN: re-estimates the BN statistics on target-domain data.

    Test-time domain adaptation (Li et al., 2016; docs/design.md §4): a model
    trained on a source domain keeps its weights, and every BN layer's
    moving statistics are replaced by the population statistics of the
    target domain, which removes the per-channel shift and scale of the
    domain gap at each BN layer. It is `precise_batch_norm` (one sweep)
    on unlabelled target data; frozen BN layers (`trainable=False`,
    `FrozenBatchNormalization`) keep their statistics.

    Args:
        model: a built Keras model trained on the source domain.
        target_dataset: a `tf.data.Dataset` or an iterable of target-domain
            batches `x` (or `(x, ...)`; labels are not used).
        num_batches: int >= 1. Target batches to read.

    Returns:
        The per-layer statistics dict of `precise_batch_norm`.

    Example:
    >>> keras_contrast.normalization.adapt_batch_norm(model, target_ds)
    >>> model.evaluate(target_test_ds)
    """
    return _precise_batch_norm(
        model, target_dataset, num_batches, "one_sweep", "target_dataset"
    )
