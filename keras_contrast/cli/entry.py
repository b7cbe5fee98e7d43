"""The entry of the `keras-contrast` command and `python -m keras_contrast`."""

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._errors import fail
from keras_contrast.cli._evaluate import evaluate
from keras_contrast.cli._export import export_command
from keras_contrast.cli._parser import build_parser
from keras_contrast.cli._train import train

COMMANDS = {"train": train, "evaluate": evaluate, "export": export_command}


@keras_contrast_export("keras_contrast.cli.main")
def main(argv=None):
    """Runs the `keras-contrast` command.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0, or 2 for bad arguments, reported in one line on
        stderr before anything is written (argparse's own errors exit with 2
        through `SystemExit`).

    Example:

    >>> main(["train", "--dataset", "digits", "--epochs", "1", "--out", "runs/digits"])
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, FileNotFoundError) as error:
        return fail(str(error))
