"""TFRecord shards: the writer and the streaming source, on files the test
writes (no downloads). References are the input arrays and the files'
own decoded pixels, never the reader."""

import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast.data.folders import load_image_folder
from keras_contrast.data.pipeline import epoch_permutation
from keras_contrast.data.sources import FolderSource
from keras_contrast.data.tfrecords import TFRecordSource
from keras_contrast.data.tfrecords import write_tfrecords


def arrays(count=30, shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (count,) + shape, dtype=np.uint8),
            rng.integers(0, 5, count).astype(np.int64))


def read_all(dataset):
    return [{k: v for k, v in e.items()} for e in dataset.as_numpy_iterator()]


def ids_of(dataset):
    return [int(e["id"]) for e in dataset.as_numpy_iterator()]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """30 images written to 6 shards; (images, labels, glob, paths)."""
    x, y = arrays()
    prefix = str(tmp_path_factory.mktemp("records") / "train")
    paths = write_tfrecords((x, y), prefix, num_shards=6)
    return x, y, prefix + "-*", paths


def test_writer_names_shards_and_writes_round_robin_records_with_an_index(shards, tmp_path):
    x, y, _, paths = shards
    assert [os.path.basename(p) for p in paths] == [
        f"train-{i:05d}-of-00006.tfrecord" for i in range(6)]
    for shard, path in enumerate(paths):
        records = [tf.train.Example.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(path)]
        stored = [r.features.feature["id"].int64_list.value[0] for r in records]
        assert stored == list(range(shard, 30, 6))
        for record, id_ in zip(records, stored):
            feature = record.features.feature
            assert feature["label"].int64_list.value[0] == y[id_]
            png = feature["image"].bytes_list.value[0]
            assert png.startswith(b"\x89PNG")
            np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), x[id_])
    with open(os.path.join(os.path.dirname(paths[0]), "train.json")) as handle:
        index = json.load(handle)
    assert index["counts"] == [5] * 6 and index["num_examples"] == 30
    assert index["image_shape"] == [8, 8, 3] and index["class_names"] == list("01234")


def test_round_trip_from_arrays_gives_back_ids_labels_and_pixels(shards):
    x, y, pattern, _ = shards
    source = TFRecordSource(pattern)
    assert (source.num_examples, source.image_shape, source.random_access) == (
        30, (8, 8, 3), False)
    assert source.class_names == ("0", "1", "2", "3", "4")
    elements = read_all(source.examples())
    assert [e["id"] for e in elements] == list(range(30))  # order_key None: id order
    for e in elements:
        assert e["image"].dtype == np.uint8 and e["label"].dtype == np.int64
        np.testing.assert_array_equal(e["image"], x[e["id"]])
        assert e["label"] == y[e["id"]]


def test_keyed_order_is_deterministic_differs_by_epoch_and_covers_every_id(shards):
    _, _, pattern, _ = shards
    source = TFRecordSource(pattern, shuffle_buffer=7, cycle_length=2)
    first = ids_of(source.examples(order_key=(3, 0)))
    again = ids_of(TFRecordSource(pattern, shuffle_buffer=7, cycle_length=2)
                   .examples(order_key=(3, 0)))
    other = ids_of(source.examples(order_key=(3, 1)))
    assert first == again
    assert first != other and first != list(range(30))
    assert sorted(first) == sorted(other) == list(range(30))
    # The file order is the keyed shard permutation: with a cycle of 2 and no
    # buffer, the first two records come from its first two files (ids = shard).
    plain = ids_of(TFRecordSource(pattern, shuffle_buffer=1, cycle_length=2)
                   .examples(order_key=(3, 0)))
    assert plain[:2] == [int(f) for f in epoch_permutation(6, 3, 0)[:2]]


def test_tf_global_seed_does_not_change_the_order(shards):
    _, _, pattern, _ = shards
    source = TFRecordSource(pattern, shuffle_buffer=10)
    before = ids_of(source.examples(order_key=(1, 2)))
    tf.random.set_seed(1234)
    try:
        after = ids_of(source.examples(order_key=(1, 2)))
    finally:
        tf.random.set_seed(None)
    assert before == after


@pytest.mark.parametrize("shard_count", [2, 3])
def test_file_shards_are_disjoint_and_cover_every_id(shards, shard_count):
    _, _, pattern, _ = shards
    source = TFRecordSource(pattern, shuffle_buffer=4)
    seen = []
    for index in range(shard_count):
        ids = ids_of(source.examples((5, 1), shard_index=index, shard_count=shard_count))
        # Shard i reads the files i, i + count, ...: ids ≡ file (mod 6).
        assert {i % 6 for i in ids} == set(range(index, 6, shard_count))
        seen += ids
    assert sorted(seen) == list(range(30))


