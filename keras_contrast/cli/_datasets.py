"""The datasets of the command line: small ones as arrays, the rest streamed."""

import dataclasses
import os

import numpy as np
from absl import logging as absl_logging

from keras_contrast import data
from keras_contrast.data import fashion_mnist
from keras_contrast.cli._errors import UsageError


def load_images(name, train_size=None, image_size=None, data_dir=None, download=False):
    """Loads `--dataset name` as uint8 images.

    Args:
        name: `fashion_mnist`, `digits`, `tfds:NAME`, a folder of the four
            Fashion-MNIST IDX files or a folder of `train/` and `test/` class
            folders.
        train_size: keep the first `train_size` training images (`None`: all).
        image_size: resize the images of a class-folder dataset to this square size.
        data_dir: where a `tfds:NAME` dataset is prepared.
        download: let TFDS download and prepare a `tfds:NAME` dataset.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images `(n, H, W, C)` uint8,
        labels int64.

    Raises:
        UsageError: the dataset cannot be read, in one line.
    """
    if name == "fashion_mnist":
        (x, y), (xt, yt) = data.load_fashion_mnist()
    elif name == "digits":
        (x, y), (xt, yt) = data.load_digits()
    elif name.startswith("tfds:"):
        (x, y), (xt, yt) = _load_tfds(name, data_dir, download)
    elif all(os.path.exists(os.path.join(name, f)) for f in fashion_mnist.FILES.values()):
        (x, y), (xt, yt) = data.load_fashion_mnist(name)
    elif os.path.isdir(os.path.join(name, "train")):
        size = None if image_size is None else (image_size, image_size)
        try:
            (x, y), (xt, yt) = data.load_image_folder(name, image_size=size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        raise UsageError(f"--dataset folder {name!r} holds neither Fashion-MNIST IDX files "
                         "nor train/ and test/ class folders")
    if train_size:
        x, y = x[:train_size], y[:train_size]
    add_channel = (lambda a: a[..., None]) if x.ndim == 3 else (lambda a: a)
    return (add_channel(x), y.astype(np.int64)), (add_channel(xt), yt.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class ImageData:
    """The training and test split of `--dataset`.

    Attributes:
        train, test: `(images, labels)` uint8/int64 arrays for the datasets
            held in memory (Fashion-MNIST, digits), else streaming
            `keras_contrast.data.ImageSource`s.
        image_shape: `(H, W, C)` of the images the model sees.
    """

    train: object
    test: object
    image_shape: tuple

    @property
    def streaming(self):
        return isinstance(self.train, data.ImageSource)

    @property
    def num_train(self):
        return self.train.num_examples if self.streaming else len(self.train[0])

    @property
    def num_test(self):
        return self.test.num_examples if self.streaming else len(self.test[0])


STREAMING_PREFIXES = ("tfrecord:", "tfds:")


def is_streaming(name):
    """Whether `--dataset name` streams (a class-folder dataset, TFRecords, TFDS)."""
    if name.startswith(STREAMING_PREFIXES):
        return True
    return (name not in ("fashion_mnist", "digits") and os.path.isdir(os.path.join(name, "train"))
            and not all(os.path.exists(os.path.join(name, f)) for f in fashion_mnist.FILES.values()))


def open_images(name, image_size=None, channels=3, data_dir=None, download=False):
    """`--dataset name`: Fashion-MNIST and digits as arrays (`load_images`),
    class folders, `tfrecord:GLOB` and `tfds:NAME` as streaming sources.

    Args:
        name: as for `load_images`, or `tfrecord:GLOB` where GLOB holds
            `{split}` (`records/{split}-*.tfrecord`: `train` and `test`).
        image_size: resize the images of a streaming dataset to this square size.
        channels: 1 or 3, what a streaming dataset's images are decoded to.
        data_dir: where a `tfds:NAME` dataset is prepared.
        download: let TFDS download and prepare a `tfds:NAME` dataset.

    Returns:
        An `ImageData`.

    Raises:
        UsageError: the dataset cannot be read, in one line.
    """
    if not is_streaming(name):
        train, test = load_images(name, None, image_size, data_dir, download)
        return ImageData(train, test, tuple(train[0].shape[1:]))
    if name.startswith("tfds:"):
        absl_logging.set_verbosity(absl_logging.ERROR)  # one-line errors, no TFDS chatter
        if download:
            _load_tfds_builder(name, data_dir)
    size = None if image_size is None else (image_size, image_size)
    try:
        train, test = (data.as_source(name, split=split, image_size=size, channels=channels,
                                      data_dir=data_dir) for split in ("train", "test"))
    except (ImportError, ValueError) as error:
        message = str(error).splitlines()[0]
        hint = " (CLI: --data-dir, --download)" if name.startswith("tfds:") else ""
        raise UsageError(f"--dataset {name}: {message}{hint}") from None
    if train.image_shape is None:
        raise UsageError(f"--dataset {name}: its images differ in size; pass --image-size")
    return ImageData(train, test, tuple(train.image_shape))


def _load_tfds_builder(name, data_dir):
    """Downloads and prepares `tfds:NAME` (`--download`)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UsageError(f"--dataset {name}: needs tensorflow-datasets: "
                         "pip install 'keras_contrast[tfds]'") from None
    tfds.builder(name[len("tfds:"):], data_dir=data_dir).download_and_prepare()


def _load_tfds(name, data_dir, download):
    absl_logging.set_verbosity(absl_logging.ERROR)  # one-line errors, no TFDS chatter
    try:
        return data.load_tfds(name[len("tfds:"):], data_dir=data_dir, download=download)
    except (ImportError, ValueError) as error:
        raise UsageError(f"--dataset {name}: {str(error).splitlines()[0]} "
                         "(CLI: --data-dir, --download)") from None


def wordnet_split(train_size, seed):
    """The WordNet pairs of `--model dual`: the same split for `train` and
    `evaluate` given the same arguments.

    Args:
        train_size: at most this many training pairs (`None`: all).
        seed: the seed of the split.

    Returns:
        `(train_pairs, held_out)`: lists of pairs; `held_out` holds at most
        1,000 pairs of synsets the training pairs do not hold.
    """
    train_pairs, held_out = data.load_wordnet_pairs(max_pairs=train_size, seed=seed)
    return train_pairs, held_out[:1000]
