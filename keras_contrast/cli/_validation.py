"""The checks of the command line that need no TensorFlow: they run before
anything is written, and each failure is one line with exit code 2."""

import importlib.util
import os

from keras_contrast.checks import check_writable_directory
from keras_contrast.cli import _registry as registry
from keras_contrast.cli._datasets import is_streaming
from keras_contrast.cli._errors import UsageError
from keras_contrast.models.presets import PRESETS


# The image size of the in-memory datasets (--image-size unset); a streamed
# dataset's is known once it is opened (checked then, in preset_overrides).
IN_MEMORY_IMAGE_SIZES = {"fashion_mnist": 28, "digits": 8}


def validate_train(args):
    """Checks the `train` arguments and fills in the per-model defaults.

    Sets `args.preset` and `args.loss` to the model's defaults when they are
    not given, then checks them, the numbers, the model options, the batch
    split, the dataset, `--out` and the requirements, in that order.

    Args:
        args: the parsed `train` arguments (`build_parser().parse_args`).

    Raises:
        UsageError: the first argument found wrong, in one line.
    """
    _check_model(args)
    check_positive(args, "epochs", "batch_size", "chunk_size", "replicas", "temperature",
                   "learning_rate", "train_size", "knn_k", "knn_every", "image_size",
                   "queue_size", "steps_per_epoch", "width", "vocabulary_size", "patch_size")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    _check_model_options(args)
    if args.warmup_steps < 0 or (args.warmup_steps and args.schedule != "cosine"):
        raise UsageError(f"--warmup-steps must be >= 0 and needs --schedule cosine, got "
                         f"{args.warmup_steps} with --schedule {args.schedule}")
    _check_batches(args)
    check_dataset(args.dataset)
    check_train_size(args.dataset, args.train_size)
    if args.steps_per_epoch and args.strategy == "multiworker" and is_streaming(args.dataset):
        raise UsageError("--steps-per-epoch with --strategy multiworker needs an in-memory "
                         "--dataset (fashion_mnist, digits): the workers' streamed shards "
                         "are read whole each epoch")
    check_writable(args.out)
    _check_requirements(args.model)


def _check_model(args):
    """`--model`, `--preset` (default: the model's), the model's dataset and
    `--loss` (default: the model's)."""
    if args.model not in registry.MODELS:
        raise UsageError(f"unknown --model {args.model!r}; choose one of {list(registry.MODELS)}")
    spec = registry.MODELS[args.model]
    # A loss with a preset of its own (--model dual --loss siglip) defaults to it.
    args.preset = args.preset or registry.preset_for(
        args.model, args.loss or spec.default_loss, spec.default_preset)
    if args.preset not in PRESETS:
        raise UsageError(f"unknown --preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    owner = next((name for name, other in registry.MODELS.items()
                  if other.dataset == args.dataset), None)
    if spec.dataset != args.dataset and (spec.dataset or owner):
        name = args.model if spec.dataset else owner
        raise UsageError(f"--model {name} trains on --dataset {registry.MODELS[name].dataset}, "
                         "and only it does")
    if args.preset not in registry.presets_of(args.model):
        raise UsageError(f"--preset {args.preset!r} is not a {args.model} preset (use one of "
                         f"{registry.presets_of(args.model)})")
    args.loss = args.loss or spec.default_loss
    if args.loss not in registry.LOSSES:
        raise UsageError(f"unknown --loss {args.loss!r}; choose one of {registry.LOSS_NAMES}")
    if args.loss not in spec.losses:
        raise UsageError(f"--loss {args.loss} does not fit --model {args.model} "
                         f"(use one of {spec.losses})")


def _needs_model(args, option):
    """Raises unless `--model` takes the command-line `option`."""
    if option not in registry.MODELS[args.model].options:
        flag = "--" + option.replace("_", "-")
        raise UsageError(f"{flag} needs --model {' or '.join(registry.models_taking(option))}")


