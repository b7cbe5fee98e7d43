"""Offline datasets and contrastive input pipelines."""

from keras_contrast.api_export import deprecated_aliases
from keras_contrast.data.augmentation import byol_views
from keras_contrast.data.augmentation import simclr_augment
from keras_contrast.data.augmentation import simclr_views
from keras_contrast.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from keras_contrast.data.fashion_mnist import load_digits
from keras_contrast.data.fashion_mnist import load_fashion_mnist
from keras_contrast.data.folders import load_image_folder
from keras_contrast.data.folders import load_tfds
from keras_contrast.data.pipeline import epoch_permutation
from keras_contrast.data.pipeline import image_dataset
from keras_contrast.data.pipeline import two_view_dataset
from keras_contrast.data.sharding import distribute_two_view_dataset
from keras_contrast.data.sources import ArraySource
from keras_contrast.data.sources import FolderSource
from keras_contrast.data.sources import ImageSource
from keras_contrast.data.sources import as_source
from keras_contrast.data.tfds_source import TFDSSource
from keras_contrast.data.tfrecords import TFRecordSource
from keras_contrast.data.tfrecords import write_tfrecords
from keras_contrast.data.wordnet import batches_without_repeated_words
from keras_contrast.data.wordnet import hash_tokens
from keras_contrast.data.wordnet import load_wordnet_pairs
from keras_contrast.data.wordnet import retrieval_recall

__all__ = [
    "ArraySource",
    "FASHION_MNIST_CLASSES",
    "FolderSource",
    "ImageSource",
    "TFDSSource",
    "TFRecordSource",
    "as_source",
    "batches_without_repeated_words",
    "byol_views",
    "distribute_two_view_dataset",
    "epoch_permutation",
    "hash_tokens",
    "image_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_tfds",
    "load_wordnet_pairs",
    "retrieval_recall",
    "simclr_augment",
    "simclr_views",
    "two_view_dataset",
    "write_tfrecords",
]

# Names that left the public API; each warns and still works for one release.
_DEPRECATED = {
    "FASHION_MNIST_FILES": "keras_contrast.data.fashion_mnist.FILES",
    "parse_wordnet_data": "keras_contrast.data.wordnet.parse_wordnet_data",
    "read_idx": "keras_contrast.data.fashion_mnist.read_idx",
}
__getattr__ = deprecated_aliases(__name__, _DEPRECATED)
del deprecated_aliases
