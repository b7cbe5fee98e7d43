"""The `keras-contrast` command: train, evaluate and export contrastive
models on offline data.

    keras-contrast train --model simclr --preset simclr_resnet_tiny --loss dclw \\
        --dataset fashion_mnist --epochs 5 --batch-size 256 --replicas 4 --out runs/demo
    keras-contrast evaluate runs/demo --dataset fashion_mnist
    keras-contrast export runs/demo --out saved_models/simclr_fashion_mnist

Bad arguments print one line on stderr and exit with code 2 before anything
is written.

Modules: `startup` (imported first: TensorFlow's start-up kept off stderr),
`entry` (`main`), `parser`, `registry` (models, losses, presets),
`validation`, `datasets`, `factories`, `train`, `dual`, `evaluate`,
`export`, `plots`, `summary`; `train.train`, `evaluate.evaluate` and
`export.export_command` run the three commands.
"""

from keras_contrast.cli import startup  # noqa: F401  (first; see its docstring)
from keras_contrast.cli.datasets import load_images
from keras_contrast.cli.datasets import wordnet_split
from keras_contrast.cli.entry import main
from keras_contrast.cli.errors import UsageError
from keras_contrast.cli.export import export_command
from keras_contrast.cli.factories import make_loss
from keras_contrast.cli.factories import make_optimizer
from keras_contrast.cli.factories import make_strategy
from keras_contrast.cli.factories import optimizer_settings
from keras_contrast.cli.factories import preset_overrides
from keras_contrast.cli.parser import add_data_arguments
from keras_contrast.cli.parser import build_parser
from keras_contrast.cli.plots import read_history
from keras_contrast.cli.plots import write_plots
from keras_contrast.cli.summary import closing_summary
from keras_contrast.cli.summary import fit_verbosity
from keras_contrast.cli.validation import missing_requirements
from keras_contrast.cli.validation import validate_train

# The command is the public interface; the functions above are importable
# for tests and scripts but are not part of the public API.
__all__ = ["main"]