def test_more_shards_than_files_is_an_error_naming_the_counts(shards):
    _, _, pattern, _ = shards
    with pytest.raises(ValueError, match=r"`shard_count`=7 exceeds the 6 TFRecord files"):
        TFRecordSource(pattern).examples(shard_index=0, shard_count=7)


def write_folder(root, channels=3, count=4):
    """root/train/{ant,bee,cat}/*.png; the class-major sorted images."""
    rng = np.random.default_rng(1)
    images = []
    for name in ("ant", "bee", "cat"):
        os.makedirs(os.path.join(root, "train", name))
        for i in range(count):
            image = rng.integers(0, 256, (8, 8, channels), dtype=np.uint8)
            tf.io.write_file(os.path.join(root, "train", name, f"{i:02d}.png"),
                             tf.io.encode_png(image))
            images.append(image)
    return np.stack(images), np.repeat(np.arange(3), count)


@pytest.mark.parametrize("image_format", ["png", "original"])
def test_round_trip_from_a_folder_matches_its_sorted_files(tmp_path, image_format):
    x, y = write_folder(str(tmp_path / "folder"))
    paths = write_tfrecords(str(tmp_path / "folder"), str(tmp_path / "rec" / "train"),
                            num_shards=5, image_format=image_format)
    assert len(paths) == 5
    source = TFRecordSource(str(tmp_path / "rec" / "train-*"))
    assert source.class_names == ("ant", "bee", "cat") and source.num_examples == 12
    elements = read_all(source.examples())
    assert [e["id"] for e in elements] == list(range(12))
    np.testing.assert_array_equal(np.stack([e["image"] for e in elements]), x)
    np.testing.assert_array_equal([e["label"] for e in elements], y)
    # And the folder source (the other reader of the same files) agrees.
    folder = read_all(FolderSource(str(tmp_path / "folder")).examples())
    np.testing.assert_array_equal(np.stack([e["image"] for e in folder]), x)


def test_resize_and_grayscale_equal_load_image_folder(tmp_path):
    write_folder(str(tmp_path / "folder"))
    os.makedirs(tmp_path / "folder" / "test" / "ant")
    tf.io.write_file(str(tmp_path / "folder" / "test" / "ant" / "0.png"),
                     tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    write_tfrecords(str(tmp_path / "folder"), str(tmp_path / "rec"), num_shards=2)
    source = TFRecordSource(str(tmp_path / "rec-*"), image_size=(5, 3), channels=1)
    assert source.image_shape == (5, 3, 1)
    images = np.stack([e["image"] for e in read_all(source.examples())])
    (reference, _), _ = load_image_folder(str(tmp_path / "folder"), image_size=(5, 3),
                                          channels=1)
    np.testing.assert_array_equal(images, reference)


def write_examples(path, features_list):
    with tf.io.TFRecordWriter(path) as writer:
        for features in features_list:
            feature = {}
            for key, value in features.items():
                if isinstance(value, bytes):
                    feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
                else:
                    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def test_foreign_files_are_numbered_in_record_order(tmp_path):
    x, y = arrays(count=7)
    for name, rows in (("b.tfrecord", range(4, 7)), ("a.tfrecord", range(0, 4))):
        write_examples(str(tmp_path / name), [
            {"image": tf.io.encode_png(x[i]).numpy(), "label": int(y[i])} for i in rows])
    source = TFRecordSource(str(tmp_path / "*.tfrecord"))
    assert source.num_examples == 7 and source.class_names is None and not source.stored_ids
    elements = read_all(source.examples())
    assert [e["id"] for e in elements] == list(range(7))
    np.testing.assert_array_equal(np.stack([e["image"] for e in elements]), x)
    assert sorted(ids_of(source.examples((0, 0)))) == list(range(7))


def test_missing_feature_is_a_value_error_naming_it(tmp_path):
    x, _ = arrays(count=2)
    write_examples(str(tmp_path / "a.tfrecord"),
                   [{"image": tf.io.encode_png(x[0]).numpy(), "class": 1}])
    with pytest.raises(ValueError, match=r"without the feature 'label' .*\['class', 'image'\]"):
        TFRecordSource(str(tmp_path / "a.tfrecord"))
    write_examples(str(tmp_path / "b.tfrecord"), [{"label": 1}])
    with pytest.raises(ValueError, match="without the feature 'image'"):
        TFRecordSource(str(tmp_path / "b.tfrecord"))


def test_glob_matching_nothing_is_a_value_error_naming_it(tmp_path):
    pattern = str(tmp_path / "none-*.tfrecord")
    with pytest.raises(ValueError, match=re.escape(f"`pattern` {pattern!r} matches no")):
        TFRecordSource(pattern)


def corrupt_shards(tmp_path):
    x, y = arrays(count=8)
    features = [{"image": tf.io.encode_png(x[i]).numpy(), "label": int(y[i])} for i in range(8)]
    features[5]["image"] = b"\x89PNG\r\n\x1a\n not really a png"
    path = str(tmp_path / "bad.tfrecord")
    write_examples(path, features)
    return x, path


def test_corrupt_image_raises_naming_the_shard_file_and_id(tmp_path):
    _, path = corrupt_shards(tmp_path)
    source = TFRecordSource(path)
    for order_key in (None, (0, 0)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=re.escape(f"record 5 (id 5) of the TFRecord file {path}: ")):
            ids_of(source.examples(order_key))


def test_corrupt_image_is_skipped_and_counted_with_on_error_skip(tmp_path, caplog):
    x, path = corrupt_shards(tmp_path)
    source = TFRecordSource(path, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="keras_contrast.data"):
        elements = read_all(source.examples())
    assert [e["id"] for e in elements] == [0, 1, 2, 3, 4, 6, 7]
    for e in elements:
        np.testing.assert_array_equal(e["image"], x[e["id"]])
    assert source.skipped == 1
    assert "id 5" in caplog.text and "1 skipped so far" in caplog.text


def test_truncated_file_is_not_silently_shorter(tmp_path):
    x, y = arrays(count=6)
    path = str(tmp_path / "a.tfrecord")
    write_examples(path, [{"image": tf.io.encode_png(x[i]).numpy(), "label": int(y[i])}
                          for i in range(6)])
    source = TFRecordSource(path)  # counted while whole
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[:-40])
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(path)):
        ids_of(source.examples())


