"""IDX reading against files written here, errors, the real Fashion-MNIST."""

import gzip
import os

import numpy as np
import pytest

from keras_contrast import data
from keras_contrast.data import fashion_mnist


def write_idx(path, array):
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_dataset(folder, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    for key, name in fashion_mnist.FILES.items():
        write_idx(os.path.join(folder, name), arrays[key])
    return arrays


def test_reads_files_written_by_numpy(tmp_path):
    arrays = write_dataset(tmp_path)
    (x, y), (xt, yt) = data.load_fashion_mnist(str(tmp_path))
    np.testing.assert_array_equal(x, arrays["train_images"])
    np.testing.assert_array_equal(y, arrays["train_labels"])
    np.testing.assert_array_equal(xt, arrays["test_images"])
    assert x.dtype == np.uint8 and xt.shape == (4, 28, 28)


def test_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as handle:
        handle.write((1234).to_bytes(4, "big") + b"\0" * 8)
    with pytest.raises(ValueError, match="magic number 1234"):
        fashion_mnist.read_idx(str(path))
    with gzip.open(path, "wb") as handle:
        handle.write((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\0" * 3)
    with pytest.raises(ValueError, match="holds 3 bytes"):
        fashion_mnist.read_idx(str(path))
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path / "empty"))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    (x, y), (xt, yt) = data.load_fashion_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)


def test_digits_split():
    (x, y), (xt, yt) = data.load_digits(test_fraction=0.25)
    assert len(x) + len(xt) == 1797 and x.dtype == np.uint8 and x.max() == 255
    assert x.shape[1:] == (8, 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"test_fraction": "0.25"}, "`test_fraction` must be a number in \\(0, 1\\), got '0.25'"),
     ({"test_fraction": True}, "`test_fraction` must be a number in \\(0, 1\\), got True"),
     ({"seed": "0"}, "`seed` must be an int, got '0'")],
)
def test_digits_rejects_strings_and_booleans(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_digits(**kwargs)
