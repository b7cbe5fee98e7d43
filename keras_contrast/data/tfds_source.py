"""TensorFlow Datasets builders streamed through `as_dataset` (no NumPy)."""

import os

import numpy as np
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.data.sources import ImageSource
from keras_contrast.data.sources import check_channels
from keras_contrast.data.sources import check_image_size
from keras_contrast.data.tfrecords import DEFAULT_SHUFFLE_BUFFER
from keras_contrast.data.tfrecords import check_shard
from keras_contrast.data.tfrecords import checked_decoding
from keras_contrast.data.tfrecords import decode_image
from keras_contrast.data.tfrecords import error_reason
from keras_contrast.data.tfrecords import resize_image
from keras_contrast.data.tfrecords import shuffle_key
from keras_contrast.data.tfrecords import window_shuffle


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("`TFDSSource` needs tensorflow-datasets: "
                          "pip install 'keras_contrast[tfds]'.") from error
    return tfds


def _convert_channels(image, channels):
    """A decoded uint8 `(H, W[, C])` tensor image with `channels` channels,
    converted as `tf.io.decode_image(..., channels=...)` does (gray is
    repeated, alpha dropped)."""
    if image.shape.rank == 2:
        image = image[..., None]
    have = image.shape[-1]
    if have in (2, 4):  # drop alpha
        image = image[..., : have - 1]
        have -= 1
    if have == channels:
        return image
    if channels == 3:
        return tf.image.grayscale_to_rgb(image)
    return tf.image.rgb_to_grayscale(image)


def prepared_builder(builder_or_name, data_dir=None):
    """The TFDS builder of `builder_or_name`: a builder as it is, or a
    registered name that must be prepared in `data_dir` (one-line error)."""
    tfds = _import_tfds()
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"`data_dir` must be a path or None, got {data_dir!r}.")
    if isinstance(builder_or_name, str) and builder_or_name:
        builder = tfds.builder(builder_or_name,
                               data_dir=None if data_dir is None else os.fspath(data_dir))
        if not builder.is_prepared():
            raise ValueError(
                f"The TFDS dataset {builder.name!r} is not prepared in {builder.data_dir!r} "
                "and `download=False`; prepare it there with internet access "
                "(`load_tfds(name, download=True)`), or pass `data_dir`."
            )
        return builder
    if hasattr(builder_or_name, "as_dataset") and hasattr(builder_or_name, "info"):
        # (Builders passed in, such as `tfds.ImageFolder`, read their files as they are.)
        return builder_or_name
    raise ValueError(f"`builder_or_name` must be a TFDS builder or a registered dataset "
                     f"name, got {builder_or_name!r:.80}.")


def _check_keys(builder, image_key, label_key):
    features = builder.info.features
    for name, key in (("image_key", image_key), ("label_key", label_key)):
        if key is None and name == "label_key":
            continue
        if key not in features:
            raise ValueError(f"`{name}`={key!r} is not a feature of the TFDS dataset "
                             f"{builder.name!r}; its features are {sorted(features)}.")


def _image_shape(builder, image_key, encoded):
    """The stored shape of the image feature, checked to be uint8 (H, W[, C])."""
    image_feature = builder.info.features[image_key]
    image_dtype = np.dtype(getattr(image_feature, "np_dtype", np.uint8))
    shape = tuple(image_feature.shape)
    if image_dtype != np.uint8 or len(shape) not in (2, 3):
        raise ValueError(f"`image_key`={image_key!r} must name a uint8 image feature "
                         f"(H, W[, C]) of {builder.name!r}, got {image_feature!r}.")
    if not encoded and None in shape[:2]:
        raise ValueError(f"The image feature {image_key!r} of {builder.name!r} is a tensor "
                         f"of unknown size {shape}; it needs a fixed (H, W).")
    return shape


