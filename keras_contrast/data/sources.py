"""Image sources that stream: examples read and decoded inside `tf.data`.

Every source holds `num_examples` examples with stable ids `0 .. n-1` (the
index in the sorted file list, the record order, or the array row) and
yields them one epoch at a time as `{"image": uint8 (H, W, C), "label":
int64, "id": int64}` elements, never all in memory.
"""

import abc
import logging
import os

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_int

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEST_SPLITS = ("test", "val", "validation")
ON_ERROR = ("raise", "skip")
_LOGGER = logging.getLogger("keras_contrast.data")
# Decoded examples checked at once for missing (undecodable) files.
_CHECK_CHUNK = 32


def check_image_size(image_size):
    """`(height, width)` from `image_size` (an int is a square size), or None."""
    if image_size is None:
        return None
    sizes = (image_size, image_size) if is_int(image_size) else image_size
    if (
        isinstance(sizes, (str, bytes))
        or not hasattr(sizes, "__len__")
        or len(sizes) != 2
        or not all(is_int(s) and s >= 1 for s in sizes)
    ):
        raise ValueError(
            f"`image_size` must be an int > 0 or a pair of ints (height, width) > 0, "
            f"got {image_size!r}."
        )
    return int(sizes[0]), int(sizes[1])


def check_channels(channels, allow_none=True):
    """`channels` (1 or 3; None is 3 when allowed)."""
    if channels is None and allow_none:
        return 3
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3, got {channels!r}.")
    return int(channels)


def check_on_error(on_error):
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
    return on_error


def as_float_images(images):
    """`images` as uint8 `(n, H, W, C)` or float32 in [0, 1] (clipped)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"`images` must be (n, H, W) or (n, H, W, C), got shape {images.shape}.")
    if images.dtype == np.uint8:
        return images
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def check_labels(labels, count):
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}.")
    labels = labels.reshape(-1)
    if len(labels) != count:
        raise ValueError(f"`labels` has {len(labels)} entries for {count} images; one label "
                         "per image expected.")
    return labels.astype(np.int64)


def _epoch_order(num_examples, order_key):
    # Imported here: pipeline.py imports this module.
    from keras_contrast.data.pipeline import epoch_permutation

    if order_key is None:
        return np.arange(num_examples, dtype=np.int64)
    seed, epoch = order_key
    return epoch_permutation(num_examples, seed, epoch).astype(np.int64)


def _check_shard(shard_index, shard_count):
    if not (is_int(shard_count) and shard_count >= 1):
        raise ValueError(f"`shard_count` must be an int > 0, got {shard_count!r}.")
    if not (is_int(shard_index) and 0 <= shard_index < shard_count):
        raise ValueError(f"`shard_index` must be an int in [0, {shard_count}), got "
                         f"{shard_index!r}.")


@keras_contrast_export("keras_contrast.data.ImageSource")
class ImageSource(abc.ABC):
    """A finite set of labelled images with stable ids, read by `tf.data`.

    Two kinds exist. A random-access source (`random_access = True`: a
    folder, arrays) reads any id, so an epoch's order is a keyed
    permutation of ids, `epoch_permutation(n, seed, epoch)`, exactly as for
    arrays. A sequential source (TFRecord shards, TFDS) reads its records
    in file order, so an epoch's order is a keyed permutation of shards,
    then a bounded, seeded shuffle buffer.

    A random-access source implements `read(ids)`; `examples` is then
    given. A sequential source implements `examples`.

    Attributes:
        num_examples: int, the number of examples.
        image_shape: `(height, width, channels)` of every decoded image.
        class_names: tuple of class names (label `i` is `class_names[i]`),
            or None when the source does not name them.
        random_access: bool, see above.
        labels: for a random-access source, the int64 `(n,)` labels by id
            (None when it has none).
    """

    num_examples = None
    image_shape = None
    class_names = None
    random_access = False
    labels = None

    @property
    def num_classes(self):
        return None if self.class_names is None else len(self.class_names)

    def examples(self, order_key=None, shard_index=0, shard_count=1):
        """One epoch of examples as a `tf.data.Dataset` of dicts.

        Args:
            order_key: None for id order (no shuffling), else a pair of
                ints `(seed, epoch)`; the order is a pure function of it.
            shard_index: which of `shard_count` disjoint shards to read.
            shard_count: int > 0; the shards' union is the whole source.

        Returns:
            A dataset of `{"image": uint8 (H, W, C), "label": int64 (),
            "id": int64 ()}`. A random-access source's shard `i` is every
            `shard_count`-th example of the epoch's order from the `i`-th.
        """
        if not self.random_access:
            raise NotImplementedError(f"{type(self).__name__} must implement `examples`.")
        _check_shard(shard_index, shard_count)
        order = _epoch_order(self.num_examples, order_key)[shard_index::shard_count]
        dataset = self.read(tf.constant(order, tf.int64))
        return dataset.map(lambda index, image, label: {"image": image, "label": label,
                                                        "id": index})

    def read(self, ids, num_parallel_calls=tf.data.AUTOTUNE):
        """Random-access sources: the examples `ids`, in that order.

        Args:
            ids: int64 `(m,)` tensor of example ids.
            num_parallel_calls: parallel decoding calls of `tf.data`.

        Returns:
            A dataset of `(id, image, label)` tuples, `image` uint8 of
            `image_shape` (float32 in [0, 1] for float arrays), label -1
            when the source has no labels.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a random-access source.")


