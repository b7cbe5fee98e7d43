"""The datasets of the command line, as arrays."""

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
