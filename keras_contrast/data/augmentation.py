"""SimCLR's augmentations as stateless per-example ops."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
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