@keras_contrast_export("keras_contrast.data.ArraySource")
class ArraySource(ImageSource):
    """In-memory images as a random-access source (small data).

    Args:
        images: uint8 `(n, H, W[, C])` in [0, 255] or float in [0, 1]
            (clipped; kept as float32).
        labels: optional `(n,)` integer labels.

    Example:
    >>> source = keras_contrast.data.ArraySource(x_train, y_train)
    >>> dataset = keras_contrast.data.two_view_dataset(source, 256, labels=True)
    """

    random_access = True

    def __init__(self, images, labels=None):
        self.images = as_float_images(images)
        self.num_examples = len(self.images)
        self.image_shape = tuple(int(s) for s in self.images.shape[1:])
        self.labels = None if labels is None else check_labels(labels, self.num_examples)
        if self.labels is not None and len(self.labels):
            self.class_names = tuple(str(i) for i in range(int(self.labels.max()) + 1))
        self._eager_tables = None

    def _tables(self):
        labels = np.full(self.num_examples, -1, np.int64) if self.labels is None else self.labels
        return _cached_tables(self, (self.images, labels))

    def read(self, ids, num_parallel_calls=tf.data.AUTOTUNE):
        images, labels = self._tables()
        return tf.data.Dataset.from_tensor_slices(ids).map(
            lambda i: (i, tf.gather(images, i), tf.gather(labels, i)))


def _cached_tables(source, arrays):
    """`arrays` as eager constants, made once (outside any function being
    traced), which the dataset functions capture rather than embed."""
    if source._eager_tables is None:
        with tf.init_scope():
            source._eager_tables = tuple(tf.constant(a) for a in arrays)
    return source._eager_tables


def _image_files(folder):
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(folder, name))]


def _split_directory(directory, split):
    path = os.path.join(directory, split)
    if os.path.isdir(path):
        return path
    if split == "test":
        for name in TEST_SPLITS[1:]:
            if os.path.isdir(os.path.join(directory, name)):
                return os.path.join(directory, name)
    present = sorted(name for name in os.listdir(directory)
                     if os.path.isdir(os.path.join(directory, name)))
    raise ValueError(f"`directory` {directory!r} has no `{split}/` subfolder (`split`="
                     f"{split!r}); it has {present}.")


