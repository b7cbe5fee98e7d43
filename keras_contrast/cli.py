"""The `keras-contrast` command: train, evaluate and export contrastive
models on offline data.

    keras-contrast train --model simclr --preset simclr_resnet_tiny --loss dclw \\
        --dataset fashion_mnist --epochs 5 --batch-size 256 --replicas 4 --out runs/demo
    keras-contrast evaluate runs/demo --dataset fashion_mnist
    keras-contrast export runs/demo --out saved_models/simclr_fashion_mnist

Bad arguments print one line on stderr and exit with code 2 before anything
is written.
"""

import argparse
import importlib.util
import inspect
import json
import os
import sys
import time

LOSSES = ("infonce", "dcl", "dclw", "clip", "mocov3")
# --model: (the losses it takes, the default loss, the keras_contrast.models
# class of its presets, the default preset)
MODELS = {
    "simclr": (("infonce", "dcl", "dclw"), "dclw", "SimCLR", "simclr_resnet_tiny"),
    "moco": (("infonce", "dcl"), "infonce", "MoCo", "moco_resnet_tiny"),
    "mocov3": (("mocov3",), "mocov3", "MoCoV3", "mocov3_vit_tiny"),
    "dual": (("clip",), "clip", "DualEncoder", "dual_encoder_small"),
}
DATASETS = ("fashion_mnist", "digits", "wordnet")
OPTIMIZERS = ("adamw", "lars", "sgd")
# --optimizer: default --learning-rate, --weight-decay, --lr-scaling. LARS
# follows SimCLR (base 0.075 x sqrt(batch), weight decay 1e-6), SGD MoCo
# (0.03, 1e-4; both with momentum 0.9).
OPTIMIZER_DEFAULTS = {"adamw": (2e-3, 1e-4, "none"), "lars": (0.075, 1e-6, "sqrt"),
                      "sgd": (0.03, 1e-4, "none")}
# What `train` imports beyond the library: the `cli` extra of setup.cfg.
REQUIREMENTS = {"matplotlib": "the plots", "tensorboard": "the TensorBoard logs"}


class UsageError(Exception):
    """A bad command line: reported in one line, exit code 2."""


def _fail(message):
    print(f"keras-contrast: error: {message}", file=sys.stderr)
    return 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (bad choice, bad type) in one line, exit 2,
    like the command's own checks (`keras-contrast train -h` shows the usage)."""

    def error(self, message):
        command = self.prog.partition(" ")[2]  # "train" in "keras-contrast train"
        sys.exit(_fail(f"{command}: {message}" if command else message))


