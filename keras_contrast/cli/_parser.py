"""The command line's argparse parser."""

import argparse
import sys

from keras_contrast.cli import _registry as registry
from keras_contrast.cli._errors import fail

DESCRIPTION = ("The `keras-contrast` command: train, evaluate and export contrastive\n"
               "models on offline data.")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (bad choice, bad type) in one line, exit 2,
    like the command's own checks (`keras-contrast train -h` shows the usage)."""

    def error(self, message):
        command = self.prog.partition(" ")[2]  # "train" in "keras-contrast train"
        sys.exit(fail(f"{command}: {message}" if command else message))


def build_parser():
    """The parser of `keras-contrast train | evaluate | export`.

    Returns:
        An `argparse.ArgumentParser` whose errors print one line and exit
        with code 2.

    Example:

    >>> args = build_parser().parse_args(["train", "--out", "runs/x", "--model", "moco"])
    >>> args.model, args.epochs
    ('moco', 5)
    """
    parser = _OneLineParser(prog="keras-contrast", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a contrastive model"))

    evaluate = commands.add_parser("evaluate", help="kNN and linear-probe accuracy")
    evaluate.add_argument("model_dir", nargs="?", default=None,
                          help="a `train` output folder or an exported SavedModel")
    evaluate.add_argument("--preset", default=None,
                          help="instead of MODEL_DIR: a keras_contrast.models preset with "
                          "weights (a shipped name or a save_to_preset folder)")
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


def add_train_arguments(train):
    """Adds the model, data and run arguments of `train` to its sub-parser."""
    train.add_argument("--model", default="simclr", help=f"one of {list(registry.MODELS)}")
    train.add_argument("--preset", default=None,
                       help="a keras_contrast.models preset (default: per model)")
    train.add_argument("--loss", default=None, help=f"one of {registry.LOSS_NAMES}")
    train.add_argument("--dataset", default="fashion_mnist",
                       help=f"{' | '.join(registry.DATASETS)} | tfds:NAME | "
                       "tfrecord:GLOB with {split} (e.g. records/{split}-*.tfrecord) | a folder "
                       "of Fashion-MNIST IDX files or of train/ and test/ class folders "
                       "(class folders, TFRecords and TFDS stream from disk)")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--batch-size", type=int, default=256, help="global batch size")
    train.add_argument("--chunk-size", type=int, default=None,
                       help="GradCache chunk size per replica (default: no gradient cache)")
    train.add_argument("--replicas", type=int, default=1, help="simulated CPU replicas")
    train.add_argument("--strategy", default="mirrored", choices=("mirrored", "multiworker"),
                       help="multiworker: MultiWorkerMirroredStrategy from TF_CONFIG")
    train.add_argument("--norm", default=None, help="backbone normalization (e.g. sync, batch)")
    train.add_argument("--width", type=int, default=None,
                       help="ResNet base width override; --model dual: the text towers' width "
                       "(default: the preset's, 256)")
    train.add_argument("--vocabulary-size", type=int, default=None,
                       help="--model dual: hashed-token vocabulary of the towers (default: the "
                       "preset's, 32768; the embeddings hold vocabulary x width weights each)")
    train.add_argument("--patch-size", type=int, default=None,
                       help="--model mocov3: the ViT's patch size, dividing the image size "
                       "(default: image size // 7, a 7x7 grid; tokens, and so time, grow with "
                       "the square of the grid)")
    train.add_argument("--temperature", type=float, default=0.2)
    add_optimizer_arguments(train)
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
                       "the final kNN bank is always the whole training split; "
                       "in-memory datasets only (fashion_mnist, digits)")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cut every epoch to its first N batches (quick trials; "
                       "default: the whole epoch)")
    train.add_argument("--knn-k", type=int, default=200)
    train.add_argument("--knn-every", type=int, default=1, help="kNN monitor every N epochs")
    train.add_argument("--seed", type=int, default=0)
    add_data_arguments(train)
    train.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                       help="TensorFlow op determinism (bit-identical reruns and resumes)")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--verbose", type=int, default=None, choices=(0, 1, 2),
                       help="Keras' fit verbosity: 0 silent, 1 a progress bar with ETA, 2 one "
                       "line per epoch (default: 1 when stdout is a terminal, else 2)")


def add_optimizer_arguments(train):
    """Adds `--optimizer`, its learning rate and weight decay to `train`."""
    train.add_argument("--optimizer", default="adamw", choices=registry.OPTIMIZERS,
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


def add_data_arguments(parser):
    """Adds `--image-size`, `--channels`, `--data-dir` and `--download` to `parser`."""
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize the images of a streaming dataset (class folders, "
                        "tfrecord:, tfds:) to this square size")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3),
                        help="decode the images of a streaming dataset to 1 (gray) or 3 (RGB) "
                        "channels")
    parser.add_argument("--data-dir", default=None,
                        help="where a tfds:NAME dataset is prepared (TFDS' default if unset)")
    parser.add_argument("--download", action="store_true",
                        help="let TFDS download and prepare a tfds:NAME dataset")
