"""The command's one-line errors."""

import sys


class UsageError(Exception):
    """A bad command line: reported in one line on stderr, exit code 2."""


def fail(message):
    """Prints `keras-contrast: error: message` on stderr.

    Args:
        message: one line saying what was wrong.

    Returns:
        2, the command's exit code for bad arguments.
    """
    print(f"keras-contrast: error: {message}", file=sys.stderr)
    return 2
