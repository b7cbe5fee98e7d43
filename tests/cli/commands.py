"""What the command tests share: a tiny run and `cli.main` in this process."""

import os

# A tiny run; SMALL keeps Keras quiet, SMALL_RUN leaves --verbose to its default.
SMALL_RUN = ["--dataset", "digits", "--batch-size", "64", "--width", "4", "--knn-k", "10",
             "--train-size", "512", "--seed", "3"]
SMALL = [*SMALL_RUN, "--verbose", "0"]


def main_in_process(argv):
    """`cli.main(argv)`'s exit code, also when argparse exits."""
    from keras_contrast import cli

    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse
        return exit_.code


def final_weights(out):
    import keras

    model = keras.models.load_model(os.path.join(out, "model.keras"))
    return model.get_weights()
