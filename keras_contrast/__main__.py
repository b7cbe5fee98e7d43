"""`python -m keras_contrast` = the `keras-contrast` command."""

import sys

from keras_contrast.cli import main

sys.exit(main())
