"""What `train` builds from its arguments: the strategy, optimizer, loss and
the preset's overrides."""

import json
import os

import keras
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast.cli import _registry as registry
from keras_contrast.cli._errors import UsageError
from keras_contrast.optimizers import LARS
from keras_contrast.optimizers import WarmupCosineDecay
from keras_contrast.optimizers import is_bias_or_norm
from keras_contrast.optimizers import scaled_learning_rate


def make_strategy(args):
    """The `tf.distribute` strategy of `--strategy` and `--replicas`:
    `MultiWorkerMirroredStrategy` (from `TF_CONFIG`), simulated CPU replicas,
    or the default strategy."""
    if args.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if args.replicas > 1:
        return distribute.simulated_cpu_strategy(args.replicas)
    return tf.distribute.get_strategy()


def task_index():
    """`(index, type)` of this process's task in `TF_CONFIG` (`(0, "worker")`
    without one)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return int(task.get("index", 0)), task.get("type", "worker")


def optimizer_settings(args):
    """The peak learning rate and weight decay of `--optimizer`.

    Args:
        args: the parsed `train` arguments.

    Returns:
        `(peak learning rate, weight decay)`, with the defaults of
        `registry.OPTIMIZER_DEFAULTS` and `--lr-scaling` applied.
    """
    base, weight_decay, scaling = registry.OPTIMIZER_DEFAULTS[args.optimizer]
    base = base if args.learning_rate is None else args.learning_rate
    weight_decay = weight_decay if args.weight_decay is None else args.weight_decay
    scaling = args.lr_scaling or scaling
    rate = base if scaling == "none" else scaled_learning_rate(base, args.batch_size, scaling)
    return rate, weight_decay


def make_optimizer(args, total_steps, variables):
    """The `--optimizer` with the learning rate of `--schedule`.

    A schedule reads `optimizer.iterations`, so a resumed run continues it
    where it stopped. Weight decay reaches the `variables` of rank >= 2 only
    (`keras_contrast.optimizers.is_bias_or_norm`, LARS' own rule).

    Args:
        args: the parsed `train` arguments.
        total_steps: optimizer steps of the whole run (`--schedule cosine`).
        variables: the trainable variables the optimizer will update.

    Returns:
        A Keras optimizer.
    """
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
    """The `keras_contrast.models.from_preset` arguments of an image model.

    Args:
        args: the parsed `train` arguments (after `validate_train`).
        image_shape: `(H, W, C)` of the training images.
        total_steps: optimizer steps of the whole run (MoCo v3's momentum schedule).

    Returns:
        A dict of keyword arguments for `from_preset(args.preset, ...)`.
    """
    overrides = {}
    if registry.MODELS[args.model].backbone == "resnet":
        overrides["input_shape"] = image_shape
    else:
        patch_size = args.patch_size or max(1, image_shape[0] // 7)
        if image_shape[0] % patch_size:
            raise UsageError(f"--patch-size {patch_size} must divide the image size "
                             f"{image_shape[0]}")
        overrides.update(image_size=image_shape[0], num_channels=image_shape[2],
                         patch_size=patch_size, total_steps=total_steps)
    if args.norm:
        overrides["norm"] = args.norm
    if args.width:
        overrides["width"] = args.width
    if args.queue_size:
        overrides["queue_size"] = args.queue_size
    if args.momentum is not None:
        overrides["momentum"] = args.momentum
    # MoCo gained `shuffle_bn`; pass it only to a model that takes it.
    if registry.accepts(args.model, "shuffle_bn"):
        overrides["shuffle_bn"] = args.shuffle_bn
    return overrides


def make_loss(args):
    """The `--loss` at `--temperature` (every loss class's first argument).

    A model that learns its temperature (the dual encoders' presets) feeds
    its own τ to the loss in training, so `--temperature` does not reach
    it; `--loss siglip` keeps SigLIPLoss's bias (-10) unless the model
    learns one (`siglip_dual_encoder_small` does)."""
    return registry.loss_class(args.loss)(args.temperature)