def build_parser():
    parser = _OneLineParser(
        prog="keras-contrast", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a contrastive model")
    train.add_argument("--model", default="simclr", help=f"one of {list(MODELS)}")
    train.add_argument("--preset", default=None,
                       help="a keras_contrast.models preset (default: per model)")
    train.add_argument("--loss", default=None, help=f"one of {LOSSES}")
    train.add_argument("--dataset", default="fashion_mnist",
                       help=f"{' | '.join(DATASETS)} | tfds:NAME | a folder of Fashion-MNIST "
                       "IDX files or of train/ and test/ class folders")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--batch-size", type=int, default=256, help="global batch size")
    train.add_argument("--chunk-size", type=int, default=None,
                       help="GradCache chunk size per replica (default: no gradient cache)")
    train.add_argument("--replicas", type=int, default=1, help="simulated CPU replicas")
    train.add_argument("--strategy", default="mirrored", choices=("mirrored", "multiworker"),
                       help="multiworker: MultiWorkerMirroredStrategy from TF_CONFIG")
    train.add_argument("--norm", default=None, help="backbone normalization (e.g. sync, batch)")
    train.add_argument("--width", type=int, default=None, help="ResNet base width override")
    train.add_argument("--temperature", type=float, default=0.2)
    train.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                       help="adamw (Keras' AdamW), lars (keras_contrast.optimizers.LARS, "
                       "momentum 0.9; SimCLR's recipe) or sgd (momentum 0.9; MoCo's). "
                       "No weight decay on variables of rank <= 1 (biases, normalization "
                       "scales/offsets, the learnable temperature)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="adamw: 2e-3, sgd: 0.03; lars: the base rate 0.075 that "
                       "--lr-scaling multiplies by sqrt(--batch-size)")
    train.add_argument("--lr-scaling", default=None, choices=("none", "linear", "sqrt"),
                       help="SimCLR's rule: the rate is --learning-rate x --batch-size / 256 "
                       "(linear) or x sqrt(--batch-size) (sqrt); default sqrt for lars, "
                       "none otherwise")
    train.add_argument("--weight-decay", type=float, default=None,
                       help="adamw and sgd: 1e-4 (decoupled), lars: 1e-6")
    train.add_argument("--queue-size", type=int, default=None,
                       help="--model moco: negatives in the queue (default: the preset's; "
                       ">= --batch-size)")
    train.add_argument("--momentum", type=float, default=None,
                       help="--model moco / mocov3: momentum of the key encoder's EMA "
                       "(default: the preset's)")
    train.add_argument("--shuffle-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="--model simclr / moco: Shuffle BN (the key view's batch is "
                       "shuffled across replicas)")
    train.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                       help="learning rate: constant, or cosine decay to 0 over the run "
                       "(after --warmup-steps of linear warm-up from 0)")
    train.add_argument("--warmup-steps", type=int, default=0,
                       help="linear learning-rate warm-up steps of --schedule cosine")
    train.add_argument("--train-size", type=int, default=None,
                       help="train on the first N training images (default: all); "
                       "the final kNN bank is always the whole training split")
    train.add_argument("--knn-k", type=int, default=200)
    train.add_argument("--knn-every", type=int, default=1, help="kNN monitor every N epochs")
    train.add_argument("--seed", type=int, default=0)
    add_data_arguments(train)
    train.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                       help="TensorFlow op determinism (bit-identical reruns and resumes)")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    train.add_argument("--interrupt-after-epoch", type=int, default=None,
                       help=argparse.SUPPRESS)  # tests: die right after that epoch's backup

    evaluate = commands.add_parser("evaluate", help="kNN and linear-probe accuracy")
    evaluate.add_argument("model_dir", help="a `train` output folder or an exported SavedModel")
    evaluate.add_argument("--dataset", default="fashion_mnist")
    add_data_arguments(evaluate)
    evaluate.add_argument("--knn-k", type=int, default=200)
    evaluate.add_argument("--probe-epochs", type=int, default=30)
    evaluate.add_argument("--train-size", type=int, default=None,
                          help="kNN bank: the first N training images; wordnet: the training "
                          "run's --train-size (default: read from its results.json)")
    evaluate.add_argument("--seed", type=int, default=None,
                          help="wordnet: the training run's --seed (default: its results.json)")

    export = commands.add_parser("export", help="export the encoder as a SavedModel")
    export.add_argument("model_dir", help="a `train` output folder")
    export.add_argument("--out", required=True)
    export.add_argument("--no-normalize", action="store_true",
                        help="do not L2-normalise the embeddings")
    return parser


def _check_positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def add_data_arguments(parser):
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images of a folder dataset to this square size")
    parser.add_argument("--data-dir", default=None,
                        help="where a tfds:NAME dataset is prepared (TFDS' default if unset)")
    parser.add_argument("--download", action="store_true",
                        help="let TFDS download and prepare a tfds:NAME dataset")


def _check_dataset(name):
    if name in DATASETS:
        return
    if name.startswith("tfds:"):
        if not name[len("tfds:"):]:
            raise UsageError("--dataset tfds:NAME needs a dataset name after 'tfds:'")
        return
    if not os.path.isdir(name):
        raise UsageError(f"--dataset {name!r} is neither {' nor '.join(DATASETS)} nor a folder")


def _check_writable(out):
    from keras_contrast.checks import check_writable_directory

    try:
        check_writable_directory(out, "--out")
    except ValueError as error:
        raise UsageError(str(error).replace("`--out`", "--out").rstrip(".")) from None


def missing_requirements(model):
    """The modules `train --model model` needs that cannot be imported."""
    needed = ["matplotlib"] if model == "dual" else ["matplotlib", "tensorboard"]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def _check_requirements(model):
    missing = missing_requirements(model)
    if missing:
        uses = ", ".join(f"{name} ({REQUIREMENTS[name]})" for name in missing)
        raise UsageError(f"train needs {uses}, not installed: pip install "
                         "'keras-contrast[cli]' (in a checkout: pip install -e '.[cli]')")


def _moco_signature():
    from keras_contrast.models import MoCo

    return inspect.signature(MoCo.__init__).parameters


