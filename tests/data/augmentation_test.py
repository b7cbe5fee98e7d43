"""Two-view pipelines: shapes and ranges, reproducible per (seed, epoch),
views and epochs differ; the augmentation is a pure function of its seed."""

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data

IMAGES = np.random.default_rng(0).integers(0, 256, (40, 12, 12)).astype(np.uint8)


def batches(**kwargs):
    return [b.numpy() for b in data.two_view_dataset(IMAGES, 8, **kwargs)]


def test_shapes_ranges_and_views_differ():
    first = batches(seed=1)
    assert len(first) == 5 and first[0].shape == (8, 2, 12, 12, 1)
    assert first[0].dtype == np.float32 and first[0].min() >= 0 and first[0].max() <= 1 + 1e-6
    assert np.abs(first[0][:, 0] - first[0][:, 1]).mean() > 1e-2


def test_same_seed_and_epoch_reproduce_other_epochs_differ():
    chained = batches(seed=1, epoch=0, num_epochs=2)
    assert len(chained) == 10
    np.testing.assert_array_equal(np.stack(chained[:5]), np.stack(batches(seed=1, epoch=0)))
    # A resumed run that starts at epoch 1 sees what the full run saw.
    np.testing.assert_array_equal(np.stack(chained[5:]), np.stack(batches(seed=1, epoch=1)))
    assert not np.array_equal(chained[0], chained[5])
    assert not np.array_equal(chained[0], batches(seed=2)[0])


def test_labels_follow_the_permutation():
    labels = np.arange(40)
    dataset = data.two_view_dataset(IMAGES, 8, seed=3, labels=labels)
    seen = np.concatenate([y.numpy() for _, y in dataset])
    np.testing.assert_array_equal(seen, data.epoch_permutation(40, 3, 0))


def test_augment_is_a_pure_function_of_its_seed_and_handles_rgb():
    image = tf.random.stateless_uniform((16, 16, 3), (0, 1))
    a = data.simclr_augment(image, tf.constant([5, 6], tf.int64))
    b = data.simclr_augment(image, tf.constant([5, 6], tf.int64))
    c = data.simclr_augment(image, tf.constant([5, 7], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert a.shape == (16, 16, 3)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        data.two_view_dataset(IMAGES, 0)
    with pytest.raises(ValueError, match="exceeds"):
        data.two_view_dataset(IMAGES, 64)
    with pytest.raises(ValueError, match="images"):
        data.two_view_dataset(np.zeros((4, 2)), 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"seed": True}, "`seed` must be an int >= 0, got True"),
        ({"seed": "3"}, "`seed` must be an int >= 0"),
        ({"epoch": 1.5}, "`epoch` must be an int >= 0"),
        ({"num_epochs": 0}, "`num_epochs` must be an int > 0"),
        ({"shuffle": "yes"}, "`shuffle` must be a bool"),
        ({"drop_remainder": 1}, "`drop_remainder` must be a bool"),
        ({"labels": np.zeros(39, int)}, "`labels` has 39 entries for 40 images"),
        ({"labels": np.array(["a"] * 40)}, "`labels` must be integers"),
        ({"augment": "simclr"}, "`augment` must be a function"),
    ],
)
def test_two_view_dataset_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.two_view_dataset(IMAGES, 8, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"crop_scale": (0.0, 1.0)}, "`crop_scale` must be"),
        ({"crop_scale": (0.8, 0.2)}, "`crop_scale` must be"),
        ({"crop_scale": 0.5}, "`crop_scale` must be"),
        ({"strength": True}, "`strength` must be a number >= 0, got True"),
        ({"blur_probability": "0.5"}, "`blur_probability` must be a number in \\[0, 1\\]"),
        ({"jitter_probability": 1.5}, "`jitter_probability` must be a number in \\[0, 1\\]"),
    ],
)
def test_simclr_augment_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.simclr_augment(np.zeros((8, 8, 1), "float32"), tf.constant([1, 2], tf.int64),
                            **kwargs)


def test_image_dataset_and_epoch_permutation_reject_bad_arguments():
    with pytest.raises(ValueError, match="`labels` has 3 entries for 40 images"):
        data.image_dataset(IMAGES, np.zeros(3, int))
    with pytest.raises(ValueError, match="`batch_size` must be an int > 0, got True"):
        data.image_dataset(IMAGES, np.zeros(40, int), batch_size=True)
    with pytest.raises(ValueError, match="`seed` must be an int >= 0, got True"):
        data.epoch_permutation(10, True, 0)


