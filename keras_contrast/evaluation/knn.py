"""k-nearest-neighbour evaluation of an encoder (cosine, weighted votes).

Evaluation streams: the splits may be `tf.data` datasets of `(x, y)`
batches, encoded batch by batch. Only the memory bank's features are kept
(float32 or float16); the queries pass through the encoder `chunk_size` at
a time and are scored against the bank `bank_chunk_size` rows at a time,
the running top-k of each query merged with each bank chunk's top-k, so
the similarities in memory are `chunk_size x bank_chunk_size` floats.
"""

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_number

# Bank rows scored at once when the bank streams from a dataset and
# `bank_chunk_size` is None: 1024 queries x 16384 rows = 64 MiB of
# similarities. Much smaller chunks cost time with k = 200 (each chunk's
# top-k and merge: 4096 rows take twice as long as one whole 100k bank).
DEFAULT_BANK_CHUNK_SIZE = 16384
FEATURE_DTYPES = ("float32", "float16")


def _as_arrays(data, name="data"):
    """(x, y) NumPy arrays from an `(x, y)` tuple: at least one sample, as
    many labels as samples, integer labels >= 0."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"`{name}` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches, "
            f"got {type(data).__name__}."
        )
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"`{name}` holds no samples (x has shape {x.shape}).")
    y = check_labels(y, len(x), f"the labels of `{name}`")
    return x, y


def check_dataset(data, name):
    """Raises a ValueError naming `name` unless `data` is a finite
    `tf.data.Dataset` whose elements are `(x, y)` batches of two tensors."""
    spec = data.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(part, tf.TensorSpec) for part in spec)):
        raise ValueError(
            f"`{name}` must be a dataset of (x, y) batches (a tuple of two dense tensors), "
            f"got elements {spec}."
        )
    x_spec, y_spec = spec
    if x_spec.shape.rank == 0 or y_spec.shape.rank == 0:
        raise ValueError(
            f"`{name}` yields single samples (x has shape {x_spec.shape}, y {y_spec.shape}); "
            f"it must yield (x, y) batches: batch it, e.g. `{name}.batch(256)`."
        )
    cardinality = int(data.cardinality())
    if cardinality == 0:
        raise ValueError(f"`{name}` is an empty dataset; it needs at least one sample.")
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            f"`{name}` is an infinite dataset (e.g. `.repeat()`); evaluation reads it once: "
            "pass a finite dataset (e.g. `.take(steps)`)."
        )


class _Split:
    """An evaluation split, checked when built: `(x, y)` arrays (`arrays`
    set; iterated in slices of `batch_size`) or a dataset of `(x, y)`
    batches (iterated as it batches; labels checked batch by batch).
    Iterating yields `(x, labels)` with int64 labels; an empty dataset
    raises when it ends."""

    def __init__(self, data, name, batch_size):
        self.name = name
        self.batch_size = batch_size
        if isinstance(data, tf.data.Dataset):
            check_dataset(data, name)
            self.dataset, self.arrays = data, None
        else:
            self.dataset, self.arrays = None, _as_arrays(data, name)

    def __iter__(self):
        if self.arrays is not None:
            x, y = self.arrays
            for start in range(0, len(x), self.batch_size):
                yield x[start : start + self.batch_size], y[start : start + self.batch_size]
            return
        count = 0
        for x, y in self.dataset:
            if x.shape[0] == 0:
                continue
            labels = check_labels(y.numpy(), int(x.shape[0]), f"the labels of `{self.name}`")
            count += len(labels)
            yield x, labels
        if not count:
            raise ValueError(f"`{self.name}` is an empty dataset; it needs at least one sample.")


def check_labels(labels, count, name, num_classes=None):
    """`labels` as a flat int64 array of `count` class ids in
    `[0, num_classes)` (`num_classes` None: any id >= 0)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" and not (
        labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels))
    ):
        raise ValueError(f"{name} must be integer class ids, got dtype {labels.dtype}.")
    labels = labels.reshape(-1)
    if len(labels) != count:
        raise ValueError(f"{name}: {len(labels)} labels for {count} samples; one label per "
                         "sample expected.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be class ids >= 0, got {labels.min()}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"{name} must be class ids < `num_classes`={num_classes}, got {labels.max()}."
        )
    return labels.astype(np.int64)