def test_mixed_sizes_need_image_size(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((8, 8, 3), (6, 9, 3))]
    write_examples(str(tmp_path / "a.tfrecord"), [
        {"image": tf.io.encode_png(im).numpy(), "label": 0} for im in images])
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_size"):
        ids_of(TFRecordSource(str(tmp_path / "a.tfrecord")).examples())
    source = TFRecordSource(str(tmp_path / "a.tfrecord"), image_size=4)
    assert [e["image"].shape for e in read_all(source.examples())] == [(4, 4, 3)] * 2


def test_writer_rejects_bad_arguments(tmp_path):
    x, y = arrays(count=3)
    with pytest.raises(ValueError, match=r"`num_shards`=4 exceeds the 3 examples"):
        write_tfrecords((x, y), str(tmp_path / "r"), num_shards=4)
    with pytest.raises(ValueError, match="`image_format` must be one of"):
        write_tfrecords((x, y), str(tmp_path / "r"), image_format="webp")
    with pytest.raises(ValueError, match="needs a folder"):
        write_tfrecords((x, y), str(tmp_path / "r"), num_shards=1, image_format="original")
    with pytest.raises(ValueError, match="`source` images must be uint8"):
        write_tfrecords((x.astype(np.float32), y), str(tmp_path / "r"), num_shards=1)
    with pytest.raises(ValueError, match="`num_shards` must be an int > 0"):
        write_tfrecords((x, y), str(tmp_path / "r"), num_shards=0)


def test_two_view_batches_equal_the_arrays_batches_in_id_order(shards):
    from keras_contrast.data.pipeline import two_view_dataset

    x, y, pattern, _ = shards
    streamed = list(two_view_dataset("tfrecord:" + pattern, 10, seed=4, epoch=2, labels=True,
                                     shuffle=False).as_numpy_iterator())
    reference = list(two_view_dataset(x, 10, seed=4, epoch=2, labels=y,
                                      shuffle=False).as_numpy_iterator())
    assert len(streamed) == len(reference) == 3
    for (views, labels), (views_ref, labels_ref) in zip(streamed, reference):
        np.testing.assert_array_equal(views, views_ref)
        np.testing.assert_array_equal(labels, labels_ref)


def test_record_without_a_feature_later_on_names_the_record_and_feature(tmp_path):
    x, y = arrays(count=4)
    features = [{"image": tf.io.encode_png(x[i]).numpy(), "label": int(y[i])} for i in range(4)]
    del features[2]["label"]
    path = str(tmp_path / "a.tfrecord")
    write_examples(path, features)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape(f"Cannot parse record 2 (id 2) of the TFRecord file {path}")
                       + ".*label"):
        ids_of(TFRecordSource(path).examples())
