"""`keras-contrast train`: an image model, its kNN accuracy, plots, a
SavedModel; `--model dual` trains in `keras_contrast.cli._dual`."""

import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import callbacks as kc_callbacks
from keras_contrast import data
from keras_contrast import distribute
from keras_contrast import evaluation
from keras_contrast import export
from keras_contrast import layers as kc_layers
from keras_contrast import models
from keras_contrast.cli import _dual as dual
from keras_contrast.cli._datasets import open_images
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._factories import make_loss
from keras_contrast.cli._factories import make_optimizer
from keras_contrast.cli._factories import make_strategy
from keras_contrast.cli._factories import optimizer_settings
from keras_contrast.cli._factories import preset_overrides
from keras_contrast.cli._plots import read_history
from keras_contrast.cli._runs import HistoryCSV
from keras_contrast.cli._runs import Run
from keras_contrast.cli._plots import write_plots
from keras_contrast.cli._summary import closing_summary
from keras_contrast.cli._summary import fit_verbosity
from keras_contrast.cli._validation import validate_train
from keras_contrast.training import GradCache

# The per-epoch kNN monitor measures the first images of each split; the
# final accuracies use the whole splits.
MONITOR_BANK, MONITOR_TEST = 10000, 2000


def train(args):
    """Runs `keras-contrast train`.

    Checks the arguments (before anything is written), trains, and writes
    `history_<worker>.csv`, TensorBoard logs, a backup per epoch, the plots,
    `results.json`, `model.keras` and `saved_model/` in `--out`, then prints
    the final accuracy and where the outputs are. A run whose backup exists
    resumes from it.

    Args:
        args: the parsed `train` arguments (`build_parser().parse_args`).

    Returns:
        0.

    Raises:
        UsageError: a bad argument or dataset.
    """
    validate_train(args)
    if args.strategy == "mirrored" and args.replicas > 1:
        distribute.configure_logical_cpus(max(args.replicas, 1))
    if args.model == "dual":
        return dual.train_dual(args)
    return train_images(args)


def train_images(args):
    """`train` of the image models (`simclr`, `moco`, `mocov3`), after
    `validate_train`; see `train`."""
    # Before anything runs a TensorFlow op (a streamed source decodes its
    # first image): MultiWorkerMirroredStrategy must configure the runtime.
    strategy = make_strategy(args)
    images = open_images(args.dataset, image_size=args.image_size, channels=args.channels,
                         data_dir=args.data_dir, download=args.download)
    num_train = min(images.num_train, args.train_size or images.num_train)
    if num_train < args.batch_size:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {num_train} "
                         "training images")
    steps_per_epoch = num_train // args.batch_size
    if args.steps_per_epoch and args.steps_per_epoch > steps_per_epoch:
        raise UsageError(f"--steps-per-epoch {args.steps_per_epoch} exceeds the "
                         f"{steps_per_epoch} full batches of {args.batch_size} in an epoch")
    steps_per_epoch = args.steps_per_epoch or steps_per_epoch
    # After the checks: a UsageError leaves the process's global state alone.
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        # Same run, same bits: a resumed run then equals the uninterrupted one.
        tf.config.experimental.enable_op_determinism()
    run = Run.start(args)
    model, trainer = build_trainer(args, strategy, images.image_shape,
                                   args.epochs * steps_per_epoch)
    monitor = monitor_splits(images)
    norms = kc_callbacks.GradientNormMonitor()
    dataset = training_dataset(args, images, strategy, run.initial_epoch, steps_per_epoch)
    started = time.time()
    # shuffle=False: the dataset is shuffled already, keyed by (seed, epoch,
    # example); Keras' default shuffle=True only warns that it ignores it.
    history = trainer.fit(dataset, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                          callbacks=training_callbacks(args, model, strategy, run, monitor, norms),
                          verbose=fit_verbosity(args.verbose), shuffle=False)
    seconds = time.time() - started
    results = final_results(args, model.encoder, images, num_train, run.initial_epoch, seconds)
    knn_sizes = dict(monitor=monitor.sizes, test_size=images.num_test)
    _write_outputs(args, run, model, results, read_history(
        os.path.join(args.out, run.history_csv), history.history), norms.history, knn_sizes)
    raw = results["knn_accuracy_raw_pixels"]
    raw = "not computed: too large" if raw is None else f"{raw:.4f}"
    print(f"kNN accuracy (k={args.knn_k}, cosine, tau=0.1) on the test split: "
          f"{results['knn_accuracy']:.4f} (raw pixels: {raw}); "
          f"training took {seconds:.0f} s")
    print(closing_summary(args.out, run.model_dir, run.history_csv, args.dataset))
    return 0


def training_dataset(args, images, strategy, initial_epoch, steps_per_epoch):
    """The two-view batches of the epochs from `initial_epoch` on.

    Epoch e is `two_view_dataset(..., epoch=e)` (cut to `--steps-per-epoch`
    batches when given), so a resumed run sees exactly the batches of the
    uninterrupted one. With several workers on a streaming dataset every
    worker reads only its own examples (`distribute_two_view_dataset`).
    """
    train = images.train if images.streaming else images.train[0][:args.train_size]
    epochs = max(args.epochs - initial_epoch, 1)
    if images.streaming and args.strategy == "multiworker":
        return data.distribute_two_view_dataset(
            strategy, train, args.batch_size, seed=args.seed, epoch=initial_epoch,
            num_epochs=epochs)
    if not args.steps_per_epoch:
        return data.two_view_dataset(train, args.batch_size, seed=args.seed,
                                     epoch=initial_epoch, num_epochs=epochs)
    dataset = None
    for epoch in range(initial_epoch, initial_epoch + epochs):
        part = data.two_view_dataset(train, args.batch_size, seed=args.seed,
                                     epoch=epoch).take(steps_per_epoch)
        dataset = part if dataset is None else dataset.concatenate(part)
    return dataset