def check_feature_dtype(value, name):
    """`value` ("float32", "float16", a NumPy or TensorFlow dtype) as the
    NumPy dtype name, or a ValueError naming `name`."""
    try:
        dtype = tf.as_dtype(value).name
    except (TypeError, ValueError):
        dtype = None
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"`{name}` must be 'float32' or 'float16', got {value!r}.")
    return dtype


def check_encoder(encoder):
    """Raises a ValueError unless `encoder` is callable or None."""
    if encoder is not None and not callable(encoder):
        raise ValueError(f"`encoder` must be a Keras model, a callable or None, got {encoder!r}.")


def encode(encoder, x):
    """float32 `(b, d)` NumPy features of one batch `x`: `encoder(x,
    training=False)` flattened, or the flattened inputs for None."""
    if encoder is None:
        x = np.asarray(x)
        return x.reshape(len(x), -1).astype("float32")
    features = np.asarray(encoder(x, training=False)).astype("float32")
    return features.reshape(len(features), -1)


@keras_contrast_export("keras_contrast.evaluation.extract_features")
def extract_features(encoder, x, batch_size=256, feature_dtype="float32"):
    """Features of `encoder` in inference mode, computed batch by batch.

    Args:
        encoder: a Keras model or callable `encoder(x, training=False)`, or
            None for the flattened inputs (e.g. raw pixels).
        x: an array of inputs (encoded `batch_size` at a time), or a
            `tf.data.Dataset` of input batches, or of `(x, ...)` tuples
            whose first part is the input batch (labels are ignored); it is
            read once, a batch at a time.
        batch_size: int > 0, batch size for arrays.
        feature_dtype: "float32" or "float16", the dtype of the result.

    Returns:
        `(n, d)` NumPy array of `feature_dtype`.

    Example:
    >>> features = extract_features(model.encoder, x_test)
    >>> features = extract_features(None, dataset.map(lambda x, y: x))
    """
    check_positive_int(batch_size, "batch_size")
    check_encoder(encoder)
    feature_dtype = check_feature_dtype(feature_dtype, "feature_dtype")
    if not isinstance(x, tf.data.Dataset):
        x = np.asarray(x)
        if encoder is None:
            return x.reshape(len(x), -1).astype(feature_dtype)
        features = [
            np.asarray(encoder(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
        features = np.concatenate(features).astype(feature_dtype)
        return features.reshape(len(features), -1)
    spec = x.element_spec
    if isinstance(spec, tuple) and spec:
        spec = spec[0]
        x = x.map(lambda *parts: parts[0])
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank == 0:
        raise ValueError(f"`x` must be a dataset of input batches (dense tensors with a batch "
                         f"dimension), or of (x, ...) tuples of them; got elements {spec}.")
    if int(x.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError("`x` is an infinite dataset (e.g. `.repeat()`); pass a finite one.")
    features = [encode(encoder, batch).astype(feature_dtype) for batch in x]
    if not features:
        raise ValueError("`x` is an empty dataset; it needs at least one batch.")
    return np.concatenate(features)


def check_vote_arguments(k, temperature):
    """Static checks of the k-NN `k` and vote `temperature`."""
    check_positive_int(k, "k")
    if not (is_number(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.")


def check_chunk_size(value, name):
    """`value`, unless it is neither None nor an int > 0."""
    if value is not None:
        check_positive_int(value, name, "an int > 0 or None")
    return value


def _features(features, name):
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (samples, dim), got shape "
                         f"{features.shape}.")
    if features.shape[1] == 0:
        raise ValueError(f"`{name}` has dimension 0; it needs at least one feature.")
    if features.dtype.kind not in "iuf":
        raise ValueError(f"`{name}` must be numbers, got dtype {features.dtype}.")
    return features


def _unit_rows(features):
    """`features` as float32 rows of unit L2 norm.

    `tf.math.l2_normalize` multiplies by an approximate `rsqrt` whose
    vectorised and scalar paths differ on some CPUs (AVX-512: a one-hot row
    became 0.9999999 or 1 depending on its position), so equal rows could
    get unequal similarities and ties would depend on where a row sits in
    the bank. Dividing by the correctly rounded `sqrt` (same epsilon, 1e-12)
    gives every equal row the same values.
    """
    features = tf.cast(tf.constant(features), tf.float32)
    squares = tf.reduce_sum(tf.square(features), axis=1, keepdims=True)
    return features / tf.sqrt(tf.maximum(squares, 1e-12))


def _top_k(queries, bank_chunks, k):
    """The `k` largest cosine similarities of each query row over all
    bank chunks, and their labels, in descending order.

    Merging a running top-k with each chunk's top-k gives the top-k of the
    whole row. `tf.math.top_k` puts the lower index first among equal
    values, and the running entries (earlier bank rows) come first in each
    merge, so ties go to the lower bank index, as in one `top_k` over the
    whole bank: with equal similarities the chunked and unchunked results
    are the same.

    Args:
        queries: `(q, d)` float32 L2-normalised tensor.
        bank_chunks: iterable of `(features, labels)`: `(c, d)` normalised
            float32/float16 tensors and their `(c,)` int32 labels.
        k: int > 0, at most the bank's size.

    Returns:
        `(values, labels)`: `(q, k)` float32 and int32 tensors.
    """
    values = labels = None
    for features, chunk_labels in bank_chunks:
        similarity = tf.matmul(queries, tf.cast(features, tf.float32), transpose_b=True)
        top, index = tf.math.top_k(similarity, k=min(k, int(similarity.shape[1])))
        # Freed now, not when the next chunk's similarities replace it:
        # one chunk of similarities in memory at a time.
        del similarity
        top_labels = tf.gather(chunk_labels, index)
        if values is not None:
            top = tf.concat([values, top], axis=1)
            top_labels = tf.concat([labels, top_labels], axis=1)
            top, index = tf.math.top_k(top, k=min(k, int(top.shape[1])))
            top_labels = tf.gather(top_labels, index, batch_dims=1)
        values, labels = top, top_labels
    return values, labels


def _votes(queries, bank_chunks, k, temperature, num_classes):
    """`(q, num_classes)` float32 NumPy vote sums of normalised `queries`."""
    top, labels = _top_k(queries, bank_chunks, k)
    weights = tf.exp(top / temperature)[..., None]
    votes = tf.one_hot(labels, num_classes) * weights
    return tf.reduce_sum(votes, axis=1).numpy()


@keras_contrast_export("keras_contrast.evaluation.knn_predict")
def knn_predict(train_features, train_labels, test_features, k=200, temperature=0.1,
                num_classes=None, chunk_size=1024, bank_chunk_size=None):
    """Class scores of a weighted k-NN classifier on cosine similarity.

    The protocol of InstDisc (Wu et al., 2018) used by SimCLR/MoCo kNN
    monitors: features are L2-normalised, each test sample takes its `k`
    most similar training samples, and neighbour j votes for its class with
    weight `exp(s_j / temperature)`. Among equal similarities the lower
    training index is taken first, whatever `bank_chunk_size`.

    Args:
        train_features: `(n, d)` array (the memory bank).
        train_labels: `(n,)` int class ids in `[0, num_classes)`.
        test_features: `(m, d)` array (the same `d`).
        k: int > 0 (capped at n).
        temperature: float > 0.
        num_classes: int > 0; default `max(train_labels) + 1`.
        chunk_size: int > 0, test samples scored at once.
        bank_chunk_size: int > 0 or None, training samples scored at once:
            the top-k is merged over bank chunks, so at most
            `chunk_size x bank_chunk_size` similarities are held. None: the
            whole bank at once (`chunk_size x n`). The scores agree across
            chunk sizes to float32 rounding of the similarities (the matrix
            product's summation order depends on its shape).

    Returns:
        `(m, num_classes)` float32 vote sums; `argmax` is the prediction.

    Example:
    >>> scores = knn_predict(bank, bank_labels, queries, k=20, bank_chunk_size=4096)
    >>> predictions = scores.argmax(axis=1)
    """
    check_vote_arguments(k, temperature)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes", "an int > 0 or None")
    check_positive_int(chunk_size, "chunk_size")
    check_chunk_size(bank_chunk_size, "bank_chunk_size")
    train_features = _features(train_features, "train_features")
    test_features = _features(test_features, "test_features")
    if len(train_features) == 0:
        raise ValueError("`train_features` is empty: the k-NN bank needs at least one sample.")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"`train_features` (the bank) has dimension {train_features.shape[1]} but "
            f"`test_features` {test_features.shape[1]}; both must come from the same encoder."
        )
    labels = check_labels(train_labels, len(train_features), "`train_labels`", num_classes)
    num_classes = num_classes or int(labels.max()) + 1
    train = _unit_rows(train_features)
    labels = tf.constant(labels, tf.int32)
    n = int(train.shape[0])
    k = min(k, n)
    if bank_chunk_size is None or bank_chunk_size >= n:
        bank_chunks = [(train, labels)]
    else:
        bank_chunks = [(train[start : start + bank_chunk_size],
                        labels[start : start + bank_chunk_size])
                       for start in range(0, n, bank_chunk_size)]
    test = _unit_rows(test_features)
    scores = [_votes(test[start : start + chunk_size], bank_chunks, k, temperature, num_classes)
              for start in range(0, int(test.shape[0]), chunk_size)]
    return np.concatenate(scores) if scores else np.zeros((0, num_classes), "float32")


class _Bank:
    """The normalised features and labels of a split, built batch by batch
    into chunks of `chunk_rows` rows (None: one chunk) of `dtype`."""

    def __init__(self, chunk_rows, dtype):
        self.chunk_rows = chunk_rows
        self.dtype = dtype
        self.chunks = []
        self.size = 0
        self.dimension = None
        self.max_label = -1
        self._pending, self._pending_labels, self._pending_rows = [], [], 0

    def add(self, features, labels):
        features = tf.cast(_unit_rows(features), self.dtype)
        self._pending.append(features)
        self._pending_labels.append(tf.constant(labels, tf.int32))
        self._pending_rows += len(labels)
        self.size += len(labels)
        self.max_label = max(self.max_label, int(labels.max()))
        while self.chunk_rows is not None and self._pending_rows >= self.chunk_rows:
            self._cut(self.chunk_rows)

    def finish(self):
        if self._pending_rows:
            self._cut(self._pending_rows)
        return self

    def _cut(self, rows):
        features = tf.concat(self._pending, axis=0)
        labels = tf.concat(self._pending_labels, axis=0)
        self.chunks.append((features[:rows], labels[:rows]))
        rest = self._pending_rows - rows
        self._pending = [features[rows:]] if rest else []
        self._pending_labels = [labels[rows:]] if rest else []
        self._pending_rows = rest


def _feature_batches(encoder, split, kind):
    """`(features, labels)` of each batch of `split`, features checked to
    have one dimension > 0 throughout."""
    dimension = None
    for x, labels in split:
        features = encode(encoder, x)
        if features.shape[1] == 0:
            raise ValueError(f"The features of `{split.name}` have dimension 0; the encoder "
                             "must give at least one feature.")
        if dimension is None:
            dimension = features.shape[1]
        elif features.shape[1] != dimension:
            raise ValueError(f"The {kind} features of `{split.name}` change dimension from "
                             f"{dimension} to {features.shape[1]} between batches.")
        yield features, labels


def _chunks_of(batches, rows):
    """Regroups `(features, labels)` batches into chunks of `rows` rows
    (the last one shorter)."""
    pending, pending_labels, count = [], [], 0
    for features, labels in batches:
        pending.append(features)
        pending_labels.append(labels)
        count += len(labels)
        while count >= rows:
            features, labels = np.concatenate(pending), np.concatenate(pending_labels)
            yield features[:rows], labels[:rows]
            pending, pending_labels = [features[rows:]], [labels[rows:]]
            count -= rows
    if count:
        yield np.concatenate(pending), np.concatenate(pending_labels)


def build_bank(encoder, split, chunk_rows, dtype):
    """The k-NN bank of `split` (a `_Split`), encoded batch by batch."""
    bank = _Bank(chunk_rows, dtype)
    for features, labels in _feature_batches(encoder, split, "bank"):
        if bank.dimension is None:
            bank.dimension = features.shape[1]
        bank.add(features, labels)
    return bank.finish()


def streaming_knn_accuracy(encoder, bank, split, k, temperature, chunk_size):
    """Accuracy on `split` (a `_Split`) of the k-NN classifier of `bank`,
    the queries encoded batch by batch and scored `chunk_size` at a time."""
    k = min(k, bank.size)
    num_classes = bank.max_label + 1
    correct = total = 0
    batches = _feature_batches(encoder, split, "query")
    for features, labels in _chunks_of(batches, chunk_size):
        if features.shape[1] != bank.dimension:
            raise ValueError(
                f"The features of `{split.name}` have dimension {features.shape[1]} but the "
                f"bank's {bank.dimension}; both splits must pass through the same encoder "
                "(same input shape)."
            )
        queries = _unit_rows(features)
        votes = _votes(queries, bank.chunks, k, temperature, num_classes)
        correct += int(np.sum(np.argmax(votes, axis=1) == labels))
        total += len(labels)
    return correct / total


@keras_contrast_export("keras_contrast.evaluation.knn_accuracy")
def knn_accuracy(encoder, train, test, k=200, temperature=0.1, batch_size=256,
                 bank_dtype="float32", bank_chunk_size=None, chunk_size=1024):
    """Accuracy of the weighted cosine k-NN classifier on `encoder`'s
    features (see `knn_predict`).

    Datasets stream: `train` (the memory bank) is encoded batch by batch
    and only its normalised features are kept, in `bank_dtype`; `test` is
    encoded batch by batch and scored `chunk_size` queries at a time
    against `bank_chunk_size` bank rows at a time, so neither its inputs
    nor its features are ever all in memory. Arrays with the default
    settings are evaluated as a whole, exactly as before streaming existed.

    Args:
        encoder: a Keras model (run in inference mode), or None to use the
            flattened inputs (the raw-pixel baseline).
        train: `(x, y)` arrays or a finite `tf.data.Dataset` of `(x, y)`
            batches (read once, as it batches).
        test: the same for the evaluation split. Labels are int class ids
            >= 0, one per sample.
        k: neighbours (SimCLR/MoCo monitors: 200).
        temperature: vote temperature (0.1).
        batch_size: batch size of feature extraction from arrays.
        bank_dtype: "float32" or "float16", the dtype the bank's normalised
            features are kept in (similarities are computed in float32).
        bank_chunk_size: int > 0 or None, bank rows scored at once (bounds
            the similarities to `chunk_size x bank_chunk_size`). None: the
            whole bank when `train` is arrays, 16384 rows when it is a
            dataset.
        chunk_size: int > 0, queries scored at once.

    Returns:
        float, accuracy in [0, 1].

    Example:
    >>> knn_accuracy(model.encoder, (x_train, y_train), (x_test, y_test))
    >>> train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(512)
    >>> knn_accuracy(model.encoder, train, test_dataset, bank_dtype="float16")
    """
    check_vote_arguments(k, temperature)
    check_positive_int(batch_size, "batch_size")
    check_positive_int(chunk_size, "chunk_size")
    check_encoder(encoder)
    bank_dtype = check_feature_dtype(bank_dtype, "bank_dtype")
    check_chunk_size(bank_chunk_size, "bank_chunk_size")
    train_split = _Split(train, "train", batch_size)
    test_split = _Split(test, "test", batch_size)
    if (train_split.arrays is not None and test_split.arrays is not None
            and bank_chunk_size is None and bank_dtype == "float32"):
        # Arrays, default settings: the computation of earlier releases.
        (x_train, y_train), (x_test, y_test) = train_split.arrays, test_split.arrays
        scores = knn_predict(
            extract_features(encoder, x_train, batch_size),
            y_train,
            extract_features(encoder, x_test, batch_size),
            k=k,
            temperature=temperature,
            num_classes=int(max(y_train.max(), y_test.max())) + 1,
            chunk_size=chunk_size,
        )
        return float(np.mean(np.argmax(scores, axis=1) == y_test.reshape(-1)))
    if bank_chunk_size is None and train_split.dataset is not None:
        bank_chunk_size = DEFAULT_BANK_CHUNK_SIZE
    bank = build_bank(encoder, train_split, bank_chunk_size, bank_dtype)
    return float(streaming_knn_accuracy(encoder, bank, test_split, k, temperature, chunk_size))
