"""Image sources: a folder's ids, labels and splits follow the sorted
class-major file list, files of every supported format decode to their
pixels, epochs and shards follow the keyed order, bad folders and bad
files fail naming them (or are skipped and logged), and `as_source` maps
each kind of input to its source."""

import logging
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data
from tests.data.pipeline_test import noisy
from tests.data.pipeline_test import write_png_folder


def image_ids_and_labels(dataset):
    elements = [tf.nest.map_structure(lambda t: t.numpy(), x) for x in dataset]
    return ([x["image"] for x in elements], np.array([x["id"] for x in elements]),
            np.array([x["label"] for x in elements]))


def test_folder_ids_are_the_class_major_sorted_file_list(tmp_path):
    images, labels = write_png_folder(str(tmp_path), counts=(2, 3, 2))
    source = data.FolderSource(str(tmp_path))
    assert source.random_access and source.num_examples == 7
    assert source.class_names == ("ant", "bee", "cat") and source.image_shape == (8, 8, 3)
    expected_paths = [os.path.join(str(tmp_path), "train", name, f"{i}.png")
                      for name, count in (("ant", 2), ("bee", 3), ("cat", 2))
                      for i in sorted(str(10 - k) for k in range(count))]
    assert list(source.paths) == expected_paths
    got, ids, got_labels = image_ids_and_labels(source.examples())
    np.testing.assert_array_equal(ids, np.arange(7))
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(np.stack(got), images)


def test_other_splits_keep_the_training_class_numbers(tmp_path):
    write_png_folder(str(tmp_path), counts=(1, 1, 1))
    os.makedirs(tmp_path / "val" / "cat")
    tf.io.write_file(str(tmp_path / "val" / "cat" / "a.png"),
                     tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    source = data.FolderSource(str(tmp_path), split="test")  # falls back to val/
    assert source.split_directory == str(tmp_path / "val")
    np.testing.assert_array_equal(source.labels, [2])
    assert source.class_names == ("ant", "bee", "cat")


def test_examples_follow_the_epoch_permutation_and_shards_partition_it(tmp_path):
    write_png_folder(str(tmp_path), counts=(3, 4, 3))
    source = data.FolderSource(str(tmp_path))
    _, ids, labels = image_ids_and_labels(source.examples(order_key=(4, 2)))
    np.testing.assert_array_equal(ids, data.epoch_permutation(10, 4, 2))
    np.testing.assert_array_equal(labels, source.labels[ids])
    shards = [image_ids_and_labels(source.examples((4, 2), i, 3))[1] for i in range(3)]
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(10))
    np.testing.assert_array_equal(shards[1], ids[1::3])
    with pytest.raises(ValueError, match="`shard_index` must be an int in \\[0, 3\\)"):
        source.examples(shard_index=3, shard_count=3)