def validate_train(args):
    """Every check that needs no TensorFlow, before anything is written."""
    from keras_contrast.models.presets import PRESETS

    if args.model not in MODELS:
        raise UsageError(f"unknown --model {args.model!r}; choose one of {list(MODELS)}")
    losses, default_loss, model_class, default_preset = MODELS[args.model]
    args.preset = args.preset or default_preset
    if args.preset not in PRESETS:
        raise UsageError(f"unknown --preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    if (args.model == "dual") != (args.dataset == "wordnet"):
        raise UsageError("--model dual trains on --dataset wordnet, and only it does")
    if PRESETS[args.preset]["model"].__name__ != model_class:
        raise UsageError(f"--preset {args.preset!r} is not a {args.model} preset (use one of "
                         f"{[n for n, p in PRESETS.items() if p['model'].__name__ == model_class]})")
    args.loss = args.loss or default_loss
    if args.loss not in LOSSES:
        raise UsageError(f"unknown --loss {args.loss!r}; choose one of {LOSSES}")
    if args.loss not in losses:
        raise UsageError(f"--loss {args.loss} does not fit --model {args.model} "
                         f"(use one of {losses})")
    _check_positive(args, "epochs", "batch_size", "chunk_size", "replicas", "temperature",
                    "learning_rate", "train_size", "knn_k", "knn_every", "image_size",
                    "queue_size")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.queue_size is not None and args.model != "moco":
        raise UsageError("--queue-size needs --model moco")
    if args.momentum is not None:
        if args.model not in ("moco", "mocov3"):
            raise UsageError("--momentum needs --model moco or mocov3")
        if not 0.0 <= args.momentum <= 1.0:
            raise UsageError(f"--momentum must lie in [0, 1], got {args.momentum}")
    if args.shuffle_bn:
        if args.model not in ("simclr", "moco"):
            raise UsageError("--shuffle-bn needs --model simclr or moco")
        if args.model == "moco" and "shuffle_bn" not in _moco_signature():
            raise UsageError("--shuffle-bn: this version of keras_contrast.models.MoCo has "
                             "no Shuffle BN")
    if args.model == "moco":
        queue_size = args.queue_size or PRESETS[args.preset]["model_args"]["queue_size"]
        if queue_size < args.batch_size:
            raise UsageError(f"--queue-size {queue_size} must be >= --batch-size "
                             f"{args.batch_size} (a step enqueues the whole batch)")
    if args.warmup_steps < 0 or (args.warmup_steps and args.schedule != "cosine"):
        raise UsageError(f"--warmup-steps must be >= 0 and needs --schedule cosine, got "
                         f"{args.warmup_steps} with --schedule {args.schedule}")
    per_replica = args.batch_size // args.replicas
    if args.batch_size % args.replicas or per_replica < 2:
        raise UsageError(f"--batch-size {args.batch_size} must split into --replicas "
                         f"{args.replicas} batches of at least 2")
    if args.chunk_size is not None and per_replica % args.chunk_size:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by --replicas "
                         f"{args.replicas} x --chunk-size {args.chunk_size}")
    _check_dataset(args.dataset)
    _check_writable(args.out)
    _check_requirements(args.model)


