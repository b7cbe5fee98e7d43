"""TFRecord shards of `tf.train.Example`: a writer, and a source that streams
them inside `tf.data`.

Records hold the features `"image"` (encoded image bytes), `"label"`
(int64) and `"id"` (int64, the stable id). `write_tfrecords` writes them
round-robin over the shards, with a JSON index next to the shards; the
`TFRecordSource` reads them back decoded, in a keyed, seeded order.
"""

import json
import logging
import os
import re

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import check_writable_directory
from keras_contrast.checks import is_int
from keras_contrast.data.sources import ImageSource
from keras_contrast.data.sources import check_channels
from keras_contrast.data.sources import check_image_size
from keras_contrast.data.sources import check_on_error

_LOGGER = logging.getLogger("keras_contrast.data")

INDEX_FORMAT = "keras_contrast.tfrecords/1"
IMAGE_FORMATS = ("png", "jpeg", "original")
DEFAULT_SHUFFLE_BUFFER = 10_000
DEFAULT_CYCLE_LENGTH = 16
# Read-ahead per open file: the default (256 KiB) times one open file per
# shard of a round-robin set (all are open in id order) adds up.
_READ_BUFFER_BYTES = 64 * 1024
_SHARD_NAME = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
# Distinguishes the shuffle keys from the augmentation seeds (seed·2³¹ + e).
_SHUFFLE_TAG = 0x5F0F
# Records per sequential check of the decoded stream (`checked_decoding`).
_CHUNK = 64


# --- shared with `tfds_source` -------------------------------------------


