"""SimCLR's augmentations as stateless per-example ops, and two-view
`tf.data` pipelines reproducible per (seed, epoch)."""

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number

# Keras' preprocessing layers (RandomFlip, RandomColorJitter, ...) draw from
# a stateful SeedGenerator: inside a parallel `tf.data.map` the order of
# draws, hence the masks, depends on thread timing, and an epoch cannot be
# regenerated after a resume; they accept no per-example stateless seed, and
# Keras has no random *resized* crop. TensorFlow's stateless image ops
# (`tf.image.stateless_*`) key every draw by (seed, epoch, example, view).


def _gaussian_blur(image, sigma, kernel_size):
    radius = kernel_size // 2
    offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = tf.shape(image)[-1]
    horizontal = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), [1, 1, channels, 1])
    vertical = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), [1, 1, channels, 1])
    x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    x = tf.nn.depthwise_conv2d(x, horizontal, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, vertical, [1, 1, 1, 1], "VALID")
    return x[0]


@keras_contrast_export("keras_contrast.data.simclr_augment")
def simclr_augment(image, seed, crop_scale=(0.2, 1.0), strength=1.0, jitter_probability=0.8,
                   grayscale_probability=0.2, blur_probability=0.5, solarize_probability=0.0):
    """One SimCLR view of one image (Chen et al., 2020, appendix A).

    Random resized crop (area fraction in `crop_scale`, aspect ratio in
    [3/4, 4/3], resized back), horizontal flip, colour jitter with
    probability 0.8 (brightness, contrast ±0.4·strength; saturation
    ±0.4·strength and hue ±0.1·strength for RGB), grayscale (RGB, p 0.2),
    Gaussian blur (p 0.5, σ ∈ [0.1, 2], kernel ≈ 10 % of the side) and
    solarization (p 0 by default; BYOL uses 0.2 on one view).

    Args:
        image: float32 `(H, W, C)` in [0, 1], C = 1 or 3.
        seed: int `(2,)` stateless seed; the view is a pure function of it.
        crop_scale: (min, max) area fraction of the crop.
        strength: colour-jitter strength s.
        jitter_probability, grayscale_probability, blur_probability,
        solarize_probability: probabilities of those steps.

    Returns:
        float32 `(H, W, C)` in [0, 1].
    """
    if (
        not isinstance(crop_scale, (tuple, list))
        or len(crop_scale) != 2
        or not all(is_number(v) for v in crop_scale)
        or not 0 < crop_scale[0] <= crop_scale[1] <= 1
    ):
        raise ValueError(
            f"`crop_scale` must be (min, max) with 0 < min <= max <= 1, got {crop_scale!r}."
        )
    if not (is_number(strength) and strength >= 0):
        raise ValueError(f"`strength` must be a number >= 0, got {strength!r}.")
    for name, value in (("jitter_probability", jitter_probability),
                        ("grayscale_probability", grayscale_probability),
                        ("blur_probability", blur_probability),
                        ("solarize_probability", solarize_probability)):
        if not (is_number(value) and 0 <= value <= 1):
            raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    image = tf.convert_to_tensor(image, tf.float32)
    height, width, channels = image.shape
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=crop_scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    x = tf.image.resize(tf.slice(image, begin, size)[None], (height, width))[0]
    x = tf.image.stateless_random_flip_left_right(x, seeds[1])
    coins = tf.random.stateless_uniform([4], seeds[2])

    def jitter(x):
        x = tf.image.stateless_random_brightness(x, 0.4 * strength, seeds[3])
        x = tf.image.stateless_random_contrast(x, 1 - 0.4 * strength, 1 + 0.4 * strength,
                                               seeds[4])
        if channels == 3:
            x = tf.image.stateless_random_saturation(x, max(0.0, 1 - 0.4 * strength),
                                                     1 + 0.4 * strength, seeds[5])
            x = tf.image.stateless_random_hue(x, min(0.5, 0.1 * strength), seeds[6])
        return tf.clip_by_value(x, 0.0, 1.0)

    x = tf.cond(coins[0] < jitter_probability, lambda: jitter(x), lambda: x)
    if channels == 3:
        x = tf.cond(coins[1] < grayscale_probability,
                    lambda: tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3]), lambda: x)
    kernel_size = max(3, (height // 10) | 1)
    sigma = tf.random.stateless_uniform([], seeds[7], 0.1, 2.0)
    x = tf.cond(coins[2] < blur_probability, lambda: _gaussian_blur(x, sigma, kernel_size),
                lambda: x)
    x = tf.cond(coins[3] < solarize_probability, lambda: tf.where(x < 0.5, x, 1.0 - x),
                lambda: x)
    return tf.ensure_shape(x, (height, width, channels))


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