def _check_model_options(args):
    """`--queue-size`, `--momentum` and `--shuffle-bn` against `--model`."""
    if args.queue_size is not None:
        _needs_model(args, "queue_size")
    if args.vocabulary_size is not None:
        _needs_model(args, "vocabulary_size")
        if args.vocabulary_size < 2:
            raise UsageError(f"--vocabulary-size must be >= 2 (id 0 is the padding), got "
                             f"{args.vocabulary_size}")
    if args.patch_size is not None:
        _needs_model(args, "patch_size")
        size = args.image_size or IN_MEMORY_IMAGE_SIZES.get(args.dataset)
        if size is not None and size % args.patch_size:
            raise UsageError(f"--patch-size {args.patch_size} must divide the image size {size}")
    if args.momentum is not None:
        _needs_model(args, "momentum")
        if not 0.0 <= args.momentum <= 1.0:
            raise UsageError(f"--momentum must lie in [0, 1], got {args.momentum}")
    if args.shuffle_bn:
        _needs_model(args, "shuffle_bn")
        if not registry.accepts(args.model, "shuffle_bn"):
            raise UsageError("--shuffle-bn: this version of keras_contrast.models."
                             f"{registry.MODELS[args.model].model_class} has no Shuffle BN")
    if "queue_size" in registry.MODELS[args.model].options:
        queue_size = args.queue_size or PRESETS[args.preset]["model_args"]["queue_size"]
        if queue_size < args.batch_size:
            raise UsageError(f"--queue-size {queue_size} must be >= --batch-size "
                             f"{args.batch_size} (a step enqueues the whole batch)")


def _check_batches(args):
    """The global batch splits into replicas of at least 2 and into chunks."""
    per_replica = args.batch_size // args.replicas
    if args.batch_size % args.replicas or per_replica < 2:
        raise UsageError(f"--batch-size {args.batch_size} must split into --replicas "
                         f"{args.replicas} batches of at least 2")
    if args.chunk_size is not None and per_replica % args.chunk_size:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by --replicas "
                         f"{args.replicas} x --chunk-size {args.chunk_size}")


def check_positive(args, *names):
    """Raises a UsageError naming the first of the `names` (attributes of
    `args`) that is set and not > 0."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def check_train_size(name, train_size):
    """Raises a UsageError for `--train-size` with a streaming `--dataset`."""
    if train_size and is_streaming(name):
        raise UsageError(f"--train-size applies to the datasets held in memory "
                         f"(fashion_mnist, digits); --dataset {name} streams: pass "
                         "--steps-per-epoch to shorten its epochs")


def check_dataset(name):
    """Raises a UsageError unless `--dataset name` is a known dataset,
    `tfds:NAME`, `tfrecord:GLOB` with `{split}` or an existing folder."""
    if name in registry.DATASETS:
        return
    if name.startswith("tfds:"):
        if not name[len("tfds:"):]:
            raise UsageError("--dataset tfds:NAME needs a dataset name after 'tfds:'")
        return
    if name.startswith("tfrecord:"):
        if "{split}" not in name:
            raise UsageError(f"--dataset {name} needs '{{split}}' in its glob, e.g. "
                             "tfrecord:records/{split}-*.tfrecord, to find the train and "
                             "test shards")
        return
    if not os.path.isdir(name):
        raise UsageError(f"--dataset {name!r} is neither {' nor '.join(registry.DATASETS)} "
                         "nor a folder")


def check_writable(out):
    """Raises a UsageError unless `--out out` is, or can become, a writable folder."""
    try:
        check_writable_directory(out, "--out")
    except ValueError as error:
        raise UsageError(str(error).replace("`--out`", "--out").rstrip(".")) from None


def missing_requirements(model):
    """The modules `train --model model` needs that cannot be imported.

    Args:
        model: a `--model` name.

    Returns:
        The list of module names (`matplotlib`, `tensorboard`) missing.
    """
    return [name for name in registry.MODELS[model].requirements
            if importlib.util.find_spec(name) is None]


def _check_requirements(model):
    missing = missing_requirements(model)
    if missing:
        uses = ", ".join(f"{name} ({registry.REQUIREMENTS[name]})" for name in missing)
        raise UsageError(f"train needs {uses}, not installed: pip install "
                         "'keras-contrast[cli]' (in a checkout: pip install -e '.[cli]')")
