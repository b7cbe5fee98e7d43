"""Fashion-MNIST from the original IDX files (offline: Debian's
`dataset-fashion-mnist` package), and scikit-learn's digits."""

import gzip
import os

import numpy as np

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_int
from keras_contrast.checks import is_number

DEFAULT_DIRECTORY = "/usr/share/datasets/fashion-mnist"
KERAS_CACHE = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
keras_contrast_export("keras_contrast.data.FASHION_MNIST_CLASSES")(CLASS_NAMES)
_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension; images: 3


def read_idx(path):
    """Reads an IDX file (optionally gzip-compressed) of unsigned bytes.

    The format (LeCun's MNIST files): a big-endian int32 magic number (2049
    for a label vector, 2051 for an image array), one big-endian int32 per
    dimension, then the bytes.

    Args:
        path: file path (`.gz` or raw).

    Returns:
        A uint8 NumPy array of the stored shape.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for an IDX file ({len(data)} bytes).")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(
            f"{path}: not an IDX file of unsigned bytes (magic number {magic}, expected "
            "2049 for labels or 2051 for images)."
        )
    rank = _MAGIC[magic]
    header = 4 + 4 * rank
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find_directory(directory):
    candidates = [directory] if directory else [DEFAULT_DIRECTORY, KERAS_CACHE]
    for candidate in candidates:
        if candidate and all(os.path.exists(os.path.join(candidate, f)) for f in FILES.values()):
            return candidate
    return None


@keras_contrast_export("keras_contrast.data.load_fashion_mnist")
def load_fashion_mnist(directory=None, download=False):
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 28x28 grey images
    of 10 clothing classes, read from the original IDX `.gz` files.

    Looks in `directory`, else in `/usr/share/datasets/fashion-mnist`
    (Debian: `apt install dataset-fashion-mnist`), else in Keras' cache
    (`~/.keras/datasets/fashion-mnist`); with `download=True` it finally
    asks `keras.datasets.fashion_mnist` (internet).

    Args:
        directory: a folder holding the four IDX files, or None.
        download: bool. Allow Keras to download the files.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images `(n, 28, 28)`
        and uint8 labels `(n,)`.

    Raises:
        FileNotFoundError: the files are nowhere to be found.
    """
    found = _find_directory(directory)
    if found is None:
        if download:
            import keras

            return keras.datasets.fashion_mnist.load_data()
        where = directory or f"{DEFAULT_DIRECTORY} or {KERAS_CACHE}"
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files ({', '.join(FILES.values())}) not found in {where}. "
            "Install them with `apt install dataset-fashion-mnist` (Debian/Ubuntu), copy "
            "them into a folder and pass it, or allow `download=True`."
        )
    arrays = {key: read_idx(os.path.join(found, name)) for key, name in FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise ValueError(f"{found}: {split} images and labels differ in number.")
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"], arrays["test_labels"])


@keras_contrast_export("keras_contrast.data.load_digits")
def load_digits(test_fraction=0.25, seed=0):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes) as uint8
    `(n, 8, 8)` images in [0, 255], split into train and test.

    Args:
        test_fraction: float in (0, 1).
        seed: split seed.

    Returns:
        `((x_train, y_train), (x_test, y_test))`.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # an optional dependency
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'keras-contrast[examples]'."
        ) from error
    if not (is_number(test_fraction) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"`test_fraction` must be a number in (0, 1), got {test_fraction!r}.")
    if not is_int(seed):
        raise ValueError(f"`seed` must be an int, got {seed!r}.")
    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(round(len(images) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return (images[train], digits.target[train].astype(np.uint8)), (
        images[test], digits.target[test].astype(np.uint8))