def _bmp(pixels):
    """A 24-bit BMP file of RGB `pixels` (bottom-up rows, BGR, 4-byte rows)."""
    height, width, _ = pixels.shape
    row = width * 3 + (-width * 3) % 4
    body = b"".join(pixels[y, :, ::-1].tobytes().ljust(row, b"\0")
                    for y in range(height - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    return header + info + body


def test_jpeg_bmp_and_gif_files_decode_to_their_pixels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    folder = tmp_path / "train" / "mixed"
    os.makedirs(folder)
    bmp = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    (folder / "a.bmp").write_bytes(_bmp(bmp))
    # A GIF of 4 palette colours is lossless.
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [255, 255, 255]], np.uint8)
    gif = palette[rng.integers(0, 4, (5, 7))]
    Image.fromarray(gif).quantize(colors=4).save(folder / "b.gif")
    # JPEG is lossy: its reference is TensorFlow's eager decoder of the same bytes.
    jpeg_bytes = tf.io.encode_jpeg(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    tf.io.write_file(str(folder / "c.JPG"), jpeg_bytes)
    tf.io.write_file(str(folder / "d.jpeg"), jpeg_bytes)
    got, _, _ = image_ids_and_labels(data.FolderSource(str(tmp_path)).examples())
    assert len(got) == 4
    np.testing.assert_array_equal(got[0], bmp)
    np.testing.assert_array_equal(got[1], gif)
    np.testing.assert_array_equal(got[2], tf.io.decode_jpeg(jpeg_bytes).numpy())
    np.testing.assert_array_equal(got[3], got[2])


def test_array_source_keeps_float_arrays_and_reads_by_id():
    images = np.linspace(-0.5, 1.5, 4 * 3 * 3).reshape(4, 3, 3)
    source = data.ArraySource(images, labels=[3, 1, 0, 2])
    assert source.images.dtype == np.float32 and source.image_shape == (3, 3, 1)
    got, ids, labels = image_ids_and_labels(source.examples(order_key=(1, 0)))
    order = data.epoch_permutation(4, 1, 0)
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_array_equal(labels, np.array([3, 1, 0, 2])[order])
    np.testing.assert_array_equal(np.stack(got)[..., 0],
                                  np.clip(images, 0, 1).astype(np.float32)[order])


def test_bad_folders_fail_naming_them(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=f"`directory` '{missing}' is not a folder"):
        data.FolderSource(missing)
    with pytest.raises(ValueError, match="has no `train/` subfolder"):
        data.FolderSource(str(tmp_path))
    os.makedirs(tmp_path / "train")
    with pytest.raises(ValueError, match="`train/` holds no class subfolders"):
        data.FolderSource(str(tmp_path))
    os.makedirs(tmp_path / "train" / "ant")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    empty = str(tmp_path / "train" / "ant")
    with pytest.raises(ValueError, match=f"The class folder '{empty}' holds no images"):
        data.FolderSource(str(tmp_path))
    tf.io.write_file(os.path.join(empty, "1.png"), tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ValueError, match="has no `test/` subfolder \\(`split`='test'\\)"):
        data.FolderSource(str(tmp_path), split="test")
    os.makedirs(tmp_path / "test" / "bird")
    with pytest.raises(ValueError, match=r"missing from `train/`: \['bird'\]"):
        data.FolderSource(str(tmp_path), split="test")


@pytest.mark.parametrize("kwargs,match", [
    ({"image_size": 0}, "`image_size` must be an int > 0 or a pair of ints"),
    ({"image_size": (4, 4, 4)}, "`image_size` must be an int > 0 or a pair of ints"),
    ({"channels": 4}, "`channels` must be 1 or 3, got 4"),
    ({"channels": True}, "`channels` must be 1 or 3, got True"),
    ({"on_error": "warn"}, "`on_error` must be one of"),
    ({"split": ""}, "`split` must be a folder name"),
])
def test_folder_source_rejects_bad_arguments_naming_them(tmp_path, kwargs, match):
    write_png_folder(str(tmp_path), counts=(1, 1, 1))
    with pytest.raises(ValueError, match=match):
        data.FolderSource(str(tmp_path), **kwargs)


def corrupt_folder(root):
    """A folder with one garbage and one truncated PNG among 9 good ones;
    returns their paths."""
    write_png_folder(root, counts=(3, 3, 3))
    garbage = os.path.join(root, "train", "bee", "2.png")
    with open(garbage, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = os.path.join(root, "train", "cat", "3.png")
    content = open(os.path.join(root, "train", "ant", "9.png"), "rb").read()
    with open(truncated, "wb") as handle:
        handle.write(content[: len(content) // 2])
    return garbage, truncated


def test_a_file_that_does_not_decode_stops_the_loop_naming_it(tmp_path):
    garbage, truncated = corrupt_folder(str(tmp_path))
    dataset = data.two_view_dataset(str(tmp_path), 2, shuffle=False, augment=noisy)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"Cannot decode the image file.*{garbage}"):
        for _ in dataset:
            pass
    os.remove(garbage)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"Cannot decode the image file.*{truncated}"):
        for _ in data.two_view_dataset(str(tmp_path), 2, augment=noisy):
            pass


def test_skipped_files_are_left_out_and_logged_with_a_count(tmp_path, caplog):
    garbage, truncated = corrupt_folder(str(tmp_path))
    source = data.FolderSource(str(tmp_path), on_error="skip")
    with caplog.at_level(logging.WARNING, logger="keras_contrast.data"):
        _, ids, _ = image_ids_and_labels(source.examples())
    # Sorted names: bee/{10,2,8,9}.png are ids 3-6, cat/{10,3,8,9}.png ids 7-10.
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 5, 6, 7, 9, 10])
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_contrast.data"]
    assert len(messages) == 2
    assert garbage in messages[0] and "1 skipped so far" in messages[0]
    assert truncated in messages[1] and "2 skipped so far" in messages[1]
    batches = list(data.two_view_dataset(str(tmp_path), 4, augment=noisy, on_error="skip"))
    assert len(batches) == 2  # 9 readable images, batches of 4


