"""`keras-contrast evaluate`: kNN and linear-probe accuracy of an encoder
(recall@1/5 of a dual encoder with `--dataset wordnet`)."""

import json
import os

import keras
import tensorflow as tf

from keras_contrast import data
from keras_contrast import evaluation
from keras_contrast.cli._datasets import open_images
from keras_contrast.cli._dual import evaluate_dual
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._validation import check_dataset
from keras_contrast.cli._validation import check_positive
from keras_contrast.cli._validation import check_train_size


def evaluate(args):
    """Runs `keras-contrast evaluate`.

    Args:
        args: the parsed `evaluate` arguments: a `train` output folder or an
            exported SavedModel, and the dataset to score it on.

    Returns:
        0, after printing `{"knn_accuracy": ..., "linear_probe_accuracy": ...}`
        as one JSON line.

    Raises:
        UsageError: a bad argument, or a folder without a model.
    """
    if not os.path.isdir(args.model_dir):
        raise UsageError(f"model folder {args.model_dir!r} does not exist")
    check_dataset(args.dataset)
    check_positive(args, "knn_k", "probe_epochs", "train_size", "image_size")
    if args.dataset == "wordnet":
        return evaluate_dual(args)
    check_train_size(args.dataset, args.train_size)
    encoder = load_encoder(args.model_dir)
    images = open_images(args.dataset, image_size=args.image_size, channels=args.channels,
                         data_dir=args.data_dir, download=args.download)
    if images.streaming:
        train_split = data.image_dataset(images.train, labels=True)
        test_split = data.image_dataset(images.test, labels=True)
    else:
        (x, y), (xt, yt) = images.train, images.test
        x, y = x[:args.train_size], y[:args.train_size]
        train_split, test_split = (x / 255.0, y), (xt / 255.0, yt)
    knn = evaluation.knn_accuracy(encoder, train_split, test_split, k=args.knn_k)
    probe, _ = evaluation.linear_probe(encoder, train_split, test_split, epochs=args.probe_epochs)
    print(json.dumps({"knn_accuracy": knn, "linear_probe_accuracy": probe}))
    return 0


def load_encoder(model_dir):
    """The encoder of a `train` output folder (`model.keras`) or of an
    exported SavedModel (its `serve` signature)."""
    keras_file = os.path.join(model_dir, "model.keras")
    if os.path.exists(keras_file):
        return keras.models.load_model(keras_file).encoder
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        loaded = tf.saved_model.load(model_dir)
        return lambda x, training=False: loaded.serve(tf.constant(x, tf.float32))
    raise UsageError(f"{model_dir!r} holds neither model.keras nor a SavedModel")