def _class_names(builder, label_key):
    """The label feature's class names (None if it has none), checked to be
    a scalar integer."""
    label_feature = builder.info.features[label_key]
    label_dtype = np.dtype(getattr(label_feature, "np_dtype", np.int64))
    if tuple(label_feature.shape) != () or label_dtype.kind not in "iu":
        raise ValueError(f"`label_key`={label_key!r} must name a scalar integer "
                         f"feature of {builder.name!r}, got {label_feature!r}.")
    names = getattr(label_feature, "names", None)
    return tuple(names) if names else None


@keras_contrast_export("keras_contrast.data.TFDSSource")
class TFDSSource(ImageSource):
    """A TensorFlow Datasets split, read with `builder.as_dataset` and
    decoded inside `tf.data` (nothing goes through NumPy).

    Ids are the record order: the split's examples as TFDS reads them with
    `shuffle_files=False` and one file at a time (`ReadConfig(
    interleave_cycle_length=1)`, so TFDS' interleave defaults cannot
    renumber them), numbered by `enumerate`. `tfds.ImageFolder` splits
    come in TFDS' own fixed, shuffled file order.

    An epoch's order (`order_key=(seed, epoch)`) is the record order
    through a bounded shuffle: runs of `shuffle_buffer` consecutive
    records, each permuted by a stateless permutation keyed by (seed,
    epoch, run), so it is a pure function of (seed, epoch). TFDS' own file
    shuffling (`shuffle_files=True`, `ReadConfig(shuffle_seed=...)`) is not
    used: it numbers the records in the shuffled order, so ids would not be
    stable, its seed combines with TensorFlow's global seed, and builders
    such as `tfds.ImageFolder` ignore `ReadConfig`. TFDS writes prepared
    datasets with their examples already shuffled, so the record order is
    not class-sorted. Images go through the buffer undecoded (as the
    encoded bytes, `tfds.decode.SkipDecoding`).

    Shards (`shard_index`, `shard_count`) are taken with
    `Dataset.shard` on the numbered records, before decoding: shard `i`
    holds the ids `i, i + shard_count, ...`. That works for every builder
    (`tfds.ImageFolder` and mocked datasets ignore `ReadConfig(
    input_context=...)`), keeps the global ids, and balances shards to
    within one example whatever the number of files; the price is that
    every input pipeline reads (but does not decode) all records.

    Args:
        builder_or_name: a `tfds.core.DatasetBuilder` (e.g.
            `tfds.ImageFolder(path)`) or a registered name (`"cifar10"`),
            which must be prepared in `data_dir` (nothing is downloaded).
        split: the split to read (TFDS slicing such as `"train[:10%]"` is
            accepted by builders that support it).
        data_dir: where a named dataset is prepared (TFDS' default if None).
        image_size: `(height, width)` or int to resize every image to
            (antialiased, rounded to uint8 like `load_image_folder`); None
            keeps the stored size, which must be the same for all.
        channels: 1 or 3, what images are converted to (None: 3).
        image_key: the feature holding the image (a `tfds.features.Image`
            or a uint8 tensor).
        label_key: the feature holding the integer label; None for a
            dataset without labels (labels are then -1).
        shuffle_buffer: int > 0, records per shuffled run.

    Raises:
        ValueError: a name not prepared in `data_dir` (the same one-line
            message as `load_tfds`), an unknown split, an `image_key` or
            `label_key` the dataset lacks (the message lists its
            features), bad arguments.

    Example:
    >>> source = keras_contrast.data.TFDSSource(
    ...     "cifar10", data_dir="~/tensorflow_datasets")
    >>> dataset = keras_contrast.data.two_view_dataset(source, 256)
    """

    random_access = False

    def __init__(self, builder_or_name, split="train", data_dir=None, image_size=None,
                 channels=3, image_key="image", label_key="label",
                 shuffle_buffer=DEFAULT_SHUFFLE_BUFFER):
        tfds = _import_tfds()
        self.image_size = check_image_size(image_size)
        self.channels = check_channels(channels)
        self.shuffle_buffer = check_positive_int(shuffle_buffer, "shuffle_buffer")
        builder = prepared_builder(builder_or_name, data_dir)
        if not isinstance(split, str) or not split:
            raise ValueError(f"`split` must be a split name, got {split!r}.")
        base_split = split.split("[")[0]
        if base_split not in builder.info.splits:
            raise ValueError(f"The TFDS dataset {builder.name!r} has no split {split!r}; it has "
                             f"{sorted(builder.info.splits)}.")
        features = builder.info.features
        _check_keys(builder, image_key, label_key)
        self.builder = builder
        self.name = builder.name
        self.split = split
        self.image_key = image_key
        self.label_key = label_key
        self.num_examples = int(builder.info.splits[split].num_examples)
        if self.num_examples == 0:
            raise ValueError(f"The split {split!r} of the TFDS dataset {builder.name!r} is "
                             "empty.")
        self._encoded = isinstance(features[image_key], tfds.features.Image)
        shape = _image_shape(builder, image_key, self._encoded)
        if label_key is not None:
            self.class_names = _class_names(builder, label_key)
        self._decoders = {image_key: tfds.decode.SkipDecoding()} if self._encoded else None
        if self.image_size is not None:
            self.image_shape = self.image_size + (self.channels,)
        elif None not in shape[:2]:
            self.image_shape = (int(shape[0]), int(shape[1]), self.channels)
        else:
            first = next(iter(self._records().take(1)))
            try:
                image = self._decode_image(first["image"])
            except tf.errors.OpError as error:
                raise ValueError(f"Cannot decode the first image of the split {split!r} of "
                                 f"{builder.name!r}: {error_reason(error)}.") from None
            self.image_shape = tuple(int(s) for s in image.shape)

    def _records(self):
        """The split in record order, undecoded: `{"image", "label", "id"}`."""
        tfds = _import_tfds()
        dataset = self.builder.as_dataset(
            split=self.split, shuffle_files=False, decoders=self._decoders,
            read_config=tfds.ReadConfig(try_autocache=False, interleave_cycle_length=1))
        image_key, label_key = self.image_key, self.label_key
        return dataset.enumerate().map(lambda i, example: {
            "image": example[image_key],
            "label": (tf.constant(-1, tf.int64) if label_key is None
                      else tf.cast(example[label_key], tf.int64)),
            "id": i})

    def _decode_image(self, image):
        if self._encoded:
            return decode_image(image, self.channels, self.image_size)
        return resize_image(_convert_channels(image, self.channels), self.image_size)

    def examples(self, order_key=None, shard_index=0, shard_count=1):
        """One epoch, `{"image": uint8 image_shape, "label": int64, "id":
        int64}`; shard `i` of `shard_count` holds the ids `i, i +
        shard_count, ...`.

        Args:
            order_key: None (record order) or `(seed, epoch)`.
            shard_index: which of `shard_count` shards to read.
            shard_count: int > 0, at most `num_examples`.

        Returns:
            A `tf.data.Dataset`.
        """
        check_shard(shard_index, shard_count)
        if shard_count > self.num_examples:
            raise ValueError(f"`shard_count`={shard_count} exceeds the {self.num_examples} "
                             f"examples of the split {self.split!r} of {self.name!r}.")
        key = None if order_key is None else shuffle_key(order_key)

        def records():
            dataset = self._records()
            if shard_count > 1:
                dataset = dataset.shard(shard_count, shard_index)
            if key is not None:
                dataset = window_shuffle(dataset, self.shuffle_buffer, key)
            return dataset

        count = len(range(shard_index, self.num_examples, shard_count))

        def describe(position):
            where = f"a record of the split {self.split} of the TFDS dataset {self.name}"
            try:
                record = next(iter(records().skip(position).take(1)))
                where = (f"the example with id {int(record['id'])} of the split {self.split} "
                         f"of the TFDS dataset {self.name}")
                self._decode_image(record["image"])
                return f"Could not read {where}."
            except StopIteration:
                return f"The split {self.split} of {self.name} yielded fewer than {count} examples."
            except tf.errors.OpError as error:
                return f"Cannot decode the image of {where}: {error_reason(error)}."

        return checked_decoding(
            records(), count,
            lambda r: (self._decode_image(r["image"]), r["label"], r["id"]),
            describe, "raise", None, self.image_shape)
