"""SimCLR's augmentations as stateless per-example ops, at any output size,
and the per-view recipes of SimCLR (symmetric) and BYOL / MoCo v3
(asymmetric)."""

import functools

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_number
from keras_contrast.checks import is_positive_int

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


def _reflect_blur_matrix(kernel, size, radius):
    """`(size, size)` matrix M with `(M @ x)[i] = Σ_k kernel[k]·x[i + k - radius]`,
    indices reflected at the borders as `tf.pad(..., "REFLECT")` does
    (repeatedly, so any radius works)."""
    index = tf.range(size)[:, None] + tf.range(-radius, radius + 1)[None, :]
    if size == 1:
        index = tf.zeros_like(index)
    else:
        period = 2 * (size - 1)
        index = tf.abs(index) % period
        index = tf.where(index > size - 1, period - index, index)
    rows = tf.repeat(tf.range(size), 2 * radius + 1)
    # Duplicate (row, column) pairs near the borders add up, as reflection does.
    return tf.scatter_nd(tf.stack([rows, tf.reshape(index, [-1])], axis=1),
                         tf.tile(kernel, [size]), (size, size))


def _gaussian_blur_matmul(image, sigma, kernel_size):
    """`_gaussian_blur` as two matrix products, ~10x faster at 224x224
    (CPU depthwise convolutions with long kernels are slow); equal to it
    up to float32 rounding."""
    radius = kernel_size // 2
    offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = kernel / tf.reduce_sum(kernel)
    height, width = image.shape[0], image.shape[1]
    vertical = _reflect_blur_matrix(kernel, height, radius)
    horizontal = _reflect_blur_matrix(kernel, width, radius)
    x = tf.transpose(image, (2, 0, 1))  # (C, H, W)
    x = tf.matmul(vertical[None], tf.matmul(x, horizontal, transpose_b=True))
    return tf.transpose(x, (1, 2, 0))


def _output_size(output_size):
    """`output_size` as `(height, width)` ints, or None."""
    if output_size is None:
        return None
    if is_positive_int(output_size):
        return (output_size, output_size)
    if (isinstance(output_size, (tuple, list)) and len(output_size) == 2
            and all(is_positive_int(v) for v in output_size)):
        return tuple(output_size)
    raise ValueError("`output_size` must be None, an int > 0 or (height, width) ints > 0, "
                     f"got {output_size!r}.")


def _check_arguments(crop_scale, strength, jitter_probability, grayscale_probability,
                     blur_probability, solarize_probability, output_size):
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
    return _output_size(output_size)


@keras_contrast_export("keras_contrast.data.simclr_augment")
def simclr_augment(image, seed, crop_scale=(0.2, 1.0), strength=1.0, jitter_probability=0.8,
                   grayscale_probability=0.2, blur_probability=0.5, solarize_probability=0.0,
                   output_size=None):
    """One SimCLR view of one image (Chen et al., 2020, appendix A).

    Random resized crop (area fraction in `crop_scale`, aspect ratio in
    [3/4, 4/3], resized to `output_size`, by default the input size),
    horizontal flip, colour jitter with probability 0.8 (brightness,
    contrast ±0.4·strength; saturation ±0.4·strength and hue ±0.1·strength
    for RGB), grayscale (RGB, p 0.2), Gaussian blur (p 0.5, σ ∈ [0.1, 2],
    kernel ≈ 10 % of the output height, odd, at least 3) and solarization
    (p 0 by default; BYOL uses 0.2 on one view). Every step after the crop
    works at the output size, so a pipeline can decode 256x256 images and
    train on 224x224 crops. `byol_views` and `simclr_views` return the
    view functions of whole recipes.

    Without `output_size` the views are those of the first release, bit
    for bit. With it (even one equal to the input size) the blur runs as
    two matrix products, about 10x faster at 224x224 on CPU, and equals
    the first release's blur up to float32 rounding (~1e-7): pass
    `output_size` for large images.

    Args:
        image: float32 `(H, W, C)` in [0, 1], C = 1 or 3 (known
            statically). H and W may be unknown (images of varying size)
            when `output_size` is given.
        seed: int `(2,)` stateless seed; the view is a pure function of it.
        crop_scale: (min, max) area fraction of the crop.
        strength: colour-jitter strength s.
        jitter_probability, grayscale_probability, blur_probability,
        solarize_probability: probabilities of those steps.
        output_size: None (the input's `(H, W)`), an int (square) or
            `(height, width)`: the size the crop is resized to.

    Returns:
        float32 `(height, width, C)` in [0, 1].

    Example:

    >>> image = tf.random.stateless_uniform((256, 256, 3), (0, 1))
    >>> view = simclr_augment(image, tf.constant([1, 2], tf.int64), output_size=224)
    >>> view.shape
    TensorShape([224, 224, 3])

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020, appendix A.
    """
    output_size = _check_arguments(crop_scale, strength, jitter_probability,
                                   grayscale_probability, blur_probability,
                                   solarize_probability, output_size)
    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape.rank != 3 or image.shape[-1] is None:
        raise ValueError("`image` must be (H, W, C) with C known statically, got shape "
                         f"{image.shape}.")
    channels = image.shape[-1]
    # Without `output_size`, the first release's ops, bit for bit; with it,
    # the faster matrix-product blur (same blur up to float32 rounding).
    blur = _gaussian_blur_matmul
    if output_size is None:
        if image.shape[0] is None or image.shape[1] is None:
            raise ValueError(f"`image` of unknown height or width (shape {image.shape}) "
                             "needs an `output_size`.")
        output_size = (image.shape[0], image.shape[1])
        blur = _gaussian_blur
    height, width = output_size
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
    x = tf.cond(coins[2] < blur_probability, lambda: blur(x, sigma, kernel_size), lambda: x)
    x = tf.cond(coins[3] < solarize_probability, lambda: tf.where(x < 0.5, x, 1.0 - x),
                lambda: x)
    return tf.ensure_shape(x, (height, width, channels))


