"""Two-view `tf.data` pipelines reproducible per (seed, epoch)."""

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.data.augmentation import simclr_augment


def _as_float_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"`images` must be (n, H, W) or (n, H, W, C), got shape {images.shape}.")
    if images.dtype == np.uint8:
        return images
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _check_labels(labels, count):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}.")
    labels = labels.reshape(-1)
    if len(labels) != count:
        raise ValueError(f"`labels` has {len(labels)} entries for {count} images; one label "
                         "per image expected.")
    return labels.astype(np.int64)


@keras_contrast_export("keras_contrast.data.epoch_permutation")
def epoch_permutation(num_examples, seed, epoch):
    """The shuffled example order of `epoch`: a pure function of
    (seed, epoch), so a resumed epoch sees the same batches."""
    for name, value in (("num_examples", num_examples), ("seed", seed), ("epoch", epoch)):
        if not (is_int(value) and value >= 0):
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


@keras_contrast_export("keras_contrast.data.two_view_dataset")
def two_view_dataset(images, batch_size, seed=0, epoch=0, num_epochs=1, labels=None,
                     shuffle=True, drop_remainder=True, augment=simclr_augment):
    """Batches of two augmented views per image, `(batch, 2, H, W, C)`.

    Every random choice is keyed by (seed, epoch, example index, view):
    the order of epoch e is `epoch_permutation(n, seed, e)` and view v of
    example i uses the stateless seed `(seed·2³¹ + e, 2i + v)`, so two
    constructions give identical batches, a resumed run (start at
    `epoch`) repeats exactly what the uninterrupted run saw, and parallel
    mapping does not change the result.

    Args:
        images: uint8 `(n, H, W[, C])` in [0, 255] or float in [0, 1].
        batch_size: int > 0 (global batch).
        seed: int >= 0.
        epoch: the first epoch to produce.
        num_epochs: how many consecutive epochs to chain.
        labels: optional `(n,)` ints; then elements are `(views, labels)`.
        shuffle: bool. Shuffle per epoch.
        drop_remainder: bool (needed by `GradCache(chunk_size=...)` and
            Shuffle BN, which want equal batches).
        augment: `(image, seed) -> view`, default `simclr_augment`.

    Returns:
        A `tf.data.Dataset`.
    """
    check_positive_int(batch_size, "batch_size")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not (is_int(value) and value >= 0):
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    check_positive_int(num_epochs, "num_epochs")
    for name, value in (("shuffle", shuffle), ("drop_remainder", drop_remainder)):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool, got {value!r}.")
    if not callable(augment):
        raise ValueError(f"`augment` must be a function (image, seed) -> view, got {augment!r}.")
    images = _as_float_images(images)
    n = len(images)
    if drop_remainder and n < batch_size:
        raise ValueError(f"`batch_size`={batch_size} exceeds the {n} images.")
    if labels is not None:
        labels = _check_labels(labels, n)
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
        pair = tf.stack([augment(image, tf.stack([base, 2 * index + v])) for v in range(2)])
        return pair if label_table is None else (pair, tf.gather(label_table, index))

    if drop_remainder and num_epochs > 1:
        # Batch each epoch separately: no batch mixes two epochs.
        dataset = dataset.batch(n).flat_map(
            lambda index, epochs_: tf.data.Dataset.from_tensor_slices((index, epochs_))
            .map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True))
        return dataset.prefetch(tf.data.AUTOTUNE)
    dataset = dataset.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


@keras_contrast_export("keras_contrast.data.image_dataset")
def image_dataset(images, labels, batch_size=256):
    """Un-augmented `(images in [0, 1], labels)` batches for evaluation."""
    check_positive_int(batch_size, "batch_size")
    images = _as_float_images(images)
    labels = _check_labels(labels, len(images))
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