# --- Augmentations at any resolution and per-view recipes (issue 17) ---

from keras_contrast.data import augmentation  # noqa: E402
from keras_contrast.data.augmentation import byol_views  # noqa: E402
from keras_contrast.data.augmentation import simclr_views  # noqa: E402
from tests.test_case import assert_all_close  # noqa: E402


def _frozen_gaussian_blur(image, sigma, kernel_size):
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


def _frozen_simclr_augment(image, seed, crop_scale=(0.2, 1.0), strength=1.0,
                           jitter_probability=0.8, grayscale_probability=0.2,
                           blur_probability=0.5, solarize_probability=0.0):
    """`simclr_augment` as it was before `output_size` (commit 9e676ed),
    frozen: calls without `output_size` must stay bit-identical to it."""
    image = tf.convert_to_tensor(image, tf.float32)
    height, width, channels = image.shape
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=crop_scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
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
    x = tf.cond(coins[2] < blur_probability,
                lambda: _frozen_gaussian_blur(x, sigma, kernel_size), lambda: x)
    x = tf.cond(coins[3] < solarize_probability, lambda: tf.where(x < 0.5, x, 1.0 - x),
                lambda: x)
    return tf.ensure_shape(x, (height, width, channels))


def views_over_seeds(augment, image, count, view=0, base=12345):
    """`augment(image, (base, 2i + view))` for i < count, mapped by tf.data
    in parallel (graph mode, as in `two_view_dataset`)."""
    image = tf.constant(image, tf.float32)
    dataset = tf.data.Dataset.range(count).map(
        lambda i: augment(image, tf.stack([tf.constant(base, tf.int64), 2 * i + view])),
        num_parallel_calls=4, deterministic=True)
    return np.concatenate([b.numpy() for b in dataset.batch(100)])


@pytest.mark.parametrize("shape,recipe", [
    ((12, 12, 1), {}),
    ((16, 16, 3), {"blur_probability": 1.0, "solarize_probability": 1.0}),
    ((20, 14, 3), {"jitter_probability": 1.0, "grayscale_probability": 1.0,
                   "crop_scale": (0.5, 0.9)}),
    ((16, 16, 3), {"strength": 0.5, "blur_probability": 0.3, "solarize_probability": 0.4}),
])
def test_without_output_size_views_are_bit_identical_to_the_frozen_original(shape, recipe):
    image = tf.random.stateless_uniform(shape, (3, 4)).numpy()
    new = views_over_seeds(lambda x, s: data.simclr_augment(x, s, **recipe), image, 32)
    old = views_over_seeds(lambda x, s: _frozen_simclr_augment(x, s, **recipe), image, 32)
    np.testing.assert_array_equal(new, old)
    # Eager calls too. An explicit output size equal to the input's makes
    # the same view, its blur computed as matrix products (float32 rounding).
    seed = tf.constant([7, 9], tf.int64)
    expected = _frozen_simclr_augment(image, seed, **recipe).numpy()
    np.testing.assert_array_equal(data.simclr_augment(image, seed, **recipe).numpy(), expected)
    explicit = views_over_seeds(
        lambda x, s: data.simclr_augment(x, s, output_size=shape[:2], **recipe), image, 32)
    np.testing.assert_allclose(explicit, old, rtol=0, atol=1e-6)


def bilinear_resize(image, height, width):
    """NumPy float64 bilinear resize with half-pixel centres (no antialias)."""
    def axis(out_size, in_size):
        source = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, in_size - 1), source - low

    image = np.asarray(image, np.float64)
    r0, r1, fr = axis(height, image.shape[0])
    c0, c1, fc = axis(width, image.shape[1])
    rows = image[r0] * (1 - fr)[:, None, None] + image[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


@pytest.mark.parametrize("in_shape,output_size", [((10, 10, 3), (17, 23)), ((40, 30, 1), 12)])
def test_whole_image_crop_is_a_bilinear_resize_to_the_output_size(in_shape, output_size):
    image = np.random.default_rng(1).uniform(size=in_shape).astype(np.float32)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    expected = bilinear_resize(image, height, width)
    flips = []
    off = dict(crop_scale=(1.0, 1.0), jitter_probability=0.0, grayscale_probability=0.0,
               blur_probability=0.0, output_size=output_size)
    for view in views_over_seeds(lambda x, s: data.simclr_augment(x, s, **off), image, 8):
        assert view.shape == (height, width, in_shape[2])
        flipped = not np.allclose(view, expected, atol=1e-5)
        assert_all_close(view[:, ::-1] if flipped else view, expected)
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)  # both flip outcomes were checked


