"""Two-view and evaluation pipelines over every source: the array path is
bit-identical to the first release (a frozen copy below), a folder of
lossless files streams the batches of the same images as arrays, resumed
epochs repeat the uninterrupted run, per-view augmentations follow their
seeds."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data

CLASSES = ("ant", "bee", "cat")


def write_png_folder(root, counts=(4, 3, 5), shape=(8, 8, 3), split="train", seed=0,
                     file_channels=None):
    """Writes root/<split>/<class>/<i>.png; returns the images (as the
    files decode to `shape[-1]` channels) in class-major sorted-path order
    and their labels. `file_channels` cycles the channels of the files
    written (1 gray, 3 RGB, 4 RGBA); the returned RGBA drops alpha, gray
    is repeated to RGB."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, (name, count) in enumerate(zip(CLASSES, counts)):
        folder = os.path.join(root, split, name)
        os.makedirs(folder)
        for i in range(count):
            channels = shape[-1] if file_channels is None else file_channels[i % len(file_channels)]
            pixels = rng.integers(0, 256, shape[:2] + (channels,), dtype=np.uint8)
            # Names whose sorted order differs from their numeric order.
            tf.io.write_file(os.path.join(folder, f"{10 - i}.png"), tf.io.encode_png(pixels))
            if shape[-1] == 3 and channels == 1:
                pixels = np.repeat(pixels, 3, axis=-1)
            elif channels == 4:
                pixels = pixels[..., :3]
            images.append((f"{10 - i}.png", label, pixels))
    images.sort(key=lambda item: (item[1], item[0]))
    return (np.stack([p for _, _, p in images]),
            np.array([label for _, label, _ in images], np.int64))


def noisy(image, seed):
    """A cheap stateless augmentation: the tests are about order and seeds."""
    return tf.clip_by_value(image + tf.random.stateless_uniform(tf.shape(image), seed, -0.2, 0.2),
                            0.0, 1.0)


def crop(image, seed):
    """A view of another size than the image."""
    return tf.image.stateless_random_crop(image, (5, 6, image.shape[-1]), seed)


def crop_flip(image, seed):
    """Another view function of the same output size (exact ops only, so
    that an eager reference matches the graph bit for bit)."""
    return tf.image.stateless_random_flip_up_down(crop(image, seed), seed + 1)


