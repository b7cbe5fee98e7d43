"""Running the `keras-contrast` command in a child process for the tests:
plainly, on a pseudo-terminal, or killed from outside once its backup
records an epoch."""

import json
import os
import pty
import select
import subprocess
import sys
import tempfile
import time

from tests import test_case


def command_env():
    """The environment of a child `keras-contrast` process."""
    return dict(os.environ, PYTHONPATH=test_case.ROOT, TF_CPP_MIN_LOG_LEVEL="2")


def command(*args):
    """`python -m keras_contrast ARGS` as an argv list."""
    return [sys.executable, "-m", "keras_contrast", *args]


def run(*args, timeout=600):
    """Runs the command; returns its `subprocess.CompletedProcess` (text)."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout,
                          env=command_env())


def run_on_terminal(*args, timeout=600):
    """Runs the command with stdout on a pseudo-terminal (stderr a pipe).

    Returns:
        `(returncode, what the terminal showed, stderr)`.
    """
    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command(*args), stdout=slave, stderr=err,
                                   stdin=subprocess.DEVNULL, env=command_env())
        os.close(slave)
        shown = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not select.select([master], [], [], 1.0)[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown.append(chunk)
        finally:
            os.close(master)
            if process.poll() is None:
                process.kill()  # past the timeout
            returncode = process.wait()
        err.seek(0)
        return returncode, b"".join(shown).decode(errors="replace"), err.read().decode()


def recorded_epoch(backup_dir):
    """The epochs Keras' `BackupAndRestore` records as finished in
    `backup_dir`, or `None` before its first backup.

    At the end of each epoch it writes the weights (`latest.weights.h5`),
    then `training_metadata.json` = `{"epoch": epochs finished, "batch": 0}`;
    once the metadata names an epoch, that epoch's backup is complete. A
    file caught while it is written does not parse: `None`, read again.
    """
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError):
        return None


def kill_after_epoch(args, backup_dir, epoch=1, timeout=600, poll_seconds=0.01):
    """Starts the command and kills it (SIGKILL, from outside) as soon as
    `backup_dir` records that epoch `epoch` finished.

    Args:
        args: the command's arguments.
        backup_dir: the run's `--out/backup/worker_0`.
        epoch: the epoch (1-based) whose backup to wait for.
        timeout: seconds to wait before giving up (the process is killed).
        poll_seconds: pause between two reads of the backup.

    Returns:
        `(returncode, epochs the backup records after the process ended,
        the end of its stderr)`; the returncode of a process that was killed
        is `-signal.SIGKILL`.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command(*args), stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, env=command_env())
        deadline = time.monotonic() + timeout
        recorded = None
        try:
            while process.poll() is None and time.monotonic() < deadline:
                recorded = recorded_epoch(backup_dir)
                if recorded is not None and recorded >= epoch:
                    process.kill()
                    break
                time.sleep(poll_seconds)
        finally:
            if process.poll() is None:
                process.kill()
            returncode = process.wait()
        err.seek(0)
        # What the backup holds now the process is dead: where a resumed run starts.
        return returncode, recorded_epoch(backup_dir), err.read().decode()[-3000:]
