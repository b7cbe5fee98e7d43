"""`train` and `evaluate` of `--model dual`: the dual encoder on WordNet
gloss <-> words pairs, scored by held-out retrieval recall@1/5."""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_contrast import data
from keras_contrast import export
from keras_contrast import models
from keras_contrast.cli import _registry as registry
from keras_contrast.cli._datasets import wordnet_split
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._factories import make_loss
from keras_contrast.cli._factories import make_optimizer
from keras_contrast.cli._factories import make_strategy
from keras_contrast.cli._plots import read_history
from keras_contrast.cli._plots import write_plots
from keras_contrast.cli._runs import HistoryCSV
from keras_contrast.cli._runs import Run
from keras_contrast.cli._summary import closing_summary
from keras_contrast.cli._summary import fit_verbosity
from keras_contrast.data import wordnet


def train_dual(args):
    """`train --model dual` (after `validate_train`): recall@1/5 on held-out
    pairs of synsets the training pairs do not hold.

    Args:
        args: the parsed `train` arguments.

    `--loss siglip` trains `siglip_dual_encoder_small` (learnable τ from
    0.1 and bias from -10) unless `--preset` names another preset, which
    is then an error (`registry.check_preset_fits_loss`).

    Returns:
        0.
    """
    problem = registry.check_preset_fits_loss(args.model, args.loss, args.preset)
    if problem:
        raise UsageError(problem)
    train_pairs, held_out = wordnet_split(args.train_size, args.seed)
    batches = data.batches_without_repeated_words(train_pairs, args.batch_size, seed=args.seed)
    if not batches:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the WordNet pairs")
    towers = {name: getattr(args, name) for name in ("vocabulary_size", "width")
              if getattr(args, name) is not None}
    vocabulary_size = towers.get("vocabulary_size", VOCABULARY_SIZE)
    queries = data.hash_tokens([p["gloss"] for p in train_pairs], vocabulary_size)
    keys = data.hash_tokens([p["key"] for p in train_pairs], vocabulary_size)
    order = np.concatenate(batches)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    strategy = make_strategy(args)
    with strategy.scope():
        model = models.from_preset(args.preset, **towers)
        model.build(((None, queries.shape[1]), (None, keys.shape[1])))
        model.compile(
            optimizer=make_optimizer(args, args.epochs * (len(order) // args.batch_size),
                                     model.trainable_variables),
            loss=make_loss(args))
    # Batches of the packer, in order (none repeats a word across synsets).
    dataset = tf.data.Dataset.from_tensor_slices(
        ((queries[order], keys[order]),)).batch(args.batch_size, drop_remainder=True)
    run = Run.start(args)
    callbacks = [
        HeldOutRecallMonitor(held_out, vocabulary_size),
        HistoryCSV(os.path.join(args.out, run.history_csv), append=run.initial_epoch > 0,
                   always=("recall_at_1", "recall_at_5")),
        # Last: a run killed after an epoch's backup resumes from it (the
        # same batches every epoch, so the resumed run is the uninterrupted one).
        keras.callbacks.BackupAndRestore(run.backup_dir),
    ]
    started = time.time()
    history = model.fit(dataset, epochs=args.epochs, verbose=fit_verbosity(args.verbose),
                        shuffle=False,  # the packer's order; Keras would only warn
                        callbacks=callbacks)
    seconds = time.time() - started
    recall = held_out_recall(model.encode_a, model.encode_b, held_out, vocabulary_size)
    results = {"recall_at_1": recall[1], "recall_at_5": recall[5], "held_out_pairs": len(held_out),
               "chance_at_1": 1.0 / len(held_out), "train_seconds": seconds,
               "final_loss": history.history["loss"][-1], "command": " ".join(sys.argv),
               "seed": args.seed, "train_size": args.train_size,
               "initial_epoch": run.initial_epoch,
               "vocabulary_size": vocabulary_size}
    export.export_dual_encoder(model, os.path.join(args.out, "saved_model"))
    model.save(os.path.join(args.out, "model.keras"))
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    write_plots(args.out, read_history(os.path.join(args.out, run.history_csv),
                                       history.history), {})
    print(f"Held-out retrieval of {len(held_out)} WordNet pairs: recall@1 {recall[1]:.3f}, "
          f"recall@5 {recall[5]:.3f} (chance@1 {1.0 / len(held_out):.4f}); "
          f"training took {seconds:.0f} s")
    print(closing_summary(args.out, args.out, run.history_csv, args.dataset, exportable=False))
    return 0


# The presets' tokenizer: keras_contrast.data.hash_tokens' defaults.
VOCABULARY_SIZE = wordnet.VOCABULARY_SIZE


def tower_vocabulary(model):
    """The hashed-token vocabulary of a dual encoder's first tower: its
    Embedding's `input_dim` (the tokenizer must not hash past it)."""
    embeddings = [layer for layer in model.tower_a.layers
                  if isinstance(layer, keras.layers.Embedding)]
    return embeddings[0].input_dim if embeddings else VOCABULARY_SIZE


class HeldOutRecallMonitor(keras.callbacks.Callback):
    """Adds recall@1/5 on the held-out pairs to every epoch's logs
    (`recall_at_1`, `recall_at_5`): the retrieval curve of a dual run.

    Args:
        held_out: the held-out pairs (`gloss`, `key`).
        vocabulary_size: the towers' hashed-token vocabulary.
    """

    def __init__(self, held_out, vocabulary_size):
        super().__init__()
        self.held_out = held_out
        self.vocabulary_size = vocabulary_size

    def on_epoch_end(self, epoch, logs=None):
        recall = held_out_recall(self.model.encode_a, self.model.encode_b, self.held_out,
                                 self.vocabulary_size)
        if logs is not None:
            logs["recall_at_1"], logs["recall_at_5"] = recall[1], recall[5]


def held_out_recall(encode_a, encode_b, held_out, vocabulary_size=VOCABULARY_SIZE):
    """Recall@k of retrieving each held-out key from its gloss, the texts
    hashed into `vocabulary_size` ids."""
    queries = data.hash_tokens([p["gloss"] for p in held_out], vocabulary_size)
    keys = data.hash_tokens([p["key"] for p in held_out], vocabulary_size)
    return data.retrieval_recall(np.asarray(encode_a(queries)), np.asarray(encode_b(keys)))


def _load_dual_encoder(model_dir):
    """`(encode_a, encode_b, vocabulary size)` of a dual encoder's `.keras`
    file or SavedModel (a SavedModel's vocabulary: its run's results.json,
    else the presets')."""
    keras_file = os.path.join(model_dir, "model.keras")
    if os.path.exists(keras_file):
        model = keras.models.load_model(keras_file)
        return model.encode_a, model.encode_b, tower_vocabulary(model)
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        loaded = tf.saved_model.load(model_dir)
        if not hasattr(loaded, "encode_a"):
            raise UsageError(f"{model_dir!r} is not a dual-encoder SavedModel "
                             "(no encode_a signature)")
        vocabulary_size = VOCABULARY_SIZE
        results_file = os.path.join(os.path.dirname(os.path.normpath(model_dir)), "results.json")
        if os.path.exists(results_file):
            with open(results_file) as handle:
                vocabulary_size = json.load(handle).get("vocabulary_size", vocabulary_size)
        return (lambda tokens: loaded.encode_a(tf.constant(tokens)),
                lambda tokens: loaded.encode_b(tf.constant(tokens)), vocabulary_size)
    raise UsageError(f"{model_dir!r} holds neither model.keras nor a SavedModel")


def evaluate_dual(args, model=None):
    """`evaluate --dataset wordnet`: held-out recall@1/5 of a dual encoder on
    the pairs its training run held out (the split's `--seed` and
    `--train-size` read from its results.json, or from a preset's
    metadata.json, unless given).

    Args:
        args: the parsed `evaluate` arguments.
        model: the `DualEncoder` of `--preset`, or None (`args.model_dir`).

    Returns:
        0, after printing the scores as one JSON line.
    """
    split = {"seed": args.seed or 0, "train_size": args.train_size}
    if model is None:
        encode_a, encode_b, vocabulary_size = _load_dual_encoder(args.model_dir)
        results_file = os.path.join(args.model_dir, "results.json")
    else:
        if not isinstance(model, models.DualEncoder):
            raise UsageError(f"--preset {args.preset!r} is not a dual encoder; --dataset "
                             "wordnet scores dual encoders")
        encode_a, encode_b = model.encode_a, model.encode_b
        vocabulary_size = tower_vocabulary(model)
        folder = (models.preset_folder(args.preset)
                  if args.preset in models.list_presets() else args.preset)
        results_file = os.path.join(folder, "metadata.json")
    if os.path.exists(results_file) and args.seed is None and args.train_size is None:
        with open(results_file) as handle:
            stored = json.load(handle)
        stored = stored.get("split", stored)
        split = {name: stored.get(name, split[name]) for name in split}
    _, held_out = wordnet_split(split["train_size"], split["seed"])
    recall = held_out_recall(encode_a, encode_b, held_out, vocabulary_size)
    print(json.dumps({"recall_at_1": recall[1], "recall_at_5": recall[5],
                      "held_out_pairs": len(held_out), **split}))
    return 0