def load_images(name, train_size=None, image_size=None, data_dir=None, download=False):
    """`((x_train, y_train), (x_test, y_test))` uint8 images `(n, H, W, C)`."""
    import numpy as np

    from keras_contrast import data

    if name == "fashion_mnist":
        (x, y), (xt, yt) = data.load_fashion_mnist()
    elif name == "digits":
        (x, y), (xt, yt) = data.load_digits()
    elif name.startswith("tfds:"):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # one-line errors, no TFDS chatter
        try:
            (x, y), (xt, yt) = data.load_tfds(name[len("tfds:"):], data_dir=data_dir,
                                              download=download)
        except (ImportError, ValueError) as error:
            raise UsageError(f"--dataset {name}: {str(error).splitlines()[0]} "
                             "(CLI: --data-dir, --download)") from None
    elif all(os.path.exists(os.path.join(name, f)) for f in data.FASHION_MNIST_FILES.values()):
        (x, y), (xt, yt) = data.load_fashion_mnist(name)
    elif os.path.isdir(os.path.join(name, "train")):
        size = None if image_size is None else (image_size, image_size)
        try:
            (x, y), (xt, yt) = data.load_image_folder(name, image_size=size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        raise UsageError(f"--dataset folder {name!r} holds neither Fashion-MNIST IDX files "
                         "nor train/ and test/ class folders")
    if train_size:
        x, y = x[:train_size], y[:train_size]
    add_channel = (lambda a: a[..., None]) if x.ndim == 3 else (lambda a: a)
    return (add_channel(x), y.astype(np.int64)), (add_channel(xt), yt.astype(np.int64))


def make_strategy(args):
    import tensorflow as tf

    from keras_contrast import distribute

    if args.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if args.replicas > 1:
        return distribute.simulated_cpu_strategy(args.replicas)
    return tf.distribute.get_strategy()


def optimizer_settings(args):
    """`(peak learning rate, weight decay)` of `--optimizer`, with the
    defaults of OPTIMIZER_DEFAULTS and `--lr-scaling` applied."""
    from keras_contrast.optimizers import scaled_learning_rate

    base, weight_decay, scaling = OPTIMIZER_DEFAULTS[args.optimizer]
    base = base if args.learning_rate is None else args.learning_rate
    weight_decay = weight_decay if args.weight_decay is None else args.weight_decay
    scaling = args.lr_scaling or scaling
    rate = base if scaling == "none" else scaled_learning_rate(base, args.batch_size, scaling)
    return rate, weight_decay


def make_optimizer(args, total_steps, variables):
    """The `--optimizer` with the learning rate of `--schedule` (a schedule
    reads `optimizer.iterations`, so a resumed run continues it where it
    stopped) and weight decay on the `variables` of rank >= 2 only
    (`keras_contrast.optimizers.is_bias_or_norm`, LARS' own rule).

    Args:
        args: the parsed `train` arguments.
        total_steps: optimizer steps of the whole run (`--schedule cosine`).
        variables: the trainable variables the optimizer will update.
    """
    import keras

    from keras_contrast.optimizers import LARS
    from keras_contrast.optimizers import WarmupCosineDecay
    from keras_contrast.optimizers import is_bias_or_norm

    peak, weight_decay = optimizer_settings(args)
    learning_rate = peak
    if args.schedule == "cosine":
        total_steps = max(int(total_steps), 1)
        learning_rate = WarmupCosineDecay(
            peak, min(args.warmup_steps, total_steps - 1), total_steps)
    if args.optimizer == "lars":
        # LARS excludes rank <= 1 from weight decay and the trust ratio itself.
        return LARS(learning_rate, momentum=0.9, weight_decay=weight_decay)
    if args.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=weight_decay)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if is_bias_or_norm(v)])
    return optimizer


