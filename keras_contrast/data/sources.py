"""Image sources that stream: examples read and decoded inside `tf.data`.

Every source holds `num_examples` examples with stable ids `0 .. n-1` (the
index in the sorted file list, the record order, or the array row) and
yields them one epoch at a time as `{"image": uint8 (H, W, C), "label":
int64, "id": int64}` elements, never all in memory.
"""

import abc


class ImageSource(abc.ABC):
    """A finite set of labelled images with stable ids, read by `tf.data`.

    Two kinds exist. A random-access source (`random_access = True`: a
    folder, arrays) reads any id, so an epoch's order is a keyed
    permutation of ids, exactly as for arrays. A sequential source (TFRecord
    shards, TFDS) reads its records in file order, so an epoch's order is a
    keyed permutation of shards, then a bounded, seeded shuffle buffer.

    Attributes:
        num_examples: int, the number of examples.
        image_shape: `(height, width, channels)` of every decoded image.
        class_names: tuple of class names (label `i` is `class_names[i]`),
            or None when the source does not name them.
        random_access: bool, see above.
    """

    num_examples = None
    image_shape = None
    class_names = None
    random_access = False

    @property
    def num_classes(self):
        return None if self.class_names is None else len(self.class_names)

    @abc.abstractmethod
    def examples(self, order_key=None, shard_index=0, shard_count=1):
        """One epoch of examples as a `tf.data.Dataset` of dicts.

        Args:
            order_key: None for id order (no shuffling), else a pair of
                ints `(seed, epoch)`; the order is a pure function of it.
            shard_index: which of `shard_count` disjoint shards to read.
            shard_count: int > 0; the shards' union is the whole source.

        Returns:
            A dataset of `{"image": uint8 (H, W, C), "label": int64 (),
            "id": int64 ()}`.
        """
