"""Users' own images: a folder of class subfolders, or a TensorFlow
Datasets dataset, as the uint8 arrays the contrastive pipelines take."""

import os
import re

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.data.sources import IMAGE_EXTENSIONS
from keras_contrast.data.sources import TEST_SPLITS
from keras_contrast.data.sources import check_image_size as _check_image_size
from keras_contrast.data.tfds_source import prepared_builder


def _read_split(directory, class_names, image_size, channels):
    images, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(directory, name)
        if not os.path.isdir(folder):
            continue
        for filename in sorted(os.listdir(folder)):
            if not filename.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(folder, filename)
            try:
                image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                           expand_animations=False)
            except tf.errors.OpError as error:
                # The decoder's reason, without TF's "{{function_node ...}}"
                # prefix and "[Op:DecodeImage] name:" suffix.
                reason = re.sub(r"^\{\{.*?\}\}\s*", "", str(error.message))
                reason = re.sub(r"\s*\[Op:.*$", "", reason, flags=re.S).strip()
                reason = reason.splitlines()[0].rstrip(".") if reason else type(error).__name__
                raise ValueError(f"Cannot decode the image file {path!r}: {reason}.") from None
            if image_size is not None:
                image = tf.image.resize(image, image_size, antialias=True)
                image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            elif images and image.shape != images[0].shape:
                raise ValueError(
                    f"Images in {directory!r} differ in size ({path!r} is {image.shape}, "
                    f"the first one {images[0].shape}); pass `image_size=(height, width)`."
                )
            images.append(image.numpy())
            labels.append(label)
    if not images:
        raise ValueError(f"`directory` {directory!r} holds no images with extensions "
                         f"{IMAGE_EXTENSIONS} in its class subfolders.")
    return np.stack(images), np.asarray(labels, np.int64)


@keras_contrast_export("keras_contrast.data.load_image_folder")
def load_image_folder(directory, image_size=None, channels=3):
    """Loads `directory/train/<class>/*` and `directory/test/<class>/*`.

    Class `i` is the i-th subfolder name of `train/` in sorted order, in
    both splits (`val/` or `validation/` is accepted in place of `test/`).
    Everything is decoded into memory: meant for datasets of the size the
    contrastive pipelines here take as arrays. For larger folders stream
    them instead: pass the folder itself to `two_view_dataset` and
    `image_dataset` (or build a `FolderSource`), which decodes the same
    pixels inside `tf.data`.

    Args:
        directory: the folder holding `train/` and `test/`.
        image_size: `(height, width)` to resize every image to (antialiased),
            or an int `s` for `(s, s)`; `None` keeps the files' size, which
            must then be the same for all.
        channels: 1 (grayscale) or 3 (RGB), what the images are decoded to.

    Raises:
        ValueError: for a bad layout or argument, or a file that does not
            decode as an image (the message names the file).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 `(n, h, w, channels)`
        images and int64 labels.

    Example:
    >>> (x, y), (xt, yt) = keras_contrast.data.load_image_folder(
    ...     "flowers", image_size=(64, 64))
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels!r}.")
    image_size = _check_image_size(image_size)
    if not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"`directory` must be a path, got {directory!r}.")
    train_directory = os.path.join(directory, "train")
    if not os.path.isdir(train_directory):
        raise ValueError(f"`directory` {directory!r} has no `train/` subfolder of classes.")
    test_directory = next((os.path.join(directory, split) for split in TEST_SPLITS
                           if os.path.isdir(os.path.join(directory, split))), None)
    if test_directory is None:
        raise ValueError(f"`directory` {directory!r} has none of the subfolders {TEST_SPLITS}.")
    class_names = sorted(name for name in os.listdir(train_directory)
                         if os.path.isdir(os.path.join(train_directory, name)))
    unknown = sorted(set(name for name in os.listdir(test_directory)
                         if os.path.isdir(os.path.join(test_directory, name))) - set(class_names))
    if unknown:
        raise ValueError(f"{test_directory!r} has classes missing from `train/`: {unknown}.")
    train = _read_split(train_directory, class_names, image_size, channels)
    test = _read_split(test_directory, class_names, image_size, channels)
    return train, test


@keras_contrast_export("keras_contrast.data.load_tfds")
def load_tfds(name, data_dir=None, download=False, train_split="train", test_split="test",
              image_key="image", label_key="label"):
    """Loads a TensorFlow Datasets image dataset as arrays.

    Needs the `tensorflow-datasets` package (`pip install
    keras_contrast[tfds]`). By default nothing is downloaded: the dataset
    must already be prepared in `data_dir` (run once with `download=True`
    on a machine with internet).

    Args:
        name: a registered dataset name (`"cifar10"`) or a
            `tfds.core.DatasetBuilder` (e.g. `tfds.ImageFolder(path)`).
        data_dir: where the prepared dataset lives (TFDS' default if `None`).
        download: let TFDS download and prepare the dataset when missing.
        train_split: the split to train on.
        test_split: the split to evaluate on.
        image_key: the feature holding the image.
        label_key: the feature holding the integer label.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images and int64
        labels, as `load_image_folder` returns them.

    Example:
    >>> (x, y), (xt, yt) = keras_contrast.data.load_tfds(
    ...     "cifar10", data_dir="~/tensorflow_datasets")
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("`load_tfds` needs tensorflow-datasets: "
                          "pip install 'keras_contrast[tfds]'.") from error
    if download:
        builder = tfds.builder(name, data_dir=data_dir) if isinstance(name, str) else name
        builder.download_and_prepare()
    else:
        builder = prepared_builder(name, data_dir)
    splits = []
    for split in (train_split, test_split):
        if split not in builder.info.splits:
            raise ValueError(f"The TFDS dataset {builder.name!r} has no split {split!r}; it has "
                             f"{sorted(builder.info.splits)}.")
        dataset = builder.as_dataset(split=split, shuffle_files=False)
        images, labels = [], []
        for example in tfds.as_numpy(dataset):
            images.append(example[image_key])
            labels.append(example[label_key])
        splits.append((np.stack(images).astype(np.uint8), np.asarray(labels, np.int64)))
    return splits[0], splits[1]