@dataclasses.dataclass(frozen=True)
class _Monitor:
    """The per-epoch kNN monitor's bank and test split, and their sizes."""

    bank: object
    test: object
    sizes: tuple


def monitor_splits(images):
    """The first `MONITOR_BANK` training and `MONITOR_TEST` test images, as
    arrays in [0, 1] or as streamed batches."""
    if not images.streaming:
        (x, y), (xt, yt) = images.train, images.test
        return _Monitor((x[:MONITOR_BANK] / 255.0, y[:MONITOR_BANK]),
                        (xt[:MONITOR_TEST] / 255.0, yt[:MONITOR_TEST]),
                        (min(len(x), MONITOR_BANK), min(len(xt), MONITOR_TEST)))
    sizes = (min(images.num_train, MONITOR_BANK), min(images.num_test, MONITOR_TEST))
    return _Monitor(_spread_subset(images.train, sizes[0]), _spread_subset(images.test, sizes[1]),
                    sizes)


def _spread_subset(source, count, batch_size=250):
    """`count` examples of a streamed split as `(images in [0, 1], labels)`
    batches: ids spread evenly over the split when it can be read at random
    (a class-folder split is class-major, so its first ids would hold only
    its first classes), else the first `count` (TFRecord shards written by
    `write_tfrecords` interleave the classes; TFDS shuffles when it prepares)."""
    if not source.random_access:
        dataset = data.image_dataset(source, labels=True, batch_size=batch_size)
        return dataset.unbatch().take(count).batch(batch_size)
    ids = np.linspace(0, source.num_examples - 1, count).round().astype(np.int64)

    def scale(index, image, label):
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        return image, label

    return source.read(tf.constant(ids)).map(scale).batch(batch_size)


def build_trainer(args, strategy, image_shape, total_steps):
    """The `--preset` model, built and compiled under `strategy`.

    Args:
        args: the parsed `train` arguments (after `validate_train`).
        strategy: the `tf.distribute` strategy of the run.
        image_shape: `(H, W, C)` of the training images.
        total_steps: optimizer steps of the whole run.

    Returns:
        `(model, trainer)`: the model, and what `fit` trains (a `GradCache`
        around it with `--chunk-size`, else the model itself).
    """
    with strategy.scope():
        model = models.from_preset(args.preset,
                                   **preset_overrides(args, image_shape, total_steps))
        model.build((None, 2) + image_shape)
        trainer = GradCache(model, chunk_size=args.chunk_size) if args.chunk_size else model
        trainer.compile(optimizer=make_optimizer(args, total_steps, model.trainable_variables),
                        loss=make_loss(args))
    return model, trainer


def training_callbacks(args, model, strategy, run, monitor, norms):
    """The callbacks of `fit`: kNN monitor, replica BN averaging, CSV log,
    gradient norms, TensorBoard (chief) and the backup, in that order."""
    callbacks = [
        kc_callbacks.KNNMonitor(monitor.bank, monitor.test, k=args.knn_k,
                                every_n_epochs=args.knn_every,
                                encoder=model.encoder),
        # Per-replica BN copies drift apart and a backup keeps one of them;
        # averaging them before each backup lets a resumed run continue
        # from exactly the state the uninterrupted run has.
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs=None: kc_layers.average_replica_statistics(
                model, strategy)),
        HistoryCSV(os.path.join(args.out, run.history_csv), append=run.initial_epoch > 0),
        norms,
    ]
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.out, "logs")))
    # Last: once the backup records an epoch, the other callbacks are done
    # with it (the CSV holds its row), wherever the process is killed after.
    callbacks.append(keras.callbacks.BackupAndRestore(run.backup_dir))
    return callbacks


# Raw pixels are a reference only while their bank stays this small (float32).
RAW_PIXEL_BANK_BYTES = 2 * 2**30


def final_results(args, encoder, images, train_images, initial_epoch, seconds):
    """`results.json` of an image model: the kNN accuracies of the encoder
    and of raw pixels, with the whole training split as the bank (also when
    the encoder trained on part of it) and the whole test split; raw
    pixels are None when their bank would exceed `RAW_PIXEL_BANK_BYTES`."""
    if images.streaming:
        bank = data.image_dataset(images.train, labels=True)
        test = data.image_dataset(images.test, labels=True)
    else:
        bank = (images.train[0] / 255.0, images.train[1])
        test = (images.test[0] / 255.0, images.test[1])
    raw_bytes = images.num_train * int(np.prod(images.image_shape)) * 4
    raw = (evaluation.knn_accuracy(None, bank, test, k=args.knn_k)
           if raw_bytes <= RAW_PIXEL_BANK_BYTES else None)
    return {"knn_accuracy": evaluation.knn_accuracy(encoder, bank, test, k=args.knn_k),
            "knn_accuracy_raw_pixels": raw,
            "knn_bank_size": images.num_train, "train_images": train_images,
            "train_seconds": seconds, "epochs": args.epochs, "initial_epoch": initial_epoch,
            "steps_per_epoch": args.steps_per_epoch,
            "optimizer": args.optimizer, "peak_learning_rate": optimizer_settings(args)[0],
            "command": " ".join(sys.argv)}


def _write_outputs(args, run, model, results, history, norms, knn_sizes):
    os.makedirs(run.model_dir, exist_ok=True)
    export.export_encoder(model, os.path.join(run.model_dir, "saved_model"))
    model.save(os.path.join(run.model_dir, "model.keras"))
    if run.chief:
        write_plots(args.out, history, norms, results, **knn_sizes)
        with open(os.path.join(args.out, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
