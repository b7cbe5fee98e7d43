#!/bin/sh
# The upper reference of simclr_resnet18_fashion_mnist's card: a supervised ResNet-18 of the
# same width (16) trained for the SimCLR run's training time, read from the shipped preset's
# metadata. Resumable (rerun it); then rerun tools/make_preset.py with
# --references runs/zoo/supervised/reference.json.
set -e
OUT=${1:-runs/zoo/supervised}
SECONDS_BUDGET=$(.venv/bin/python -c "import json; print(json.load(open(
    'keras_contrast/presets/simclr_resnet18_fashion_mnist/metadata.json'))['compute']['train_seconds'])")
exec nice -n 5 .venv/bin/python tools/supervised_reference.py --budget-seconds "$SECONDS_BUDGET" \
    --width 16 --out "$OUT"
