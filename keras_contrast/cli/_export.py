"""`keras-contrast export`: the encoder of a `train` run as a SavedModel."""

import os

import keras

from keras_contrast import export
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._validation import check_writable


def export_command(args):
    """Runs `keras-contrast export`.

    Args:
        args: the parsed `export` arguments: a `train` output folder, `--out`
            and `--no-normalize`.

    Returns:
        0, once the SavedModel (signature `serve`: images -> embeddings) is
        written to `--out`.

    Raises:
        UsageError: a bad argument, checked before anything is written.
    """
    if not os.path.isdir(args.model_dir):
        raise UsageError(f"model folder {args.model_dir!r} does not exist")
    check_writable(args.out)
    keras_file = os.path.join(args.model_dir, "model.keras")
    if not os.path.exists(keras_file):
        raise UsageError(f"{args.model_dir!r} holds no model.keras (a `train` output folder)")
    model = keras.models.load_model(keras_file)
    export.export_encoder(model, args.out, normalize=not args.no_normalize)
    print(f"Exported the encoder to {args.out} (signature `serve`: images -> embeddings)")
    return 0