def preset_overrides(args, image_shape, total_steps):
    """The `from_preset` arguments of the image models' command line."""
    overrides = {}
    if args.model in ("simclr", "moco"):
        overrides["input_shape"] = image_shape
    else:
        overrides.update(image_size=image_shape[0], num_channels=image_shape[2],
                         patch_size=max(1, image_shape[0] // 7), total_steps=total_steps)
    if args.norm:
        overrides["norm"] = args.norm
    if args.width:
        overrides["width"] = args.width
    if args.queue_size:
        overrides["queue_size"] = args.queue_size
    if args.momentum is not None:
        overrides["momentum"] = args.momentum
    # MoCo gained `shuffle_bn`; pass it only to a MoCo that takes it.
    if args.model == "simclr" or (args.model == "moco" and "shuffle_bn" in _moco_signature()):
        overrides["shuffle_bn"] = args.shuffle_bn
    return overrides


def make_loss(args):
    from keras_contrast import losses

    return {"infonce": losses.InfoNCE, "dcl": losses.DCL, "dclw": losses.DCLW,
            "clip": losses.CLIPLoss, "mocov3": losses.MoCoV3Loss}[args.loss](args.temperature)


def _task_index():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return int(task.get("index", 0)), task.get("type", "worker")


def train(args):
    validate_train(args)
    if args.strategy == "mirrored" and args.replicas > 1:
        from keras_contrast import distribute

        distribute.configure_logical_cpus(max(args.replicas, 1))
    import keras

    from keras_contrast import callbacks as kc_callbacks
    from keras_contrast import data
    from keras_contrast import evaluation
    from keras_contrast import export
    from keras_contrast import layers as kc_layers
    from keras_contrast import models
    from keras_contrast.training import GradCache

    if args.model == "dual":
        return train_dual(args)
    (x_bank, y_bank), (x_test, y_test) = load_images(
        args.dataset, image_size=args.image_size, data_dir=args.data_dir, download=args.download)
    x_train, y_train = x_bank[:args.train_size], y_bank[:args.train_size]
    if len(x_train) < args.batch_size:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(x_train)} "
                         "training images")
    index, task_type = _task_index()
    chief = args.strategy != "multiworker" or index == 0
    os.makedirs(args.out, exist_ok=True)
    backup_dir = os.path.join(args.out, "backup", f"worker_{index}")
    initial_epoch = 0
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(metadata):
        with open(metadata) as handle:
            initial_epoch = int(json.load(handle)["epoch"])

    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        import tensorflow as tf

        # Same run, same bits: a resumed run then equals the uninterrupted one.
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(args)
    image_shape = tuple(x_train.shape[1:])
    steps_per_epoch = len(x_train) // args.batch_size
    overrides = preset_overrides(args, image_shape, args.epochs * steps_per_epoch)
    with strategy.scope():
        model = models.from_preset(args.preset, **overrides)
        model.build((None, 2) + image_shape)
        trainer = model
        if args.chunk_size:
            trainer = GradCache(model, chunk_size=args.chunk_size)
        trainer.compile(
            optimizer=make_optimizer(args, args.epochs * steps_per_epoch,
                                     model.trainable_variables),
            loss=make_loss(args),
        )
    knn_bank = (x_train[:10000] / 255.0, y_train[:10000])
    knn_test = (x_test[:2000] / 255.0, y_test[:2000])
    norms = kc_callbacks.GradientNormMonitor()
    callbacks = [
        kc_callbacks.KNNMonitor(knn_bank, knn_test, k=args.knn_k, every_n_epochs=args.knn_every,
                                encoder=model.encoder),
        # Per-replica BN copies drift apart and a backup keeps one of them;
        # averaging them before each backup lets a resumed run continue
        # from exactly the state the uninterrupted run has.
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs=None: kc_layers.average_replica_statistics(
                model, strategy)),
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.CSVLogger(os.path.join(args.out, f"history_{index}.csv"),
                                  append=initial_epoch > 0),
        norms,
    ]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.out, "logs")))
    if args.interrupt_after_epoch is not None:
        callbacks.append(_interrupt_after(args.interrupt_after_epoch))
    dataset = data.two_view_dataset(
        x_train, args.batch_size, seed=args.seed, epoch=initial_epoch,
        num_epochs=max(args.epochs - initial_epoch, 1))
    started = time.time()
    history = trainer.fit(dataset, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                          callbacks=callbacks, verbose=args.verbose)
    seconds = time.time() - started
    encoder = model.encoder
    test = (x_test / 255.0, y_test)
    # The kNN protocol's bank is the whole training split, also when the
    # encoder trained on part of it.
    bank = (x_bank / 255.0, y_bank)
    knn = evaluation.knn_accuracy(encoder, bank, test, k=args.knn_k)
    knn_pixels = evaluation.knn_accuracy(None, bank, test, k=args.knn_k)
    results = {"knn_accuracy": knn, "knn_accuracy_raw_pixels": knn_pixels,
               "knn_bank_size": len(x_bank), "train_images": len(x_train),
               "train_seconds": seconds, "epochs": args.epochs,
               "initial_epoch": initial_epoch, "optimizer": args.optimizer,
               "peak_learning_rate": optimizer_settings(args)[0],
               "command": " ".join(sys.argv)}
    target = args.out if chief else os.path.join(args.out, f"worker_{index}")
    os.makedirs(target, exist_ok=True)
    export.export_encoder(model, os.path.join(target, "saved_model"))
    model.save(os.path.join(target, "model.keras"))
    if chief:
        write_plots(args.out, read_history(os.path.join(args.out, f"history_{index}.csv"),
                                           history.history), norms.history, results)
        with open(os.path.join(args.out, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    print(f"kNN accuracy (k={args.knn_k}, cosine, tau=0.1) on the test split: {knn:.4f} "
          f"(raw pixels: {knn_pixels:.4f}); training took {seconds:.0f} s")
    return 0


def train_dual(args):
    """The dual encoder on WordNet gloss ↔ words pairs: recall@1/5 on
    held-out pairs."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_contrast import data
    from keras_contrast import export
    from keras_contrast import models

    train_pairs, held_out = wordnet_split(args.train_size, args.seed)
    batches = data.batches_without_repeated_words(train_pairs, args.batch_size, seed=args.seed)
    if not batches:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the WordNet pairs")
    queries = data.hash_tokens([p["gloss"] for p in train_pairs])
    keys = data.hash_tokens([p["key"] for p in train_pairs])
    order = np.concatenate(batches)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    strategy = make_strategy(args)
    with strategy.scope():
        model = models.from_preset(args.preset)
        model.build(((None, queries.shape[1]), (None, keys.shape[1])))
        model.compile(
            optimizer=make_optimizer(args, args.epochs * (len(order) // args.batch_size),
                                     model.trainable_variables),
            loss=make_loss(args))
    # Batches of the packer, in order (none repeats a word across synsets).
    dataset = tf.data.Dataset.from_tensor_slices(
        ((queries[order], keys[order]),)).batch(args.batch_size, drop_remainder=True)
    started = time.time()
    history = model.fit(dataset, epochs=args.epochs, verbose=args.verbose,
                        callbacks=[keras.callbacks.CSVLogger(os.path.join(args.out,
                                                                          "history_0.csv"))])
    seconds = time.time() - started
    held_queries = data.hash_tokens([p["gloss"] for p in held_out])
    held_keys = data.hash_tokens([p["key"] for p in held_out])
    recall = data.retrieval_recall(model.encode_a(held_queries).numpy(),
                                   model.encode_b(held_keys).numpy())
    results = {"recall_at_1": recall[1], "recall_at_5": recall[5], "held_out_pairs": len(held_out),
               "chance_at_1": 1.0 / len(held_out), "train_seconds": seconds,
               "final_loss": history.history["loss"][-1], "command": " ".join(sys.argv),
               "seed": args.seed, "train_size": args.train_size}
    export.export_dual_encoder(model, os.path.join(args.out, "saved_model"))
    model.save(os.path.join(args.out, "model.keras"))
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    write_plots(args.out, history.history, {})
    print(f"Held-out retrieval of {len(held_out)} WordNet pairs: recall@1 {recall[1]:.3f}, "
          f"recall@5 {recall[5]:.3f} (chance@1 {1.0 / len(held_out):.4f}); "
          f"training took {seconds:.0f} s")
    return 0


def wordnet_split(train_size, seed):
    """Training pairs and (at most 1,000) held-out pairs of unseen synsets:
    the same split for `train` and `evaluate` given the same arguments."""
    from keras_contrast import data

    train_pairs, held_out = data.load_wordnet_pairs(max_pairs=train_size, seed=seed)
    return train_pairs, held_out[:1000]


def evaluate_dual(args):
    """Held-out recall@1/5 of a dual encoder, on the pairs its training run
    held out (split arguments read from its results.json)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_contrast import data

    keras_file = os.path.join(args.model_dir, "model.keras")
    if os.path.exists(keras_file):
        model = keras.models.load_model(keras_file)
        encode_a, encode_b = model.encode_a, model.encode_b
    elif os.path.exists(os.path.join(args.model_dir, "saved_model.pb")):
        loaded = tf.saved_model.load(args.model_dir)
        if not hasattr(loaded, "encode_a"):
            raise UsageError(f"{args.model_dir!r} is not a dual-encoder SavedModel "
                             "(no encode_a signature)")
        encode_a = lambda tokens: loaded.encode_a(tf.constant(tokens))  # noqa: E731
        encode_b = lambda tokens: loaded.encode_b(tf.constant(tokens))  # noqa: E731
    else:
        raise UsageError(f"{args.model_dir!r} holds neither model.keras nor a SavedModel")
    split = {"seed": args.seed or 0, "train_size": args.train_size}
    results_file = os.path.join(args.model_dir, "results.json")
    if os.path.exists(results_file) and args.seed is None and args.train_size is None:
        with open(results_file) as handle:
            stored = json.load(handle)
        split = {name: stored.get(name, split[name]) for name in split}
    _, held_out = wordnet_split(split["train_size"], split["seed"])
    queries = data.hash_tokens([p["gloss"] for p in held_out])
    keys = data.hash_tokens([p["key"] for p in held_out])
    recall = data.retrieval_recall(np.asarray(encode_a(queries)), np.asarray(encode_b(keys)))
    print(json.dumps({"recall_at_1": recall[1], "recall_at_5": recall[5],
                      "held_out_pairs": len(held_out), **split}))
    return 0


def _interrupt_after(epoch):
    """A callback that exits abruptly after epoch `epoch` (1-based), once
    that epoch's backup is written (tests of the resume)."""
    import keras

    def on_epoch_end(index, logs=None):
        if index + 1 == epoch:
            sys.stdout.flush()
            os._exit(3)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def read_history(csv_path, history):
    """The per-epoch logs of the whole run: `CSVLogger`'s file (which a resumed
    run appends to) when it exists, else Keras' `history` of this process."""
    import csv

    if not os.path.exists(csv_path):
        return history
    merged = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "epoch" and value not in ("", "NA"):
                    merged.setdefault(key, []).append(float(value))
    return merged or history


def write_plots(out, history, norms, results=None):
    """loss.png, knn.png and grad_norms.png in `out`.

    `results` (from `results.json`) adds the final kNN accuracy of the encoder
    and of raw pixels, measured on the whole split, to knn.png.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for key, name, label in (("loss", "loss.png", "training loss"),
                             ("knn_accuracy", "knn.png", "kNN accuracy")):
        values = history.get(key)
        if not values:
            continue
        figure, axis = plt.subplots(figsize=(5.5, 3.4))
        epochs = range(1, len(values) + 1)
        axis.plot(epochs, values, marker="o",
                  label="monitor (first 10,000 train / 2,000 test)" if key != "loss" else None)
        if key == "knn_accuracy" and results and "knn_accuracy" in results:
            bank, last = results["knn_bank_size"], len(values)
            axis.plot([last], [results["knn_accuracy"]], marker="*", markersize=12,
                      linestyle="none", color="tab:green",
                      label=f"final encoder ({bank:,} bank, whole test split)")
            axis.axhline(results["knn_accuracy_raw_pixels"], color="gray", linestyle="--",
                         label="raw pixels (same protocol as final)")
            axis.legend(fontsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        figure.tight_layout()
        figure.savefig(os.path.join(out, name), dpi=100)
        plt.close(figure)
    if norms:
        figure, axis = plt.subplots(figsize=(6, 3.2))
        for key, values in norms.items():
            axis.plot(values, label=key.split("/")[-1], linewidth=1)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("gradient max |g|")
        axis.legend()
        figure.tight_layout()
        figure.savefig(os.path.join(out, "grad_norms.png"), dpi=100)
        plt.close(figure)


def _load_encoder(model_dir):
    import keras
    import tensorflow as tf

    keras_file = os.path.join(model_dir, "model.keras")
    if os.path.exists(keras_file):
        return keras.models.load_model(keras_file).encoder
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        loaded = tf.saved_model.load(model_dir)
        return lambda x, training=False: loaded.serve(tf.constant(x, tf.float32))
    raise UsageError(f"{model_dir!r} holds neither model.keras nor a SavedModel")


def evaluate(args):
    if not os.path.isdir(args.model_dir):
        raise UsageError(f"model folder {args.model_dir!r} does not exist")
    _check_dataset(args.dataset)
    _check_positive(args, "knn_k", "probe_epochs", "train_size", "image_size")
    if args.dataset == "wordnet":
        return evaluate_dual(args)
    from keras_contrast import evaluation

    encoder = _load_encoder(args.model_dir)
    (x, y), (xt, yt) = load_images(args.dataset, args.train_size, image_size=args.image_size,
                                   data_dir=args.data_dir, download=args.download)
    train_split, test_split = (x / 255.0, y), (xt / 255.0, yt)
    knn = evaluation.knn_accuracy(encoder, train_split, test_split, k=args.knn_k)
    probe, _ = evaluation.linear_probe(encoder, train_split, test_split, epochs=args.probe_epochs)
    print(json.dumps({"knn_accuracy": knn, "linear_probe_accuracy": probe}))
    return 0


def export_command(args):
    if not os.path.isdir(args.model_dir):
        raise UsageError(f"model folder {args.model_dir!r} does not exist")
    _check_writable(args.out)
    keras_file = os.path.join(args.model_dir, "model.keras")
    if not os.path.exists(keras_file):
        raise UsageError(f"{args.model_dir!r} holds no model.keras (a `train` output folder)")
    import keras

    from keras_contrast import export

    model = keras.models.load_model(keras_file)
    export.export_encoder(model, args.out, normalize=not args.no_normalize)
    print(f"Exported the encoder to {args.out} (signature `serve`: images -> embeddings)")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"train": train, "evaluate": evaluate, "export": export_command}[args.command](args)
    except UsageError as error:
        return _fail(str(error))
    except FileNotFoundError as error:
        return _fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