def first_release_two_view_dataset(images, batch_size, seed=0, epoch=0, num_epochs=1,
                                   labels=None, shuffle=True, drop_remainder=True,
                                   augment=data.simclr_augment):
    """`two_view_dataset` as released before streaming sources, frozen."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8:
        images = np.clip(images, 0.0, 1.0).astype(np.float32)
    n = len(images)
    labels = None if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
    table = tf.constant(images)
    label_table = None if labels is None else tf.constant(labels)
    orders = [data.epoch_permutation(n, seed, e) if shuffle else np.arange(n)
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
        dataset = dataset.batch(n).flat_map(
            lambda index, epochs_: tf.data.Dataset.from_tensor_slices((index, epochs_))
            .map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True))
        return dataset.prefetch(tf.data.AUTOTUNE)
    dataset = dataset.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def as_numpy(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset]


def assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for step, (a, b) in enumerate(zip(actual, expected)):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(x, y, err_msg=f"batch {step}")


GRAY = np.random.default_rng(3).integers(0, 256, (21, 10, 10), dtype=np.uint8)


@pytest.mark.parametrize("kwargs", [
    {"num_epochs": 2, "labels": np.arange(21) % 4},
    {"num_epochs": 2, "drop_remainder": False, "epoch": 1},
    {"shuffle": False, "drop_remainder": False, "labels": np.arange(21)},
], ids=["labels-2-epochs", "remainder-resumed", "unshuffled"])
def test_array_path_is_bit_identical_to_the_first_release(kwargs):
    expected = as_numpy(first_release_two_view_dataset(GRAY, 4, seed=5, **kwargs))
    assert_same_batches(as_numpy(data.two_view_dataset(GRAY, 4, seed=5, **kwargs)), expected)


def test_float_arrays_are_bit_identical_to_the_first_release():
    images = np.random.default_rng(2).uniform(-0.1, 1.1, (9, 6, 6, 3))
    expected = as_numpy(first_release_two_view_dataset(images, 3, seed=1, augment=noisy))
    assert_same_batches(as_numpy(data.two_view_dataset(images, 3, seed=1, augment=noisy)),
                        expected)


@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8, 3)], ids=["gray", "rgb"])
def test_folder_streams_the_batches_of_its_images_as_arrays(tmp_path, shape):
    images, labels = write_png_folder(str(tmp_path), shape=shape)
    channels = shape[-1]
    for kwargs in ({"num_epochs": 2},
                   {"num_epochs": 2, "drop_remainder": False, "labels": True}):
        array_kwargs = dict(kwargs, labels=labels if kwargs.get("labels") else None)
        expected = as_numpy(first_release_two_view_dataset(images, 5, seed=7, augment=noisy,
                                                           **array_kwargs))
        streamed = as_numpy(data.two_view_dataset(str(tmp_path), 5, seed=7, augment=noisy,
                                                  channels=channels, **kwargs))
        assert_same_batches(streamed, expected)


def test_gray_and_rgba_files_are_converted_to_the_requested_channels(tmp_path):
    images, labels = write_png_folder(str(tmp_path), counts=(3, 3, 2), file_channels=(1, 3, 4))
    expected = as_numpy(first_release_two_view_dataset(images, 4, seed=2, augment=noisy,
                                                       labels=labels))
    assert_same_batches(as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=2, augment=noisy,
                                                       labels=True)), expected)
    # Grayscale: whatever the file holds, what the eager loader decodes.
    (gray, _), _ = _load_train_only(str(tmp_path), channels=1)
    expected = as_numpy(first_release_two_view_dataset(gray, 4, seed=2, augment=noisy))
    assert_same_batches(as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=2, augment=noisy,
                                                       channels=1)), expected)


def _load_train_only(root, **kwargs):
    # `load_image_folder` wants a test split too.
    if not os.path.isdir(os.path.join(root, "test")):
        shutil.copytree(os.path.join(root, "train"), os.path.join(root, "test"))
    return data.load_image_folder(root, **kwargs)


def test_resized_folder_equals_the_resized_arrays_of_load_image_folder(tmp_path):
    write_png_folder(str(tmp_path), counts=(3, 2, 3), shape=(11, 9, 3))
    (x, y), _ = _load_train_only(str(tmp_path), image_size=(7, 6))
    expected = as_numpy(first_release_two_view_dataset(x, 4, seed=0, augment=noisy, labels=y))
    streamed = as_numpy(data.two_view_dataset(str(tmp_path), 4, augment=noisy, labels=True,
                                              image_size=(7, 6)))
    assert streamed[0][0].shape == (4, 2, 7, 6, 3)
    assert_same_batches(streamed, expected)


def test_same_seed_same_batches_and_a_resumed_run_repeats_the_later_epochs(tmp_path):
    write_png_folder(str(tmp_path))
    full = as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=3, num_epochs=3, augment=noisy))
    again = as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=3, num_epochs=3, augment=noisy))
    resumed = as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=3, epoch=1, num_epochs=2,
                                             augment=noisy))
    assert len(full) == 9
    assert_same_batches(again, full)
    assert_same_batches(resumed, full[3:])
    assert not np.array_equal(full[0], full[3])
    other = as_numpy(data.two_view_dataset(str(tmp_path), 4, seed=4, augment=noisy))
    assert not np.array_equal(other[0], full[0])


def test_a_pair_of_augmentations_makes_each_view_with_its_own_function(tmp_path):
    images, labels = write_png_folder(str(tmp_path), counts=(2, 2, 2))
    dataset = data.two_view_dataset(str(tmp_path), 3, seed=6, epoch=2, labels=True,
                                    augment=(crop, crop_flip), drop_remainder=False)
    (views_a, labels_a), (views_b, labels_b) = as_numpy(dataset)
    order = data.epoch_permutation(6, 6, 2)
    np.testing.assert_array_equal(np.concatenate([labels_a, labels_b]), labels[order])
    # Hand-built reference: view v of id i uses seed (6·2³¹ + 2, 2i + v).
    base = 6 * 2**31 + 2
    for row, index in enumerate(order):
        image = tf.constant(images[index], tf.float32) / 255.0
        v0 = crop(image, tf.constant([base, 2 * index], tf.int64)).numpy()
        v1 = crop_flip(image, tf.constant([base, 2 * index + 1], tf.int64)).numpy()
        views = (views_a if row < 3 else views_b)[row % 3]
        np.testing.assert_array_equal(views[0], v0)
        np.testing.assert_array_equal(views[1], v1)
        assert not np.array_equal(views[0], views[1])


def test_views_take_the_shape_the_augmentation_returns(tmp_path):
    write_png_folder(str(tmp_path), counts=(2, 2, 2))
    views = next(iter(data.two_view_dataset(str(tmp_path), 2, augment=crop)))
    assert views.shape == (2, 2, 5, 6, 3)


def test_threads_and_parallel_calls_do_not_change_the_batches(tmp_path):
    write_png_folder(str(tmp_path), counts=(3, 3, 3))
    expected = as_numpy(data.two_view_dataset(str(tmp_path), 3, augment=noisy))
    tuned = data.two_view_dataset(str(tmp_path), 3, augment=noisy, threads=1,
                                  num_parallel_calls=2)
    assert tuned.options().threading.private_threadpool_size == 1
    assert_same_batches(as_numpy(tuned), expected)


def test_image_dataset_streams_the_test_split_in_file_order(tmp_path):
    write_png_folder(str(tmp_path), counts=(2, 3, 1))
    images, labels = write_png_folder(str(tmp_path), counts=(3, 0, 2), split="val", seed=1)
    os.rmdir(os.path.join(str(tmp_path), "val", "bee"))
    batches = as_numpy(data.image_dataset(str(tmp_path), batch_size=2))
    assert len(batches) == 3 and batches[0][0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]),
                                  images.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), [0, 0, 0, 2, 2])
    only_images = as_numpy(data.image_dataset(str(tmp_path), labels=False, split="train"))
    assert only_images[0].shape == (6, 8, 8, 3)


def test_image_dataset_keeps_the_array_behaviour():
    labels = np.arange(21) % 3
    (x, y), = as_numpy(data.image_dataset(GRAY, labels, batch_size=32))
    np.testing.assert_array_equal(x, GRAY[..., None].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("kwargs,match", [
    ({"augment": (noisy,)}, "`augment` must be a function .* or a pair of them"),
    ({"augment": (noisy, "crop")}, "`augment` must be a function"),
    ({"labels": True}, "`labels=True` but the ArraySource has no labels"),
    ({"labels": "yes"}, "`labels` must be None, a bool or an array of ints"),
    ({"threads": 0}, "`threads` must be None or an int > 0, got 0"),
    ({"num_parallel_calls": 0}, "`num_parallel_calls` must be tf.data.AUTOTUNE or an int > 0"),
    ({"image_size": 4}, "`image_size` applies to folders, TFRecords and TFDS datasets"),
    ({"on_error": "ignore"}, "`on_error` must be one of \\('raise', 'skip'\\)"),
])
def test_two_view_dataset_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.two_view_dataset(GRAY, 4, **kwargs)


def test_folder_pipelines_reject_array_labels_and_bad_sizes(tmp_path):
    write_png_folder(str(tmp_path), counts=(2, 2, 2))
    with pytest.raises(ValueError, match="`labels` as an array goes with array images only"):
        data.two_view_dataset(str(tmp_path), 2, labels=np.arange(6))
    with pytest.raises(ValueError, match="`image_size` must be an int > 0 or a pair of ints"):
        data.two_view_dataset(str(tmp_path), 2, image_size=(0, 3))
    with pytest.raises(ValueError, match="`batch_size`=7 exceeds the 6 images"):
        data.two_view_dataset(str(tmp_path), 7)