@keras_contrast_export("keras_contrast.data.FolderSource")
class FolderSource(ImageSource):
    """Images in `directory/<split>/<class>/*`, streamed from the files.

    Class `i` is the i-th subfolder of `directory/train/` in sorted order,
    for every split (so `test/` and `val/` share the training labels). The
    example with id `k` is the k-th file of the class-major sorted list
    (classes in label order, files sorted by name); only that list and the
    labels are held in memory, the files are read and decoded inside
    `tf.data` (`.png`, `.jpg`, `.jpeg`, `.bmp`, `.gif`; gray, RGB and RGBA
    files are all converted to `channels`). Pixels equal what
    `load_image_folder` decodes, bit for bit.

    Args:
        directory: the folder holding `train/` (and `test/`, `val/`, ...).
        split: the subfolder to read; `"test"` falls back to `val/` or
            `validation/` when there is no `test/`.
        image_size: `(height, width)` (or an int for a square) to resize
            every image to (antialiased, rounded to uint8 like
            `load_image_folder`); None keeps the files' size, which must
            then be the same for all (the first file sets it; a file of
            another size fails at read time, naming the file).
        channels: 1 or 3 (None: 3).
        on_error: `"raise"` (default): a file that does not decode stops
            the iteration with `tf.errors.InvalidArgumentError` naming
            the file; `"skip"`: it is left out and logged (logger
            `keras_contrast.data`, with the running count).

    Raises:
        ValueError: a missing or empty folder, a class folder without
            images, a test class missing from `train/`, bad arguments.

    Example:
    >>> source = keras_contrast.data.FolderSource("flowers", image_size=64)
    >>> dataset = keras_contrast.data.two_view_dataset(source, 256)
    """

    random_access = True

    def __init__(self, directory, split="train", image_size=None, channels=None,
                 on_error="raise"):
        if not isinstance(directory, (str, os.PathLike)):
            raise ValueError(f"`directory` must be a path, got {directory!r}.")
        if not isinstance(split, str) or not split:
            raise ValueError(f"`split` must be a folder name, got {split!r}.")
        self.image_size = check_image_size(image_size)
        self.channels = check_channels(channels)
        self.on_error = check_on_error(on_error)
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise ValueError(f"`directory` {directory!r} is not a folder.")
        train_directory = os.path.join(directory, "train")
        if not os.path.isdir(train_directory):
            raise ValueError(f"`directory` {directory!r} has no `train/` subfolder of classes.")
        class_names = sorted(name for name in os.listdir(train_directory)
                             if os.path.isdir(os.path.join(train_directory, name)))
        if not class_names:
            raise ValueError(f"`directory` {directory!r}: `train/` holds no class subfolders.")
        split_directory = _split_directory(directory, split)
        present = sorted(name for name in os.listdir(split_directory)
                         if os.path.isdir(os.path.join(split_directory, name)))
        unknown = sorted(set(present) - set(class_names))
        if unknown:
            raise ValueError(f"{split_directory!r} has classes missing from `train/`: {unknown}.")
        paths, labels = [], []
        for label, name in enumerate(class_names):
            folder = os.path.join(split_directory, name)
            if not os.path.isdir(folder):
                continue
            files = _image_files(folder)
            if not files:
                raise ValueError(f"The class folder {folder!r} holds no images with extensions "
                                 f"{IMAGE_EXTENSIONS}.")
            paths.extend(files)
            labels.extend([label] * len(files))
        if not paths:
            raise ValueError(f"{split_directory!r} holds no class subfolders with images.")
        self.directory = directory
        self.split = split
        self.split_directory = split_directory
        self.class_names = tuple(class_names)
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, np.int64)
        self.num_examples = len(paths)
        if self.image_size is None:
            self.image_shape = self._first_shape()
        else:
            self.image_shape = self.image_size + (self.channels,)
        self.skipped = 0
        self._eager_tables = None

    def _tables(self):
        return _cached_tables(self, (np.asarray(self.paths), self.labels))

    def _first_shape(self):
        """The shape of the first file that decodes (a bad first file is
        an error naming it, or skipped with `on_error="skip"`)."""
        for path in self.paths:
            try:
                image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels,
                                           expand_animations=False)
                return tuple(int(s) for s in image.shape)
            except tf.errors.OpError:
                if self.on_error == "raise":
                    raise ValueError(f"Cannot decode the image file {path!r} (on_error="
                                     "'raise').") from None
        raise ValueError(f"No image file in {self.split_directory!r} decodes.")

    def _decode(self, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=self.channels,
                                   expand_animations=False)
        if self.image_size is not None:
            image = tf.image.resize(image, self.image_size, antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return image

    def _log_skipped(self, paths):
        for path in paths.numpy():
            self.skipped += 1
            _LOGGER.warning("Skipped the image file %r, which does not decode (%d skipped so "
                            "far).", path.decode(), self.skipped)
        return np.int64(0)

    def read(self, ids, num_parallel_calls=tf.data.AUTOTUNE):
        # A decode error inside `tf.data` names no file and cannot be caught
        # in the graph: decoding errors are dropped (`ignore_errors`), and a
        # sequential `scan` over chunks of the expected positions, closed by
        # a sentinel, finds each missing one and fails naming its file (or
        # logs it, with `on_error="skip"`). A file of another size is
        # replaced by zeros when decoded and named by the same check.
        paths, labels = self._tables()
        ids = tf.convert_to_tensor(ids, tf.int64)
        count = tf.size(ids, out_type=tf.int64)
        # Padded, so that the sentinel's position `count` indexes an id.
        padded = tf.concat([ids, tf.zeros([1], tf.int64)], 0)
        expected = tf.constant(self.image_shape, tf.int64)

        def path_at(positions):
            return tf.gather(paths, tf.gather(padded, positions))

        def decode(position):
            image = tf.cond(position >= count,
                            lambda: tf.zeros(self.image_shape, tf.uint8),
                            lambda: self._decode(path_at(position)))
            shape = tf.shape(image, out_type=tf.int64)
            if self.image_size is None:
                image = tf.cond(tf.reduce_all(tf.equal(shape, expected)), lambda: image,
                                lambda: tf.zeros(self.image_shape, tf.uint8))
            return position, tf.ensure_shape(image, self.image_shape), shape

        def check(next_position, chunk):
            positions, images, shapes = chunk
            last = positions[-1]
            present = tf.scatter_nd((positions - next_position)[:, None],
                                    tf.ones_like(positions, tf.bool), [last + 1 - next_position])
            missing = tf.boolean_mask(tf.range(next_position, last + 1), ~present)
            if self.on_error == "raise":
                first = path_at(tf.concat([missing, [count]], 0)[0])
                checks = [tf.debugging.Assert(tf.size(missing) == 0, [
                    "Cannot decode the image file", first, "(on_error='raise')."])]
            else:
                checks = [tf.cond(tf.size(missing) > 0,
                                  lambda: tf.py_function(self._log_skipped, [path_at(missing)],
                                                         tf.int64),
                                  lambda: tf.constant(0, tf.int64))]
            odd = tf.logical_and(positions < count,
                                 ~tf.reduce_all(tf.equal(shapes, expected), axis=1))
            row = tf.concat([tf.cast(tf.where(odd)[:, 0], tf.int32), [0]], 0)[0]
            checks.append(tf.debugging.Assert(~tf.reduce_any(odd), [
                "The image file", path_at(positions[row]), "has shape", shapes[row],
                "unlike the first file's", expected, "; pass `image_size=(height, width)`."],
                summarize=3))
            with tf.control_dependencies(checks):
                real = positions < count  # all but the sentinel
            index = tf.gather(padded, tf.boolean_mask(positions, real))
            return last + 1, (index, tf.boolean_mask(images, real), tf.gather(labels, index))

        return (tf.data.Dataset.range(count + 1)
                .map(decode, num_parallel_calls=num_parallel_calls, deterministic=True)
                .ignore_errors()
                .batch(_CHECK_CHUNK)
                .scan(tf.constant(0, tf.int64), check)
                .unbatch())


def _is_tfds_builder(value):
    return hasattr(value, "as_dataset") and hasattr(value, "info")


@keras_contrast_export("keras_contrast.data.as_source")
def as_source(source, split="train", image_size=None, channels=None, labels=None,
              on_error="raise", data_dir=None):
    """The `ImageSource` behind what the pipelines accept as `source`.

    Args:
        source: an `ImageSource` (returned as is); arrays (`ArraySource`);
            a folder path (`FolderSource` of `directory/<split>/<class>/*`);
            `"tfrecord:GLOB"` (`TFRecordSource`; a `{split}` in the glob
            is replaced by `split`); a TFDS builder or `"tfds:NAME"`
            (`TFDSSource` of `split`).
        split: the split of a folder or TFDS dataset.
        image_size: `(height, width)` or int, to resize decoded images to
            (folders, TFRecords, TFDS only).
        channels: 1 or 3 (None: 3) for decoded images.
        labels: `(n,)` ints, with arrays only.
        on_error: `"raise"` or `"skip"`, for files that do not decode
            (folders, TFRecords).
        data_dir: where a `"tfds:NAME"` dataset is prepared.

    Returns:
        An `ImageSource`.

    Example:
    >>> source = keras_contrast.data.as_source("flowers", image_size=64)
    >>> source.num_examples, source.class_names
    """
    check_on_error(on_error)
    is_path = isinstance(source, (str, os.PathLike))
    decoded = is_path or _is_tfds_builder(source)
    if not decoded:
        for name, value in (("image_size", image_size), ("channels", channels)):
            if value is not None:
                raise ValueError(f"`{name}` applies to folders, TFRecords and TFDS datasets, "
                                 f"not to {type(source).__name__}; got {name}={value!r}.")
    if labels is not None and not isinstance(labels, bool) and (
            decoded or isinstance(source, ImageSource)):
        raise ValueError("`labels` as an array goes with array images only; folders, "
                         "TFRecords, TFDS datasets and ImageSources have their own labels "
                         "(pass `labels=True` to the pipelines).")
    if isinstance(source, ImageSource):
        return source
    if _is_tfds_builder(source) or (isinstance(source, str) and source.startswith("tfds:")):
        from keras_contrast.data.tfds_source import TFDSSource

        name = source[len("tfds:"):] if isinstance(source, str) else source
        return TFDSSource(name, split=split, data_dir=data_dir, image_size=image_size,
                          channels=check_channels(channels))
    if isinstance(source, str) and source.startswith("tfrecord:"):
        from keras_contrast.data.tfrecords import TFRecordSource

        pattern = source[len("tfrecord:"):].replace("{split}", split)
        return TFRecordSource(pattern, image_size=image_size, channels=check_channels(channels),
                              on_error=on_error)
    if is_path:
        return FolderSource(source, split=split, image_size=image_size, channels=channels,
                            on_error=on_error)
    if isinstance(source, tf.data.Dataset) or tf.is_tensor(source):
        raise ValueError(f"`source` must be arrays, a folder path, 'tfrecord:GLOB', a TFDS "
                         f"builder, 'tfds:NAME' or an ImageSource, got {type(source).__name__}.")
    if isinstance(labels, bool):
        labels = None
    try:
        array = np.asarray(source)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype == object or array.dtype.kind not in "uif":
        raise ValueError(f"`source` must be arrays, a folder path, 'tfrecord:GLOB', a TFDS "
                         f"builder, 'tfds:NAME' or an ImageSource, got {source!r:.80}.")
    return ArraySource(source, labels=labels)