def _views(view_0, view_1, output_size, overrides):
    functions = []
    for recipe in (view_0, view_1):
        arguments = {"crop_scale": (0.2, 1.0), "strength": 1.0, "jitter_probability": 0.8,
                     "grayscale_probability": 0.2, "blur_probability": 0.5,
                     "solarize_probability": 0.0, **recipe}
        unknown = sorted(set(overrides) - set(arguments))
        if unknown:
            raise TypeError(f"Unknown augmentation argument(s) {', '.join(unknown)}; expected "
                            f"some of {', '.join(sorted(arguments))} or `output_size`.")
        arguments.update(overrides)
        _check_arguments(output_size=output_size, **arguments)
        functions.append(functools.partial(simclr_augment, output_size=output_size,
                                           **arguments))
    return tuple(functions)


@keras_contrast_export("keras_contrast.data.simclr_views")
def simclr_views(output_size=None, **overrides):
    """The two view functions of SimCLR's symmetric recipe.

    Both views are `simclr_augment` with its defaults (blur p 0.5, no
    solarization), changed by `overrides` alike.

    Args:
        output_size: None (the input size), an int or `(height, width)`.
        **overrides: `simclr_augment` arguments (`crop_scale`, `strength`,
            `jitter_probability`, `grayscale_probability`,
            `blur_probability`, `solarize_probability`) for both views.

    Returns:
        `(augment_0, augment_1)`, each `(image, seed) -> view`; pass them
        as `two_view_dataset(..., augment=simclr_views(...))`.

    Example:

    >>> augment_0, augment_1 = simclr_views(output_size=224)
    >>> augment_0.keywords["blur_probability"], augment_1.keywords["blur_probability"]
    (0.5, 0.5)

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020, appendix A.
    """
    return _views({}, {}, output_size, overrides)


@keras_contrast_export("keras_contrast.data.byol_views")
def byol_views(output_size=None, **overrides):
    """The two view functions of BYOL's / MoCo v3's asymmetric recipe.

    View 0 is always blurred and never solarized (blur p 1.0, solarize
    p 0); view 1 is rarely blurred and sometimes solarized (blur p 0.1,
    solarize p 0.2); crop, flip, jitter (p 0.8) and grayscale (p 0.2) are
    `simclr_augment`'s. `overrides` change both views alike (to change one
    view only, use `functools.partial(simclr_augment, ...)`). Two
    differences from BYOL's Table 6 remain: its crops cover (0.08, 1) of
    the area (`crop_scale=(0.08, 1.0)` gives that; the default (0.2, 1.0)
    suits small images), and its saturation jitter is ±0.2 where
    `simclr_augment` uses ±0.4·strength.

    Args:
        output_size: None (the input size), an int or `(height, width)`.
        **overrides: `simclr_augment` arguments for both views.

    Returns:
        `(augment_0, augment_1)`, each `(image, seed) -> view`; pass them
        as `two_view_dataset(..., augment=byol_views(...))`.

    Example:

    >>> augment_0, augment_1 = byol_views(output_size=224)
    >>> augment_0.keywords["blur_probability"], augment_1.keywords["blur_probability"]
    (1.0, 0.1)

    Reference:
        Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Table 6;
        Chen, Xie and He, "An Empirical Study of Training Self-Supervised
        Vision Transformers", ICCV 2021 (MoCo v3), appendix.
    """
    return _views({"blur_probability": 1.0, "solarize_probability": 0.0},
                  {"blur_probability": 0.1, "solarize_probability": 0.2},
                  output_size, overrides)
