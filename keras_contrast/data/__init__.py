"""Offline datasets and contrastive input pipelines."""

from keras_contrast.data.augmentation import epoch_permutation
from keras_contrast.data.augmentation import image_dataset
from keras_contrast.data.augmentation import simclr_augment
from keras_contrast.data.augmentation import two_view_dataset
from keras_contrast.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from keras_contrast.data.fashion_mnist import FILES as FASHION_MNIST_FILES
from keras_contrast.data.fashion_mnist import load_digits
from keras_contrast.data.fashion_mnist import load_fashion_mnist
from keras_contrast.data.fashion_mnist import read_idx
from keras_contrast.data.folders import load_image_folder
from keras_contrast.data.folders import load_tfds
from keras_contrast.data.wordnet import batches_without_repeated_words
from keras_contrast.data.wordnet import hash_tokens
from keras_contrast.data.wordnet import load_wordnet_pairs
from keras_contrast.data.wordnet import parse_wordnet_data
from keras_contrast.data.wordnet import retrieval_recall

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "batches_without_repeated_words",
    "epoch_permutation",
    "hash_tokens",
    "image_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_tfds",
    "load_wordnet_pairs",
    "parse_wordnet_data",
    "read_idx",
    "retrieval_recall",
    "simclr_augment",
    "two_view_dataset",
]