def decode_image(encoded, channels, image_size):
    """Encoded bytes -> uint8 `(H, W, channels)`, resized like
    `load_image_folder` (antialiased, rounded, clipped) when `image_size`
    is given."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    return resize_image(image, image_size)


def resize_image(image, image_size):
    if image_size is None:
        return image
    image = tf.image.resize(image, image_size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def shuffle_key(order_key):
    """An int64 key from `(seed, epoch)` for the stateless window shuffle."""
    if (not isinstance(order_key, (tuple, list)) or len(order_key) != 2
            or not all(is_int(v) and v >= 0 for v in order_key)):
        raise ValueError(f"`order_key` must be None or a pair of ints >= 0 (seed, epoch), "
                         f"got {order_key!r}.")
    seed, epoch = (int(v) for v in order_key)
    return int(np.random.default_rng([seed, epoch, _SHUFFLE_TAG]).integers(2**62))


def window_shuffle(dataset, buffer_size, key):
    """Permutes each run of `buffer_size` consecutive elements by a stateless
    permutation keyed by (`key`, run index).

    A bounded shuffle that is a pure function of `key`: `Dataset.shuffle`
    combines its seed with TensorFlow's global seed, so its order would
    also depend on `tf.random.set_seed`. Memory: `buffer_size` elements.
    """
    if buffer_size <= 1:
        return dataset

    def permute(window_index, window):
        count = tf.shape(tf.nest.flatten(window)[0], out_type=tf.int64)[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.constant(key, tf.int64), window_index]))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), window)

    return dataset.batch(buffer_size).enumerate().map(permute).unbatch()


def check_shard(shard_index, shard_count):
    if not (is_int(shard_count) and shard_count >= 1):
        raise ValueError(f"`shard_count` must be an int > 0, got {shard_count!r}.")
    if not (is_int(shard_index) and 0 <= shard_index < shard_count):
        raise ValueError(f"`shard_index` must be an int in [0, {shard_count}), got "
                         f"{shard_index!r}.")


def error_reason(error):
    """A decoder's one-line reason, without TF's function-node decorations."""
    reason = re.sub(r"^\{\{.*?\}\}\s*", "", str(getattr(error, "message", error)))
    reason = re.sub(r"\s*\[Op:.*$", "", reason, flags=re.S).strip()
    return reason.splitlines()[0].rstrip(".") if reason else type(error).__name__


def checked_decoding(records, count, decode, describe, on_error, on_skip, image_shape):
    """Decodes a stream of records, failing or skipping those that do not decode.

    A decode error inside `tf.data` cannot be caught in the graph and names
    no record. So `decode` errors are dropped (`ignore_errors`), each record
    carries its position in the stream, a sentinel at position `count`
    closes it, and a sequential `scan` over chunks of decoded records finds
    the missing positions: it fails with `describe(first_missing)` (a
    Python function that replays the stream to name the record, called on
    failure only) or, with `on_error="skip"`, calls `on_skip(first, end)`
    for each missing run `[first, end)`. Checking chunks, not single
    records, keeps the sequential part to one call per `_CHUNK` records.

    Args:
        records: a dataset of structures (`decode`'s input).
        count: the number of records `records` must yield.
        decode: `record -> (image, label, id)`.
        describe: `position -> str`, the message naming that record.
        on_error: `"raise"` or `"skip"`.
        on_skip: `(first, end) -> None`, told of missing positions
            `[first, end)`.
        image_shape: `(H, W, C)` every image must have.

    Returns:
        A dataset of `{"image", "label", "id"}`.
    """
    expected = tf.constant(image_shape, tf.int64)
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(count, tf.int64), tf.nest.map_structure(
            lambda spec: tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype),
            records.element_spec)))
    stream = records.enumerate().concatenate(sentinel)

    def decode_or_pass(position, record):
        def real():
            image, label, id_ = decode(record)
            shape = tf.shape(image, out_type=tf.int64)
            fits = tf.reduce_all(tf.equal(shape, expected))
            # A misfit is reported by the check below, which names its id.
            image = tf.cond(fits, lambda: tf.cast(image, tf.uint8),
                            lambda: tf.zeros(image_shape, tf.uint8))
            return (tf.ensure_shape(image, image_shape), tf.cast(label, tf.int64),
                    tf.cast(id_, tf.int64), shape)

        def closing():
            return (tf.zeros(image_shape, tf.uint8), tf.constant(-1, tf.int64),
                    tf.constant(-1, tf.int64), expected)

        image, label, id_, shape = tf.cond(position < count, real, closing)
        return {"position": position, "image": image, "label": label, "id": id_,
                "shape": shape}

    def message(first):
        return tf.py_function(lambda k: describe(int(k.numpy())), [first], tf.string)

    def report(starts, ends):
        for first, end in zip(starts.numpy(), ends.numpy()):
            on_skip(int(first), int(end))
        return np.int64(0)

    def check(next_position, chunk):
        positions = chunk["position"]
        previous = tf.concat([[next_position - 1], positions[:-1]], 0)
        gaps = positions - previous > 1
        if on_error == "raise":
            first = tf.boolean_mask(previous, gaps)[:1] + 1
            text = tf.cond(tf.reduce_any(gaps), lambda: message(first[0]),
                           lambda: tf.constant(""))
            checks = [tf.debugging.Assert(tf.logical_not(tf.reduce_any(gaps)), [text])]
        else:
            checks = [tf.cond(tf.reduce_any(gaps), lambda: tf.py_function(
                report, [tf.boolean_mask(previous, gaps) + 1, tf.boolean_mask(positions, gaps)],
                tf.int64), lambda: tf.constant(0, tf.int64))]
        misfit = tf.logical_not(tf.reduce_all(tf.equal(chunk["shape"], expected), axis=1))
        checks.append(tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(misfit)),
            ["The image of the record with id", tf.boolean_mask(chunk["id"], misfit)[:1],
             "has shape", tf.boolean_mask(chunk["shape"], misfit)[:1], "unlike the first "
             "record's", expected, "; pass `image_size=(height, width)`."], summarize=3))
        real = positions < count
        with tf.control_dependencies(checks):
            real = tf.identity(real)
        return positions[-1] + 1, {key: tf.boolean_mask(chunk[key], real)
                                   for key in ("image", "label", "id")}

    return (stream.map(decode_or_pass, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()
            .batch(_CHUNK)
            .scan(tf.constant(0, tf.int64), check)
            .unbatch())


# --- writer ----------------------------------------------------------------


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def index_path(path_prefix):
    """The JSON index written next to the shards of `path_prefix`."""
    return os.fspath(path_prefix) + ".json"


def _encoder(image_format):
    if image_format == "png":
        return tf.io.encode_png
    return lambda image: tf.io.encode_jpeg(image, quality=95)


def _array_records(images, labels, image_format):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"`source` images must be uint8 (n, H, W[, C]) with C in (1, 3, 4), got "
                         f"{images.dtype} of shape {images.shape}.")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.reshape(-1).shape != (len(images),):
        raise ValueError(f"`source` labels must be {len(images)} integers, one per image, got "
                         f"{labels.dtype} of shape {labels.shape}.")
    if image_format == "original":
        raise ValueError("`image_format`='original' keeps image files' own bytes: it needs a "
                         "folder, not arrays.")
    encode = _encoder(image_format)
    labels = labels.reshape(-1).astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = ((bytes(encoded), int(labels[k]), k)
               for k, encoded in enumerate(dataset.as_numpy_iterator()))
    maximum = int(labels.max()) if len(labels) else -1
    class_names = [str(i) for i in range(maximum + 1)]
    return records, len(images), class_names, list(images.shape[1:])


def _source_records(source, image_format):
    encode = _encoder(image_format)
    dataset = source.examples().map(
        lambda e: (encode(e["image"]), e["label"], e["id"]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = ((bytes(encoded), int(label), int(id_))
               for encoded, label, id_ in dataset.as_numpy_iterator())
    names = None if source.class_names is None else [str(n) for n in source.class_names]
    return records, source.num_examples, names, list(source.image_shape)


def _file_records(folder_source):
    def records():
        for id_, (path, label) in enumerate(zip(folder_source.paths, folder_source.labels)):
            with open(path, "rb") as handle:
                yield handle.read(), int(label), id_
    return (records(), folder_source.num_examples, list(folder_source.class_names),
            list(folder_source.image_shape) if folder_source.image_size else None)


def _records_of(source, image_format, split, image_size, channels):
    """`(records, count, class_names, image_shape)` of what `write_tfrecords`
    takes as `source`; records are `(encoded image, label, id)` in id order."""
    is_folder = isinstance(source, (str, os.PathLike))
    if not is_folder and (image_size is not None or channels is not None):
        raise ValueError("`image_size` and `channels` apply to a folder `source` only; resize "
                         "arrays or configure the ImageSource instead.")
    if is_folder:
        from keras_contrast.data.sources import FolderSource

        if image_format == "original" and image_size is not None:
            raise ValueError("`image_size` needs decoding: it does not go with "
                             "`image_format`='original'.")
        folder_source = FolderSource(source, split=split, image_size=image_size,
                                     channels=channels)
        if image_format == "original":
            return _file_records(folder_source)
        return _source_records(folder_source, image_format)
    if isinstance(source, ImageSource):
        if source.examples().element_spec["image"].dtype != tf.uint8:
            raise ValueError(f"`source` images must be uint8 to be encoded, got "
                             f"{source.examples().element_spec['image'].dtype.name} from "
                             f"{type(source).__name__}.")
        if image_format == "original":
            raise ValueError("`image_format`='original' keeps image files' own bytes: it needs "
                             "a folder path, not an ImageSource.")
        return _source_records(source, image_format)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return _array_records(source[0], source[1], image_format)
    raise ValueError(f"`source` must be a folder path, a pair (images, labels) or an "
                     f"ImageSource, got {type(source).__name__}.")


def _write_round_robin(records, paths):
    """Writes record `k` to `paths[k % len(paths)]`; returns the counts."""
    num_shards = len(paths)
    counts = [0] * num_shards
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    try:
        for position, (encoded, label, id_) in enumerate(records):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": _bytes_feature(encoded), "label": _int_feature(label),
                "id": _int_feature(id_)}))
            shard = position % num_shards
            writers[shard].write(example.SerializeToString())
            counts[shard] += 1
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot write the TFRecords of `source`: {error_reason(error)}.") \
            from None
    finally:
        for writer in writers:
            writer.close()
    return counts


@keras_contrast_export("keras_contrast.data.write_tfrecords")
def write_tfrecords(source, path_prefix, num_shards=16, image_format="png", split="train",
                    image_size=None, channels=None):
    """Writes a folder, arrays or an `ImageSource` as TFRecord shards.

    Each example becomes a `tf.train.Example` with the features `"image"`
    (encoded bytes), `"label"` (int64) and `"id"` (int64, its stable id:
    the index in the folder's class-major sorted file list, or the array
    row). Shard `i` of `n` is `{path_prefix}-{i:05d}-of-{n:05d}.tfrecord`
    and holds the ids `i, i + n, i + 2n, ...` (round-robin): every shard is
    then a uniform sample of the whole dataset (all classes, even from a
    class-major folder), so a keyed permutation of shards plus a bounded
    shuffle buffer mixes classes well, and shards differ in size by at most
    one record, so workers reading whole shards get even work. Reading all
    shards interleaved one record at a time gives back the id order.

    A JSON index `{path_prefix}.json` records the shard files, their
    record counts, the class names and the image shape, so
    `TFRecordSource` knows `num_examples` without a pass over the data.

    Args:
        source: a folder path (its `split/<class>/*` images, read by
            `FolderSource`), a pair `(images, labels)` of uint8
            `(n, H, W[, C])` images and `(n,)` integer labels, or an
            `ImageSource` (its uint8 images in id order).
        path_prefix: path and stem of the shard files; its folder is
            created if needed.
        num_shards: int > 0, at most the number of examples (no shard is
            empty). Use at least as many shards as the input pipelines
            (workers) that will read them.
        image_format: `"png"` (lossless: decoded pixels come back bit for
            bit), `"jpeg"` (quality 95, lossy), or `"original"` (a folder
            only: each file's own bytes, not decoded or re-encoded, so
            reading decodes exactly as the folder does).
        split: the folder split to write.
        image_size: `(height, width)` or int, a folder only: resize like
            `FolderSource` before encoding (not with `"original"`).
        channels: 1 or 3, a folder only: the channels decoded before
            encoding (None: 3, `FolderSource`'s default).

    Returns:
        The list of shard paths, in shard order.

    Raises:
        ValueError: bad arguments, a folder `FolderSource` rejects, or
            images that do not decode.

    Example:
    >>> paths = keras_contrast.data.write_tfrecords(
    ...     "flowers", "records/flowers-train", num_shards=64)
    >>> source = keras_contrast.data.TFRecordSource("records/flowers-train-*")
    """
    check_positive_int(num_shards, "num_shards")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {IMAGE_FORMATS}, got {image_format!r}.")
    if not isinstance(path_prefix, (str, os.PathLike)) or not os.fspath(path_prefix) or \
            os.fspath(path_prefix).endswith(os.sep):
        raise ValueError(f"`path_prefix` must be a path and file stem such as "
                         f"'records/train', got {path_prefix!r}.")
    path_prefix = os.fspath(path_prefix)
    folder = os.path.dirname(os.path.abspath(path_prefix))
    check_writable_directory(folder, "path_prefix")
    records, count, class_names, shape = _records_of(source, image_format, split, image_size,
                                                     channels)
    if num_shards > count:
        raise ValueError(f"`num_shards`={num_shards} exceeds the {count} examples of `source`; "
                         "every shard must hold at least one record.")
    os.makedirs(folder, exist_ok=True)
    paths = [f"{path_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    counts = _write_round_robin(records, paths)
    index = {
        "format": INDEX_FORMAT,
        "layout": "round_robin",
        "files": [os.path.basename(path) for path in paths],
        "counts": counts,
        "num_examples": int(sum(counts)),
        "class_names": class_names,
        "image_shape": shape,
        "image_format": image_format,
    }
    with open(index_path(path_prefix), "w") as handle:
        json.dump(index, handle, indent=1)
    return paths


# --- reader ----------------------------------------------------------------


def _load_index(path):
    try:
        with open(path) as handle:
            index = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        return None
    return index


def _count_records(path):
    try:
        return int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot read the TFRecord file {path!r}: {error_reason(error)}.") \
            from None


_FEATURE_KINDS = {"image": ("bytes_list", "bytes, the encoded image"),
                  "label": ("int64_list", "int64, the class label"),
                  "id": ("int64_list", "int64, the stable id")}


def _shard_counts(files):
    """The `write_tfrecords` index of each shard prefix (None where a set has
    none) and every file's record count: from its index when it lists the
    file, else counted by reading it."""
    indexes, counts = {}, []
    for path in files:
        match = _SHARD_NAME.match(path)
        index = None
        if match:
            prefix = match.group("prefix")
            if prefix not in indexes:
                indexes[prefix] = _load_index(index_path(prefix))
            index = indexes[prefix]
        name = os.path.basename(path)
        if index is not None and name in index["files"]:
            counts.append(int(index["counts"][index["files"].index(name)]))
        else:
            counts.append(_count_records(path))
    return indexes, counts


@keras_contrast_export("keras_contrast.data.TFRecordSource")
class TFRecordSource(ImageSource):
    """TFRecord shards of `tf.train.Example`, streamed and decoded in `tf.data`.

    Each record needs the features `"image"` (encoded PNG/JPEG/BMP/GIF
    bytes), `"label"` (int64) and, in files from `write_tfrecords`, `"id"`
    (int64). Ids: when the files matched are exactly the shards of one
    `write_tfrecords` call (its JSON index lists them), the stored `"id"`;
    otherwise the record order (files in sorted path order, records in file
    order) numbers the records `0 .. n-1`.

    An epoch's order (`examples(order_key=(seed, epoch))`) is a keyed
    permutation of the shard files, `epoch_permutation(num_files, seed,
    epoch)`, read `cycle_length` files at a time with a deterministic
    interleave, then a bounded shuffle: runs of `shuffle_buffer`
    consecutive records, each permuted by a stateless permutation keyed
    by (seed, epoch, run). TFRecords cannot be read at random, so a
    shard permutation plus a bounded buffer is the standard trade-off;
    the default buffer, 10,000 records, is what TensorFlow's reference
    ImageNet pipelines use, and with `write_tfrecords`' round-robin shards
    every shard already samples all classes evenly, so the buffer only has
    to decorrelate neighbours. Memory: `shuffle_buffer` encoded records
    (about 1 GB for 224-pixel ImageNet JPEGs; lower it for less). The
    order is a pure function of (seed, epoch): TensorFlow's global seed
    plays no part. `order_key=None` reads the id order of a
    `write_tfrecords` set (all shards interleaved record by record), else
    the record order.

    Args:
        pattern: a glob of the shard files (`"records/train-*"`); files
            ending in `.json` (the writer's index) are left out.
        image_size: `(height, width)` or int to resize every image to
            (antialiased, rounded to uint8 like `load_image_folder`); None
            keeps the stored size, which must be the same for all.
        channels: 1 or 3, what images are decoded to (None: 3).
        on_error: `"raise"` (default): a record whose image does not
            decode stops the iteration with `tf.errors.InvalidArgumentError`
            naming its shard file, record index and id; `"skip"`: it is
            left out and logged (logger `keras_contrast.data`, with the
            running count, also in `skipped`).
        shuffle_buffer: int > 0, records per shuffled run (1: no shuffle
            after the shard permutation).
        cycle_length: int > 0, shard files read at once in a shuffled
            epoch.

    Raises:
        ValueError: a glob matching no file, a record without the expected
            features (the message names the feature), unreadable files,
            bad arguments.

    Example:
    >>> keras_contrast.data.write_tfrecords((x_train, y_train), "records/train",
    ...                                     num_shards=8)
    >>> source = keras_contrast.data.TFRecordSource("records/train-*")
    >>> dataset = keras_contrast.data.two_view_dataset(source, 256)
    """

    random_access = False

    def __init__(self, pattern, image_size=None, channels=3, on_error="raise",
                 shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, cycle_length=DEFAULT_CYCLE_LENGTH):
        if not isinstance(pattern, (str, os.PathLike)) or not os.fspath(pattern):
            raise ValueError(f"`pattern` must be a glob of TFRecord files, got {pattern!r}.")
        pattern = os.fspath(pattern)
        self.pattern = pattern
        self.image_size = check_image_size(image_size)
        self.channels = check_channels(channels)
        self.on_error = check_on_error(on_error)
        self.shuffle_buffer = check_positive_int(shuffle_buffer, "shuffle_buffer")
        self.cycle_length = check_positive_int(cycle_length, "cycle_length")
        files = sorted(path for path in tf.io.gfile.glob(pattern)
                       if not path.endswith(".json") and not tf.io.gfile.isdir(path))
        if not files:
            raise ValueError(f"`pattern` {pattern!r} matches no TFRecord files.")
        self.files = tuple(files)
        indexes, counts = _shard_counts(files)
        self.counts = tuple(counts)
        self.num_examples = int(sum(counts))
        if self.num_examples == 0:
            raise ValueError(f"The TFRecord files matched by `pattern` {pattern!r} hold no "
                             "records.")
        used = [index for index in indexes.values() if index is not None]
        # One complete `write_tfrecords` set: stored ids, round-robin layout.
        self.stored_ids = (
            len(indexes) == 1 and len(used) == 1
            and [os.path.basename(path) for path in files] == used[0]["files"])
        if self.stored_ids:
            self._offsets = list(range(len(files)))
            self._strides = [len(files)] * len(files)
        else:
            self._offsets = [int(v) for v in np.cumsum([0] + counts[:-1])]
            self._strides = [1] * len(files)
        names = {tuple(index["class_names"]) if index.get("class_names") is not None else None
                 for index in used}
        self.class_names = (names.pop() if len(names) == 1 and len(used) == len(indexes)
                            else None)
        first_file = next(path for path, n in zip(files, counts) if n)
        first = self._check_first_record(first_file)
        if self.image_size is not None:
            self.image_shape = self.image_size + (self.channels,)
        else:
            shapes = {tuple(index["image_shape"][:2]) if index.get("image_shape") else None
                      for index in used}
            if len(shapes) == 1 and None not in shapes and len(used) == len(indexes):
                self.image_shape = shapes.pop() + (self.channels,)
            else:
                try:
                    image = decode_image(first, self.channels, None)
                except tf.errors.OpError as error:
                    raise ValueError(f"Cannot decode the image of the first record of "
                                     f"{first_file!r}: {error_reason(error)}.") from None
                self.image_shape = tuple(int(s) for s in image.shape)
        self.skipped = 0

    def _check_first_record(self, path):
        try:
            record = next(iter(tf.data.TFRecordDataset(path).take(1))).numpy()
        except tf.errors.OpError as error:
            raise ValueError(f"Cannot read the TFRecord file {path!r}: "
                             f"{error_reason(error)}.") from None
        try:
            example = tf.train.Example.FromString(record)
        except Exception:  # protobuf's DecodeError
            raise ValueError(f"The first record of the TFRecord file {path!r} is not a "
                             "tf.train.Example.") from None
        features = example.features.feature
        required = ("image", "label", "id") if self.stored_ids else ("image", "label")
        for name in required:
            kind, meaning = _FEATURE_KINDS[name]
            if name not in features:
                raise ValueError(f"The TFRecord file {path!r} holds a tf.train.Example without "
                                 f"the feature {name!r} ({meaning}); it has the features "
                                 f"{sorted(features)}.")
            if features[name].WhichOneof("kind") != kind or \
                    len(getattr(features[name], kind).value) != 1:
                raise ValueError(f"The feature {name!r} of the TFRecord file {path!r} must hold "
                                 f"one {meaning}, got {features[name]!r:.120}.")
        return features["image"].bytes_list.value[0]

    def _keys(self):
        keys = {"image": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.int64)}
        if self.stored_ids:
            keys["id"] = tf.io.FixedLenFeature([], tf.int64)
        return keys

    def _file_indices(self, order_key, shard_index, shard_count):
        mine = list(range(shard_index, len(self.files), shard_count))
        if order_key is None:
            return mine
        from keras_contrast.data.pipeline import epoch_permutation

        seed, epoch = order_key
        chosen = set(mine)
        return [int(f) for f in epoch_permutation(len(self.files), seed, epoch) if f in chosen]

    def _records(self, order_key, shard_index, shard_count):
        """The epoch's records, undecoded: `{"record", "file", "index"}`
        (the file's index in `files`, the record's index in the file)."""
        files = self._file_indices(order_key, shard_index, shard_count)
        paths = tf.constant(self.files)
        table = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.int64))

        def read(file_index):
            # `zip`, not `enumerate().map(...)`: a map per file costs a
            # function call per record.
            return tf.data.Dataset.zip({
                "record": tf.data.TFRecordDataset(tf.gather(paths, file_index),
                                                  buffer_size=_READ_BUFFER_BYTES),
                "index": tf.data.Dataset.range(2**62),
                "file": tf.data.Dataset.from_tensors(file_index).repeat()})

        if order_key is None:
            # Round-robin shards interleaved record by record: id order.
            cycle = len(files) if self.stored_ids else 1
            records = table.interleave(read, cycle_length=cycle, block_length=1)
        else:
            records = table.interleave(read, cycle_length=min(len(files), self.cycle_length),
                                       block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True)
            records = window_shuffle(records, self.shuffle_buffer, shuffle_key(order_key))
        return records, sum(self.counts[f] for f in files)

    def _describe(self, order_key, shard_index, shard_count, first, end=None):
        """Names the records at stream positions `[first, end)` (replaying
        the undecoded stream, on failure only): a list of messages."""
        end = first + 1 if end is None else end
        records, _ = self._records(order_key, shard_index, shard_count)
        messages = []
        try:
            for record in records.skip(first).take(end - first):
                path = self.files[int(record["file"])]
                # No quotes: `tf.debugging.Assert` would escape them.
                file_index, index = int(record["file"]), int(record["index"])
                id_ = self._offsets[file_index] + index * self._strides[file_index]
                where = f"record {index} (id {id_}) of the TFRecord file {path}"
                try:
                    example = tf.io.parse_single_example(record["record"], self._keys())
                except tf.errors.OpError as error:
                    messages.append(f"Cannot parse {where}: {error_reason(error)}.")
                    continue
                try:
                    decode_image(example["image"], self.channels, self.image_size)
                    messages.append(f"Could not read {where}.")
                except tf.errors.OpError as error:
                    messages.append(f"Cannot decode the image of {where}: "
                                    f"{error_reason(error)}.")
        except tf.errors.OpError:
            for f in self._file_indices(order_key, shard_index, shard_count):
                try:
                    tf.data.TFRecordDataset(self.files[f]).reduce(np.int64(0), lambda n, _: n)
                except tf.errors.OpError as error:
                    messages.append(f"Cannot read the TFRecord file {self.files[f]}: "
                                    f"{error_reason(error)}.")
                    break
        return messages or [f"Records {first} to {end - 1} of the epoch were lost."]

    def examples(self, order_key=None, shard_index=0, shard_count=1):
        """One epoch, `{"image": uint8 image_shape, "label": int64, "id":
        int64}`; shard `i` of `shard_count` reads the files `i, i +
        shard_count, ...` (so at least `shard_count` files are needed).

        Args:
            order_key: None (id order, see the class), or `(seed, epoch)`.
            shard_index: which of `shard_count` shards of files to read.
            shard_count: int > 0, at most the number of files.

        Returns:
            A `tf.data.Dataset`.
        """
        check_shard(shard_index, shard_count)
        if order_key is not None:
            shuffle_key(order_key)
        if shard_count > len(self.files):
            raise ValueError(f"`shard_count`={shard_count} exceeds the {len(self.files)} "
                             f"TFRecord files matched by {self.pattern!r}: each shard reads "
                             f"whole files; write at least {shard_count} shards "
                             "(`write_tfrecords(num_shards=...)`).")
        records, count = self._records(order_key, shard_index, shard_count)
        keys = self._keys()

        offsets = tf.constant(self._offsets, tf.int64)
        strides = tf.constant(self._strides, tf.int64)

        def decode(record):
            example = tf.io.parse_single_example(record["record"], keys)
            image = decode_image(example["image"], self.channels, self.image_size)
            if self.stored_ids:
                return image, example["label"], example["id"]
            file_index = record["file"]
            id_ = tf.gather(offsets, file_index) + record["index"] * tf.gather(strides, file_index)
            return image, example["label"], id_

        def describe(position):
            return (self._describe(order_key, shard_index, shard_count, position)[0]
                    + " (on_error=raise; on_error=skip leaves such records out).")

        def on_skip(first, end):
            messages = self._describe(order_key, shard_index, shard_count, first, end)
            for k, message in enumerate(messages):
                # A lost stretch of a damaged file is one message for all its records.
                self.skipped += 1 if k < len(messages) - 1 else end - first - k
                _LOGGER.warning("Skipped: %s (%d skipped so far).", message, self.skipped)

        return checked_decoding(records, count, decode, describe, self.on_error, on_skip,
                                self.image_shape)