def test_blur_kernel_spans_a_tenth_of_the_output_height():
    # A 200x120 impulse resized to 100x60 lands, weight 1/4, on one pixel;
    # a blurred view is then the kernel's outer product: 11x11 (the odd
    # number near 10 % of the output height 100; 21 if it followed the
    # input height) for a sigma whose tails do not underflow.
    image = np.zeros((200, 120, 1), np.float32)
    image[100, 60] = 1.0
    recipe = dict(crop_scale=(1.0, 1.0), jitter_probability=0.0, blur_probability=1.0,
                  output_size=(100, 60))
    views = views_over_seeds(lambda x, s: data.simclr_augment(x, s, **recipe), image, 12)
    extents = []
    for view in views:
        rows, cols = np.nonzero(view[..., 0])
        extents.append((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
        assert abs(view.sum() - 0.25) < 1e-5  # the blur keeps the mass
    assert max(extents) == (11, 11)


def numpy_blur(image, sigma, kernel_size):
    """Float64 separable Gaussian blur, borders reflected (np.pad "reflect")."""
    radius = kernel_size // 2
    kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    kernel /= kernel.sum()
    x = np.pad(np.asarray(image, np.float64), [(radius, radius), (radius, radius), (0, 0)],
               mode="reflect")
    h, w = image.shape[:2]
    x = sum(kernel[k] * x[:, k:k + w] for k in range(kernel_size))
    return sum(kernel[k] * x[k:k + h] for k in range(kernel_size))


@pytest.mark.parametrize("shape,kernel_size,sigma", [
    ((224, 224, 3), 23, 1.7), ((17, 9, 1), 11, 2.0), ((12, 4, 3), 7, 0.6),
    ((10, 2, 1), 5, 1.0), ((6, 1, 1), 3, 0.9)])
def test_both_blurs_match_a_float64_reference_with_reflected_borders(shape, kernel_size,
                                                                    sigma):
    image = np.random.default_rng(2).uniform(size=shape).astype(np.float32)
    expected = numpy_blur(image, sigma, kernel_size)
    sigma_ = tf.constant(sigma, tf.float32)
    assert_all_close(augmentation._gaussian_blur_matmul(tf.constant(image), sigma_,
                                                        kernel_size), expected)
    if kernel_size // 2 < min(shape[:2]):  # tf.pad reflects once only
        assert_all_close(augmentation._gaussian_blur(tf.constant(image), sigma_, kernel_size),
                         expected)


def test_output_size_shapes_for_every_recipe_and_unknown_input_sizes():
    rgb = tf.random.stateless_uniform((48, 40, 3), (1, 2))
    seed = tf.constant([1, 2], tf.int64)
    assert data.simclr_augment(rgb, seed, output_size=32).shape == (32, 32, 3)
    assert data.simclr_augment(rgb[..., :1], seed, output_size=(24, 56)).shape == (24, 56, 1)
    for views in (byol_views(output_size=(20, 30)), simclr_views(output_size=(20, 30))):
        assert [f(rgb, seed).shape for f in views] == [(20, 30, 3)] * 2
    # Images of varying size (a streaming source) with a fixed output size.
    dataset = tf.data.Dataset.from_generator(
        lambda: (np.zeros((h, w, 3), np.float32) for h, w in ((30, 50), (64, 20))),
        output_signature=tf.TensorSpec((None, None, 3), tf.float32))
    augment_0, _ = byol_views(output_size=16)
    mapped = dataset.map(lambda x: augment_0(x, seed))
    assert mapped.element_spec.shape == (16, 16, 3)
    assert [v.shape for v in mapped] == [(16, 16, 3)] * 2
    with pytest.raises(ValueError, match="needs an `output_size`"):
        dataset.map(lambda x: data.simclr_augment(x, seed))


def test_view_functions_are_pure_functions_of_their_seed():
    image = tf.random.stateless_uniform((16, 16, 3), (5, 6)).numpy()
    for augment in byol_views() + simclr_views(output_size=12)[:1]:
        mapped = views_over_seeds(augment, image, 16)
        for i in range(3):
            eager = augment(image, tf.constant([12345, 2 * i], tf.int64)).numpy()
            np.testing.assert_array_equal(eager, mapped[i])
        assert len({v.tobytes() for v in mapped}) == len(mapped)
    # SimCLR's two views are simclr_augment's defaults, bit for bit.
    for augment in simclr_views():
        for i in range(3):
            seed = tf.constant([3, i], tf.int64)
            np.testing.assert_array_equal(augment(image, seed).numpy(),
                                          _frozen_simclr_augment(image, seed).numpy())


def test_recipes_blur_and_solarize_at_their_probabilities():
    # Gray 16x16, 0.2 | 0.8 halves, whole-image crops, no jitter: a
    # solarized view has max < 0.5, a blurred one has pixels off {0.2,
    # 0.8} by 0.6·w1(sigma) next to the edge, w1 the kernel's (size 3)
    # neighbour weight. Detectable above TAU = 0.6·w1(0.25), i.e. for
    # sigma > 0.25: P(sigma > 0.25) = 1.75 / 1.9 of the blurred views.
    image = np.full((16, 16, 1), 0.2, np.float32)
    image[:, 8:] = 0.8
    w1 = np.exp(-1 / (2 * 0.25**2)) / (1 + 2 * np.exp(-1 / (2 * 0.25**2)))
    tau, detectable = 0.6 * w1, 1.75 / 1.9
    count = 400
    isolate = dict(crop_scale=(1.0, 1.0), jitter_probability=0.0)
    cases = [(byol_views(**isolate), ((1.0, 0.0), (0.1, 0.2))),
             (simclr_views(**isolate), ((0.5, 0.0), (0.5, 0.0)))]
    for views, probabilities in cases:
        for view, (augment, (p_blur, p_solarize)) in enumerate(zip(views, probabilities)):
            out = views_over_seeds(augment, image, count, view=view)[..., 0]
            off_levels = np.minimum(np.abs(out - 0.2), np.abs(out - 0.8)).max(axis=(1, 2))
            for rate, p in ((np.mean(off_levels > tau), p_blur * detectable),
                            (np.mean(out.max(axis=(1, 2)) < 0.5), p_solarize)):
                # 4 binomial standard deviations (exact when p is 0 or 1).
                assert abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / count), (view, rate, p)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "224", (0, 4), (4,), (4, 4, 3), (4, None),
                                   (2.0, 2)])