def test_a_file_of_another_size_fails_naming_it_unless_resized(tmp_path):
    write_png_folder(str(tmp_path), counts=(2, 2, 2))
    odd = os.path.join(str(tmp_path), "train", "bee", "5.png")
    tf.io.write_file(odd, tf.io.encode_png(np.zeros((6, 8, 3), np.uint8)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"The image file.*{odd}.*has shape.*6 8 3.*pass `image_size"):
        for _ in data.two_view_dataset(str(tmp_path), 2, augment=noisy):
            pass
    batches = list(data.two_view_dataset(str(tmp_path), 7, image_size=(6, 8), augment=noisy))
    assert len(batches) == 1 and batches[0].shape == (7, 2, 6, 8, 3)


def test_as_source_maps_each_kind_of_input(tmp_path):
    write_png_folder(str(tmp_path), counts=(1, 1, 1))
    images = np.zeros((3, 4, 4), np.uint8)
    assert isinstance(data.as_source(images), data.ArraySource)
    np.testing.assert_array_equal(data.as_source(images, labels=[0, 1, 1]).labels, [0, 1, 1])
    folder = data.as_source(tmp_path, image_size=4, channels=1)
    assert isinstance(folder, data.FolderSource) and folder.image_shape == (4, 4, 1)
    assert data.as_source(folder) is folder
    with pytest.raises(ValueError, match="`source` must be arrays, a folder path"):
        data.as_source(tf.data.Dataset.range(3))
    with pytest.raises(ValueError, match="`source` must be arrays, a folder path"):
        data.as_source({"images": images})
    with pytest.raises(ValueError, match="`image_size` applies to folders"):
        data.as_source(folder, image_size=4)


def test_as_source_opens_tfrecord_globs_and_tfds_names(tmp_path, monkeypatch):
    tfrecords = pytest.importorskip("keras_contrast.data.tfrecords")
    tfds_source = pytest.importorskip("keras_contrast.data.tfds_source")
    made = []
    monkeypatch.setattr(tfrecords, "TFRecordSource",
                        lambda *args, **kwargs: made.append(("tfrecord", args, kwargs)))
    monkeypatch.setattr(tfds_source, "TFDSSource",
                        lambda *args, **kwargs: made.append(("tfds", args, kwargs)))
    data.as_source("tfrecord:/data/{split}-*.tfrecord", split="val", image_size=8)
    data.as_source("tfds:cifar10", split="test", data_dir="/tfds")

    class Builder:  # what a tfds.core.DatasetBuilder offers
        info = None

        def as_dataset(self, **kwargs):
            raise AssertionError("not read here")

    builder = Builder()
    data.as_source(builder, split="val", channels=1)
    assert made[2] == ("tfds", (builder,), {"split": "val", "data_dir": None,
                                            "image_size": None, "channels": 1})
    assert made[0] == ("tfrecord", ("/data/val-*.tfrecord",),
                       {"image_size": 8, "channels": 3, "on_error": "raise"})
    assert made[1] == ("tfds", ("cifar10",), {"split": "test", "data_dir": "/tfds",
                                              "image_size": None, "channels": 3})


def test_a_bad_first_file_fails_naming_it_when_the_size_is_taken_from_it(tmp_path):
    write_png_folder(str(tmp_path), counts=(2, 1, 1))
    first = os.path.join(str(tmp_path), "train", "ant", "1.png")
    with open(first, "wb") as handle:
        handle.write(b"GIF89a truncated")
    with pytest.raises(ValueError, match=f"Cannot decode the image file '{first}'"):
        data.FolderSource(str(tmp_path))
    assert data.FolderSource(str(tmp_path), on_error="skip").image_shape == (8, 8, 3)
    assert data.FolderSource(str(tmp_path), image_size=3).image_shape == (3, 3, 3)


def test_bad_files_are_found_across_check_chunks_and_at_the_end(tmp_path, caplog):
    # 40 files: the check runs over chunks of 32, closed by a sentinel.
    write_png_folder(str(tmp_path), counts=(40, 0, 0), shape=(4, 4, 1))
    for name in ("bee", "cat"):
        os.rmdir(tmp_path / "train" / name)
    source = data.FolderSource(str(tmp_path), channels=1, on_error="skip")
    bad = [31, 32, 39]
    for k in bad:
        with open(source.paths[k], "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n")
    with caplog.at_level(logging.WARNING, logger="keras_contrast.data"):
        _, ids, _ = image_ids_and_labels(source.examples(order_key=(0, 0)))
    order = data.epoch_permutation(40, 0, 0)
    np.testing.assert_array_equal(ids, [i for i in order if i not in bad])
    logged = [r.getMessage() for r in caplog.records if r.name == "keras_contrast.data"]
    assert len(logged) == 3 and "3 skipped so far" in logged[-1]
    assert sorted(logged) == sorted(
        f"Skipped the image file {source.paths[k]!r}, which does not decode "
        f"({j + 1} skipped so far)." for j, k in enumerate(i for i in order if i in bad))
    strict = data.FolderSource(str(tmp_path), channels=1)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"Cannot decode the image file.*{source.paths[31]}"):
        for _ in strict.examples():
            pass
    # Only the very last file bad: the sentinel closing the epoch finds it.
    for k in (31, 32):
        tf.io.write_file(source.paths[k], tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"Cannot decode the image file.*{source.paths[39]}"):
        for _ in strict.examples():
            pass
