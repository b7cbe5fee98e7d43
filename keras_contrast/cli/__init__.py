"""The `keras-contrast` command: train, evaluate and export contrastive
models on offline data.

    keras-contrast train --model simclr --preset simclr_resnet_tiny --loss dclw \\
        --dataset fashion_mnist --epochs 5 --batch-size 256 --replicas 4 --out runs/demo
    keras-contrast evaluate runs/demo --dataset fashion_mnist
    keras-contrast export runs/demo --out saved_models/simclr_fashion_mnist

Bad arguments print one line on stderr and exit with code 2 before anything
is written.

Modules (all internal, `_`-prefixed, except `entry`): `_startup` (imported
first: TensorFlow's start-up kept off stderr), `entry` (`main`), `_parser`,
`_registry` (models, losses, presets), `_validation`, `_datasets`,
`_factories`, `_runs`, `_train`, `_dual`, `_evaluate`, `_export`, `_plots`,
`_summary`; `_train.train`, `_evaluate.evaluate` and
`_export.export_command` run the three commands.
"""

from keras_contrast.cli import _startup  # noqa: F401  (first; see its docstring)
from keras_contrast.cli._datasets import load_images
from keras_contrast.cli._datasets import wordnet_split
from keras_contrast.cli.entry import main
from keras_contrast.cli._errors import UsageError
from keras_contrast.cli._export import export_command
from keras_contrast.cli._factories import make_loss
from keras_contrast.cli._factories import make_optimizer
from keras_contrast.cli._factories import make_strategy
from keras_contrast.cli._factories import optimizer_settings
from keras_contrast.cli._factories import preset_overrides
from keras_contrast.cli._parser import add_data_arguments
from keras_contrast.cli._parser import build_parser
from keras_contrast.cli._plots import read_history
from keras_contrast.cli._plots import write_plots
from keras_contrast.cli._summary import closing_summary
from keras_contrast.cli._summary import fit_verbosity
from keras_contrast.cli._validation import missing_requirements
from keras_contrast.cli._validation import validate_train

# The command is the public interface; the functions above are importable
# for tests and scripts but are not part of the public API.
__all__ = ["main"]
