"""What a `train` process writes where (`Run`) and its per-epoch CSV log
(`HistoryCSV`): shared by the image models (`_train`) and the dual
encoder (`_dual`)."""

import dataclasses
import json
import os

import keras

from keras_contrast.cli._factories import task_index


@dataclasses.dataclass(frozen=True)
class Run:
    """Where this process of the run writes, and the epoch it starts at."""

    index: int  # the worker's index in TF_CONFIG
    chief: bool  # writes the plots, results.json and TensorBoard logs
    backup_dir: str
    model_dir: str  # model.keras and saved_model/
    initial_epoch: int  # > 0: resumed from the backup

    @classmethod
    def start(cls, args):
        index, _ = task_index()
        chief = args.strategy != "multiworker" or index == 0
        os.makedirs(args.out, exist_ok=True)
        backup_dir = os.path.join(args.out, "backup", f"worker_{index}")
        initial_epoch = 0
        metadata = os.path.join(backup_dir, "training_metadata.json")
        if os.path.exists(metadata):
            with open(metadata) as handle:
                initial_epoch = int(json.load(handle)["epoch"])
        model_dir = args.out if chief else os.path.join(args.out, f"worker_{index}")
        return cls(index, chief, backup_dir, model_dir, initial_epoch)

    @property
    def history_csv(self):
        return f"history_{self.index}.csv"


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras' `CSVLogger` with columns for `always` from the first epoch.

    `CSVLogger` fixes its columns at the first epoch's logs, which lack
    `knn_accuracy` when `--knn-every` > 1 (and a resumed run's first epoch
    may lack it while the header it appends to holds it): those values were
    dropped. Missing values are written as `NA`, as `CSVLogger` does.

    Args:
        filename: the CSV file.
        append: append to an existing file (a resumed run).
        always: log names that get a column whether or not the first epoch
            logs them.
    """

    def __init__(self, filename, append=False, always=("knn_accuracy",)):
        super().__init__(filename, append=append)
        self.always = tuple(always)

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            logs = dict(logs or {})
            for key in self.always:
                logs.setdefault(key, "NA")
        super().on_epoch_end(epoch, logs)
