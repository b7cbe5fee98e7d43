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
