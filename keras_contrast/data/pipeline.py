"""Two-view `tf.data` pipelines reproducible per (seed, epoch), from any
`ImageSource`: arrays, image folders, TFRecord shards, TFDS datasets."""

import functools

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.data.augmentation import simclr_augment
from keras_contrast.data.sources import ArraySource
from keras_contrast.data.sources import ImageSource
from keras_contrast.data.sources import as_float_images as _as_float_images
from keras_contrast.data.sources import as_source
from keras_contrast.data.sources import check_labels as _check_labels


@keras_contrast_export("keras_contrast.data.epoch_permutation")
def epoch_permutation(num_examples, seed, epoch):
    """The shuffled example order of `epoch`: a pure function of
    (seed, epoch), so a resumed epoch sees the same batches."""
    for name, value in (("num_examples", num_examples), ("seed", seed), ("epoch", epoch)):
        if not (is_int(value) and value >= 0):
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def _check_augment(augment):
    """`(view-0 function, view-1 function)` from `augment`."""
    if callable(augment):
        return augment, augment
    if (isinstance(augment, (tuple, list)) and len(augment) == 2
            and all(callable(a) for a in augment)):
        return tuple(augment)
    raise ValueError(f"`augment` must be a function (image, seed) -> view or a pair of them "
                     f"(one per view), got {augment!r}.")


def _check_common(batch_size, seed, epoch, num_epochs, shuffle, drop_remainder, threads,
                  num_parallel_calls):
    check_positive_int(batch_size, "batch_size")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not (is_int(value) and value >= 0):
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    check_positive_int(num_epochs, "num_epochs")
    for name, value in (("shuffle", shuffle), ("drop_remainder", drop_remainder)):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool, got {value!r}.")
    if threads is not None:
        check_positive_int(threads, "threads", "None or an int > 0")
    if num_parallel_calls != tf.data.AUTOTUNE:
        check_positive_int(num_parallel_calls, "num_parallel_calls",
                           "tf.data.AUTOTUNE or an int > 0")


