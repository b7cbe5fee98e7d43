"""TFDS builders streamed through `as_dataset`, offline: `tfds.ImageFolder`
on PNGs the test writes, and `tfds.testing.mock_data` for a registered
name. References: the written files, and TFDS' own decoding of the same
split in the same order."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast.data.tfds_source import TFDSSource

tfds = pytest.importorskip("tensorflow_datasets")


def ids_of(dataset):
    return [int(e["id"]) for e in dataset.as_numpy_iterator()]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/{train,test}/{ant,bee,cat}/*.png; {path: (image, label)}."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    written = {}
    for split, count in (("train", 8), ("test", 2)):
        for label, name in enumerate(("ant", "bee", "cat")):
            os.makedirs(root / split / name)
            for i in range(count):
                image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                path = str(root / split / name / f"{i:02d}.png")
                tf.io.write_file(path, tf.io.encode_png(image))
                written[path] = (image, label)
    return str(root), written


def tfds_reference(builder, split="train"):
    """TFDS' own decoding of `split`, in record order."""
    return list(tfds.as_numpy(builder.as_dataset(
        split=split, shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1))))


def test_image_folder_streams_the_written_pixels_and_labels_in_record_order(image_folder):
    root, written = image_folder
    builder = tfds.ImageFolder(root)
    source = TFDSSource(builder)
    assert (source.num_examples, source.image_shape, source.random_access) == (
        24, (8, 8, 3), False)
    assert source.class_names == ("ant", "bee", "cat")
    elements = list(source.examples().as_numpy_iterator())
    reference = tfds_reference(builder)
    assert [int(e["id"]) for e in elements] == list(range(24))
    for element, record in zip(elements, reference):
        image, label = written[record["image/filename"].decode()]
        np.testing.assert_array_equal(element["image"], image)
        assert element["label"] == label and element["label"].dtype == np.int64
    test = TFDSSource(builder, split="test", image_size=(4, 4), channels=1)
    assert test.num_examples == 6 and test.image_shape == (4, 4, 1)
    assert [e["image"].shape for e in test.examples().as_numpy_iterator()] == [(4, 4, 1)] * 6


def test_image_folder_order_is_keyed_and_shards_cover_every_id(image_folder):
    root, _ = image_folder
    source = TFDSSource(tfds.ImageFolder(root), shuffle_buffer=10)
    first = ids_of(source.examples(order_key=(2, 0)))
    assert first == ids_of(TFDSSource(tfds.ImageFolder(root), shuffle_buffer=10)
                           .examples(order_key=(2, 0)))
    second = ids_of(source.examples(order_key=(2, 1)))
    assert first != second and first != list(range(24))
    assert sorted(first) == sorted(second) == list(range(24))
    # The buffer is bounded: each run of 10 records stays within itself.
    assert [sorted(first[i:i + 10]) for i in (0, 10)] == [list(range(0, 10)),
                                                          list(range(10, 20))]
    seen = []
    for index in range(2):
        ids = ids_of(source.examples((2, 0), shard_index=index, shard_count=2))
        assert all(i % 2 == index for i in ids)
        seen += ids
    assert sorted(seen) == list(range(24))


def test_missing_keys_are_value_errors_listing_the_features(image_folder):
    root, _ = image_folder
    with pytest.raises(ValueError, match=re.escape(
            "`image_key`='img' is not a feature of the TFDS dataset 'image_folder'; its "
            "features are ['image', 'image/filename', 'label']")):
        TFDSSource(tfds.ImageFolder(root), image_key="img")
    with pytest.raises(ValueError, match="`label_key`='class' is not a feature"):
        TFDSSource(tfds.ImageFolder(root), label_key="class")
    with pytest.raises(ValueError, match=r"has no split 'holdout'"):
        TFDSSource(tfds.ImageFolder(root), split="holdout")


def test_name_without_prepared_data_keeps_the_load_tfds_message(tmp_path):
    with pytest.raises(ValueError, match=r"^The TFDS dataset 'fashion_mnist' is not prepared "
                                         r"in .* and `download=False`; prepare it there"):
        TFDSSource("fashion_mnist", data_dir=str(tmp_path))
    assert not any(files for _, _, files in os.walk(tmp_path))


@pytest.fixture
def mocked_mnist(tmp_path):
    """`tfds.testing.mock_data` serving 12 random MNIST-like examples for the
    registered name "mnist", from metadata written under `tmp_path` (this
    TFDS ships none, and without it the mock has no split sizes)."""
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name="train", shard_lengths=[12], num_bytes=0)]))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(tmp_path)):
        yield str(tmp_path)


def test_registered_name_through_mock_data_equals_tfds_decoding(mocked_mnist):
    source = TFDSSource("mnist", data_dir=mocked_mnist, channels=1)
    assert source.num_examples == 12 and source.image_shape == (28, 28, 1)
    assert source.class_names == tuple(str(i) for i in range(10))
    reference = tfds_reference(tfds.builder("mnist", data_dir=mocked_mnist))
    elements = list(source.examples().as_numpy_iterator())
    assert [int(e["id"]) for e in elements] == list(range(12))
    for element, record in zip(elements, reference):
        np.testing.assert_array_equal(element["image"], record["image"])
        assert element["label"] == record["label"]
    rgb = list(TFDSSource("mnist", data_dir=mocked_mnist).examples().as_numpy_iterator())
    for element, record in zip(rgb, reference):
        np.testing.assert_array_equal(element["image"], np.repeat(record["image"], 3, -1))
    halves = [ids_of(source.examples((0, 4), i, 2)) for i in range(2)]
    assert sorted(halves[0] + halves[1]) == list(range(12))
    assert all(i % 2 == 0 for i in halves[0]) and halves[0] != sorted(halves[0])
