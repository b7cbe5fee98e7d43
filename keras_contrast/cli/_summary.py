"""What `train` shows a person: Keras' progress, and the closing summary."""

import os
import shlex
import sys

PLOTS = ("loss.png", "knn.png", "grad_norms.png")


def fit_verbosity(verbose, stream=None):
    """Keras' `fit(verbose=...)` of `train --verbose`.

    Args:
        verbose: `--verbose` (0, 1 or 2), or `None` when not given.
        stream: where Keras writes its progress (default: `sys.stdout`).

    Returns:
        `verbose` when given; else 1 (a progress bar with ETA, redrawn in
        place) when `stream` is a terminal, 2 (one line per epoch) when it is
        a file or a pipe, where a redrawn bar would pile up.
    """
    if verbose is not None:
        return verbose
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def closing_summary(out, model_dir, history_csv, dataset, exportable=True):
    """The lines `train` ends with: where its outputs are and how to open them.

    Lists only what the run wrote.

    Args:
        out: `--out`.
        model_dir: the folder of `model.keras` and `saved_model/` (`out`, or
            `out/worker_<i>` for a worker other than the chief).
        history_csv: the name of this worker's CSV log in `out`.
        dataset: `--dataset` (for the `evaluate` command shown).
        exportable: whether to show the `export` command (image models).

    Returns:
        The summary, several lines.
    """
    def path(*names):
        return os.path.join(*names)

    lines = [f"Outputs in {out}:"]
    if os.path.exists(path(model_dir, "model.keras")):
        lines.append(f"  model        {path(model_dir, 'model.keras')} "
                     "(keras.models.load_model; `import keras_contrast` first)")
    if os.path.isdir(path(model_dir, "saved_model")):
        lines.append(f"  SavedModel   {path(model_dir, 'saved_model')} (tf.saved_model.load)")
    plots = [path(out, name) for name in PLOTS if os.path.exists(path(out, name))]
    if plots:
        lines.append(f"  plots        {', '.join(plots)}")
    written = [path(out, name) for name in ("results.json", history_csv)
               if os.path.exists(path(out, name))]
    if written:
        lines.append(f"  results      {', '.join(written)}")
    if os.path.isdir(path(out, "logs")):
        lines.append(f"  TensorBoard  tensorboard --logdir {shlex.quote(path(out, 'logs'))}"
                     "  (then open http://localhost:6006)")
    commands = [f"keras-contrast evaluate {shlex.quote(out)} --dataset {shlex.quote(dataset)}"]
    if exportable:
        commands.append(f"keras-contrast export {shlex.quote(out)} --out DIR")
    lines.append(f"  next         {'; '.join(commands)}")
    return "\n".join(lines)