def _check_labels_argument(labels):
    if labels is not None and not isinstance(labels, bool) and (
            isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__")):
        raise ValueError(f"`labels` must be None, a bool or an array of ints, got {labels!r}.")


def _resolve(source, labels, split, image_size, channels, on_error):
    """(ImageSource, whether elements carry labels)."""
    _check_labels_argument(labels)
    array_labels = labels if labels is not None and not isinstance(labels, bool) else None
    source = as_source(source, split=split, image_size=image_size, channels=channels,
                       labels=array_labels, on_error=on_error)
    if array_labels is not None:
        return source, True
    if labels is True and source.random_access and source.labels is None:
        raise ValueError(f"`labels=True` but the {type(source).__name__} has no labels; pass "
                         "them (`labels=` with arrays, or `ArraySource(images, labels)`).")
    return source, bool(labels)


def _with_threads(dataset, threads):
    if threads is None:
        return dataset
    options = tf.data.Options()
    options.threading.private_threadpool_size = int(threads)
    return dataset.with_options(options)


def _array_two_views(images, labels, batch_size, seed, epoch, num_epochs, shuffle,
                     drop_remainder, augments, num_parallel_calls):
    # The array path of the first release, unchanged: its batches are the
    # reference the streaming sources are tested against.
    n = len(images)
    table = tf.constant(images)
    label_table = None if labels is None else tf.constant(labels)
    orders = [epoch_permutation(n, seed, e) if shuffle else np.arange(n)
              for e in range(epoch, epoch + num_epochs)]
    epochs = np.repeat(np.arange(epoch, epoch + num_epochs), n)
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(orders).astype(np.int64), epochs.astype(np.int64)))

    def views(index, epoch_index):
        image = tf.cast(tf.gather(table, index), tf.float32)
        if table.dtype == tf.uint8:
            image = image / 255.0
        base = tf.cast(seed, tf.int64) * (2**31) + epoch_index
        pair = tf.stack([augments[v](image, tf.stack([base, 2 * index + v])) for v in range(2)])
        return pair if label_table is None else (pair, tf.gather(label_table, index))

    if drop_remainder and num_epochs > 1:
        # Batch each epoch separately: no batch mixes two epochs.
        dataset = dataset.batch(n).flat_map(
            lambda index, epochs_: tf.data.Dataset.from_tensor_slices((index, epochs_))
            .map(views, num_parallel_calls=num_parallel_calls, deterministic=True)
            .batch(batch_size, drop_remainder=True))
        return dataset.prefetch(tf.data.AUTOTUNE)
    dataset = dataset.map(views, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _block_order(order, block):
    """The positions of `order` this input pipeline reads: in every global
    batch of `block["global"]`, `block["size"]` from `block["offset"]`;
    the last, partial global batch is dropped."""
    size, total = block["size"], block["global"]
    full = (len(order) // total) * total
    return order[:full].reshape(-1, total)[:, block["offset"]:block["offset"] + size].reshape(-1)


def _stream_two_views(source, batch_size, seed, epoch, num_epochs, with_labels, shuffle,
                      drop_remainder, augments, num_parallel_calls, block=None):
    """Two-view batches from a streaming source; `block` (see
    `_block_order`) restricts them to one input pipeline's examples, in
    batches of `batch_size` per replica."""
    seed_base = tf.constant(int(seed) * 2**31, tf.int64)

    def views(index, image, label, epoch_index):
        image = tf.cast(image, tf.float32)
        if source_dtype == tf.uint8:
            image = image / 255.0
        base = seed_base + epoch_index
        pair = tf.stack([augments[v](image, tf.stack([base, 2 * index + v])) for v in range(2)])
        return (pair, label) if with_labels else pair

    per_epoch_batches = block is not None or (drop_remainder and num_epochs > 1)
    if source.random_access:
        n = source.num_examples
        source_dtype = tf.uint8 if not isinstance(source, ArraySource) else tf.as_dtype(
            source.images.dtype)

        def order_of(e):
            order = (epoch_permutation(n, seed, int(e)) if shuffle else np.arange(n))
            order = order.astype(np.int64)
            return order if block is None else _block_order(order, block)

        def epoch_dataset(e):
            ids = tf.numpy_function(order_of, [e], tf.int64, stateful=False)
            ids.set_shape([None])
            dataset = source.read(ids, num_parallel_calls=num_parallel_calls).map(
                lambda index, image, label: views(index, image, label, e),
                num_parallel_calls=num_parallel_calls, deterministic=True)
            if per_epoch_batches:
                dataset = dataset.batch(batch_size, drop_remainder=True)
            return dataset

        dataset = tf.data.Dataset.range(epoch, epoch + num_epochs).flat_map(epoch_dataset)
    else:
        source_dtype = tf.uint8
        pipelines, pipeline = (1, 0) if block is None else (block["pipelines"],
                                                           block["pipeline"])

        def epoch_dataset(e):
            examples = source.examples(order_key=(int(seed), e) if shuffle else None,
                                       shard_index=pipeline, shard_count=pipelines)
            dataset = examples.map(
                lambda x: views(x["id"], x["image"], x["label"], tf.constant(e, tf.int64)),
                num_parallel_calls=num_parallel_calls, deterministic=True)
            if per_epoch_batches:
                dataset = dataset.batch(batch_size, drop_remainder=True)
            if block is not None:
                # Every pipeline runs the same number of steps.
                dataset = dataset.take(block["steps"] * block["replicas"])
            return dataset

        dataset = functools.reduce(lambda a, b: a.concatenate(b),
                                   [epoch_dataset(e) for e in range(epoch, epoch + num_epochs)])
    if not per_epoch_batches:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


@keras_contrast_export("keras_contrast.data.two_view_dataset")
def two_view_dataset(source, batch_size, seed=0, epoch=0, num_epochs=1, labels=None,
                     shuffle=True, drop_remainder=True, augment=simclr_augment, image_size=None,
                     channels=None, split="train", num_parallel_calls=tf.data.AUTOTUNE,
                     threads=None, on_error="raise"):
    """Batches of two augmented views per image, `(batch, 2, H, W, C)`.

    Every random choice is keyed by (seed, epoch, example id, view): view
    v of example `id` in epoch e uses the stateless seed
    `(seed·2³¹ + e, 2·id + v)`, so two constructions give identical
    batches, a resumed run (start at `epoch`) repeats exactly what the
    uninterrupted run saw, and parallel mapping does not change the
    result. The order of epoch e is, for arrays and folders (random
    access), `epoch_permutation(n, seed, e)` of the ids; TFRecord and TFDS
    sources (sequential) use their own keyed order of shards and a bounded
    seeded shuffle buffer. Images stream: a folder's or TFRecord's files
    are read and decoded inside `tf.data`. An array and a folder of
    lossless files holding the same images in sorted-path order give
    identical batches.

    Args:
        source: uint8 `(n, H, W[, C])` arrays in [0, 255] or float in
            [0, 1]; a folder path holding `train/<class>/*` images;
            `"tfrecord:GLOB"`; a TFDS builder or `"tfds:NAME"`; or an
            `ImageSource` (see `as_source`).
        batch_size: int > 0 (global batch).
        seed: int >= 0.
        epoch: the first epoch to produce.
        num_epochs: how many consecutive epochs to chain.
        labels: None or False (elements are the views only); True (the
            source's labels: class folders, TFRecord/TFDS labels, an
            `ArraySource`'s); or `(n,)` ints with arrays. With labels,
            elements are `(views, labels)`.
        shuffle: bool. Shuffle per epoch.
        drop_remainder: bool (needed by `GradCache(chunk_size=...)` and
            Shuffle BN, which want equal batches). With several epochs,
            each epoch is batched separately.
        augment: `(image, seed) -> view`, default `simclr_augment`, or a
            pair of them, one per view (BYOL / MoCo v3 asymmetric views).
            The views' shape is what it returns (it may crop to another
            size than the decoded image's).
        image_size: `(height, width)` or int: the size folders, TFRecords
            and TFDS images are decoded (resized) to.
        channels: 1 or 3 (None: 3) for decoded images.
        split: the folder / TFDS split to read.
        num_parallel_calls: parallel decoding and augmentation calls.
        threads: None, or the size of the pipeline's private `tf.data`
            thread pool (leave cores to training).
        on_error: `"raise"` (a file that does not decode stops the
            iteration with an error naming it) or `"skip"` (logged).

    Returns:
        A `tf.data.Dataset`.

    Example:
    >>> dataset = keras_contrast.data.two_view_dataset(
    ...     "flowers", 256, seed=0, image_size=64, labels=True)
    >>> model.fit(dataset, epochs=1)
    """
    _check_common(batch_size, seed, epoch, num_epochs, shuffle, drop_remainder, threads,
                  num_parallel_calls)
    augments = _check_augment(augment)
    source, with_labels = _resolve(source, labels, split, image_size, channels, on_error)
    n = source.num_examples
    if drop_remainder and n < batch_size:
        raise ValueError(f"`batch_size`={batch_size} exceeds the {n} images.")
    if isinstance(source, ArraySource):
        dataset = _array_two_views(source.images, source.labels if with_labels else None,
                                   batch_size, seed, epoch, num_epochs, shuffle,
                                   drop_remainder, augments, num_parallel_calls)
    else:
        dataset = _stream_two_views(source, batch_size, seed, epoch, num_epochs, with_labels,
                                    shuffle, drop_remainder, augments, num_parallel_calls)
    return _with_threads(dataset, threads)


@keras_contrast_export("keras_contrast.data.image_dataset")
def image_dataset(source, labels=None, batch_size=256, split="test", image_size=None,
                  channels=None, on_error="raise", num_parallel_calls=tf.data.AUTOTUNE):
    """Un-augmented `(images in [0, 1], labels)` batches for evaluation.

    Arrays are held as a tensor, as before; folders, TFRecords and TFDS
    datasets stream in id (file or record) order, so a `test/` or `val/`
    split of any size can be evaluated.

    Args:
        source: arrays or anything `as_source` takes.
        labels: `(n,)` ints with arrays; for other sources None or True
            (their labels) or False (images only). Arrays without labels
            give images only.
        batch_size: int > 0.
        split: the folder / TFDS split (`"test"` falls back to `val/` in
            folders).
        image_size, channels, on_error: as for `two_view_dataset`.
        num_parallel_calls: parallel decoding calls.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` (or images) batches,
        images float32 in [0, 1].

    Example:
    >>> test = keras_contrast.data.image_dataset("flowers", split="test",
    ...                                          image_size=64)
    """
    check_positive_int(batch_size, "batch_size")
    _check_labels_argument(labels)
    if not isinstance(source, (ImageSource, str)) and not hasattr(source, "as_dataset") \
            and not hasattr(source, "__fspath__"):
        images = _as_float_images(source)
        for name, value in (("image_size", image_size), ("channels", channels)):
            if value is not None:
                raise ValueError(f"`{name}` applies to folders, TFRecords and TFDS datasets, "
                                 f"not to arrays; got {name}={value!r}.")
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        if labels is None or isinstance(labels, bool):
            if labels:
                raise ValueError("`labels=True` needs labels; with arrays pass them.")
            return tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        labels = _check_labels(labels, len(images))
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    source, _ = _resolve(source, labels if labels is not None else None, split, image_size,
                         channels, on_error)
    with_labels = labels is not False
    if source.random_access:
        if with_labels and source.labels is None:
            with_labels = labels is True
            if with_labels:
                raise ValueError(f"`labels=True` but the {type(source).__name__} has no labels.")
        dataset = source.read(tf.range(source.num_examples, dtype=tf.int64),
                              num_parallel_calls=num_parallel_calls)
        dataset = dataset.map(lambda index, image, label: (image, label))
    else:
        dataset = source.examples().map(lambda x: (x["image"], x["label"]))

    def scale(image, label):
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        return (image, label) if with_labels else image

    dataset = dataset.map(scale, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