def test_bad_output_sizes_are_rejected_naming_output_size(value):
    image, seed = np.zeros((8, 8, 1), "float32"), tf.constant([1, 2], tf.int64)
    with pytest.raises(ValueError, match="`output_size` must be None, an int > 0 or "
                                         r"\(height, width\) ints > 0, got"):
        data.simclr_augment(image, seed, output_size=value)
    for views in (byol_views, simclr_views):
        with pytest.raises(ValueError, match="`output_size` must be"):
            views(output_size=value)


def test_view_recipes_check_their_overrides_when_built():
    with pytest.raises(ValueError, match="`solarize_probability` must be a number in"):
        byol_views(solarize_probability=2)
    with pytest.raises(ValueError, match="`crop_scale` must be"):
        simclr_views(crop_scale=(0.9, 0.1))
    with pytest.raises(TypeError, match="Unknown augmentation argument.*blur_prob\\b"):
        byol_views(blur_prob=0.3)
    augment_0, augment_1 = byol_views(strength=0.5, output_size=8)
    assert augment_0.keywords["strength"] == augment_1.keywords["strength"] == 0.5
    assert (augment_0.keywords["blur_probability"], augment_1.keywords["blur_probability"],
            augment_0.keywords["solarize_probability"],
            augment_1.keywords["solarize_probability"]) == (1.0, 0.1, 0.0, 0.2)


def test_two_view_dataset_applies_each_view_its_own_function():
    # View v of example i in epoch e of seed s is augment_v(image_i,
    # (s·2³¹ + e, 2i + v)), in the order epoch_permutation(n, s, e).
    augments = byol_views(output_size=(8, 10))
    seed, epoch = 4, 1
    first = next(iter(data.two_view_dataset(IMAGES, 8, seed=seed, epoch=epoch,
                                            augment=augments))).numpy()
    assert first.shape == (8, 2, 8, 10, 1)
    order = data.epoch_permutation(len(IMAGES), seed, epoch)[:8]
    for row, index in zip(first, order):
        image = IMAGES[index, ..., None].astype(np.float32) / 255.0
        for view, augment in enumerate(augments):
            expected = augment(image, tf.constant([seed * 2**31 + epoch, 2 * index + view],
                                                  tf.int64))
            np.testing.assert_array_equal(row[view], expected.numpy())
