"""`keras-contrast evaluate`: kNN and linear-probe accuracy of an encoder
(recall@1/5 of a dual encoder with `--dataset wordnet`)."""

import json
import os

import keras
import tensorflow as tf

from keras_contrast import data
from keras_contrast import evaluation
from keras_contrast import models
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
    if (args.model_dir is None) == (args.preset is None):
        raise UsageError("evaluate: give a model folder or --preset NAME (one of the two)")
    if args.model_dir is not None and not os.path.isdir(args.model_dir):
        raise UsageError(f"model folder {args.model_dir!r} does not exist")
    check_dataset(args.dataset)
    check_positive(args, "knn_k", "probe_epochs", "train_size", "image_size")
    model = load_preset(args.preset) if args.preset else None
    if args.dataset == "wordnet":
        return evaluate_dual(args, model)
    check_train_size(args.dataset, args.train_size)
    if model is not None and not isinstance(model, models.DualEncoder):
        encoder = model.encoder
    elif model is not None:
        raise UsageError(f"--preset {args.preset!r} is a dual encoder: evaluate it with "
                         "--dataset wordnet")
    else:
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


def load_preset(preset):
    """The model of `--preset` with its weights (a shipped name or folder)."""
    known = models.list_presets()
    if preset in known and not known[preset]["weights"]:
        raise UsageError(f"--preset {preset!r} is an architecture without weights; presets "
                         f"with weights: {sorted(n for n, p in known.items() if p['weights'])}")
    try:
        return models.from_preset(preset)
    except ValueError as error:
        raise UsageError(f"--preset: {error}") from None


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
