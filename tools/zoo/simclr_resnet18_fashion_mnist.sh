#!/bin/sh
# Trains the shipped preset simclr_resnet18_fashion_mnist (docs/presets.md): 30 epochs at
# width 16, about 75 min on 2 idle cores. Run from the repository root; rerunning resumes from
# $OUT/backup (BackupAndRestore). tools/make_preset.py then scores the run and writes the
# package preset.
set -e
OUT=${1:-runs/zoo/simclr_resnet18_fashion_mnist}
exec nice -n 5 .venv/bin/python -m keras_contrast train --model simclr --loss dclw \
    --dataset fashion_mnist --epochs 30 --batch-size 256 --replicas 4 --norm sync --width 16 \
    --temperature 0.2 --optimizer adamw --schedule cosine --warmup-steps 468 --knn-every 2 \
    --seed 0 --verbose 2 --out "$OUT"
