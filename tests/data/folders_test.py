"""Image folders and TensorFlow Datasets, on files written by the test (no
downloads): decoded pixels equal what was written, labels follow sorted
class folders."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data


def write_folder(root, sizes=((6, 5),), channels=3, seed=0):
    """Writes root/{train,test}/{cat,dog}/*.png and returns
    {(split, label): [images]} of what it wrote."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                size = sizes[i % len(sizes)]
                image = rng.integers(0, 256, size + (channels,), dtype=np.uint8)
                path = os.path.join(root, split, name, f"{i}.png")
                tf.io.write_file(path, tf.io.encode_png(image))
                written.setdefault((split, label), []).append(image)
    # Not an image: ignored.
    with open(os.path.join(root, "train", "cat", "notes.txt"), "w") as handle:
        handle.write("not an image")
    return written


def test_image_folder_reads_pixels_and_sorted_class_labels(tmp_path):
    written = write_folder(str(tmp_path))
    (x, y), (xt, yt) = data.load_image_folder(str(tmp_path))
    assert x.dtype == np.uint8 and x.shape == (6, 6, 5, 3) and xt.shape == (4, 6, 5, 3)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(yt, [0, 0, 1, 1])
    np.testing.assert_array_equal(x, np.stack(written["train", 0] + written["train", 1]))
    np.testing.assert_array_equal(xt, np.stack(written["test", 0] + written["test", 1]))


def test_image_folder_resizes_mixed_sizes_and_grayscale(tmp_path):
    write_folder(str(tmp_path), sizes=((6, 5), (9, 12)))
    with pytest.raises(ValueError, match="image_size"):
        data.load_image_folder(str(tmp_path))
    (x, _), (xt, _) = data.load_image_folder(str(tmp_path), image_size=(4, 4), channels=1)
    assert x.shape == (6, 4, 4, 1) and xt.shape == (4, 4, 4, 1) and x.dtype == np.uint8


def test_image_folder_rejects_bad_layouts(tmp_path):
    with pytest.raises(ValueError, match="no `train/`"):
        data.load_image_folder(str(tmp_path))
    os.makedirs(tmp_path / "train" / "cat")
    with pytest.raises(ValueError, match="none of the subfolders"):
        data.load_image_folder(str(tmp_path))
    os.makedirs(tmp_path / "test" / "bird")
    with pytest.raises(ValueError, match=r"missing from `train/`: \['bird'\]"):
        data.load_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="`channels`"):
        data.load_image_folder(str(tmp_path), channels=4)
    with pytest.raises(ValueError, match="`image_size`"):
        data.load_image_folder(str(tmp_path), image_size=(0, 3))


def _sorted_by_pixels(images, labels):
    order = sorted(range(len(images)), key=lambda i: images[i].tobytes())
    return images[order], labels[order]


def test_tfds_builder_on_local_files_equals_the_folder_loader(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    write_folder(str(tmp_path))
    train, test = data.load_tfds(tfds.ImageFolder(str(tmp_path)))
    reference = data.load_image_folder(str(tmp_path))
    for (x, y), (x_ref, y_ref) in zip((train, test), reference):
        # TFDS' image folder yields the files in an order of its own.
        x, y = _sorted_by_pixels(x, y)
        x_ref, y_ref = _sorted_by_pixels(x_ref, y_ref)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    with pytest.raises(ValueError, match="no split 'holdout'"):
        data.load_tfds(tfds.ImageFolder(str(tmp_path)), test_split="holdout")


def test_tfds_name_without_prepared_data_does_not_download(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="not prepared .* `download=False`"):
        data.load_tfds("fashion_mnist", data_dir=str(tmp_path))
    assert not any(files for _, _, files in os.walk(tmp_path))


def test_image_folder_takes_an_int_as_a_square_size(tmp_path):
    write_folder(str(tmp_path), sizes=((6, 5), (9, 12)))
    (x, _), (xt, _) = data.load_image_folder(str(tmp_path), image_size=4)
    (x_pair, _), _ = data.load_image_folder(str(tmp_path), image_size=(4, 4))
    assert x.shape == (6, 4, 4, 3) and xt.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(x, x_pair)


@pytest.mark.parametrize("image_size", [0, -3, True, "64", (4,), (4, 4, 4), (4.0, 4), (4, True)])
def test_image_folder_rejects_bad_image_sizes_naming_the_argument(image_size, tmp_path):
    write_folder(str(tmp_path))
    with pytest.raises(ValueError, match="`image_size` must be an int > 0 or a pair of ints"):
        data.load_image_folder(str(tmp_path), image_size=image_size)


def test_image_folder_rejects_boolean_channels(tmp_path):
    write_folder(str(tmp_path))
    with pytest.raises(ValueError, match="`channels` must be 1 or 3, got True"):
        data.load_image_folder(str(tmp_path), channels=True)


def test_corrupt_image_file_error_names_the_file(tmp_path):
    write_folder(str(tmp_path))
    bad = os.path.join(str(tmp_path), "train", "dog", "broken.png")
    with open(bad, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=re.escape(f"Cannot decode the image file '{bad}': ")):
        data.load_image_folder(str(tmp_path))
