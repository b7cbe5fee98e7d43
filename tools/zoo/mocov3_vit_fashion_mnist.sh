#!/bin/sh
# Trains the shipped preset mocov3_vit_fashion_mnist (docs/presets.md): MoCo v3 with the
# mocov3_vit_mini ViT (width 64, depth 6, 4 heads, MLP 256, frozen random patch projection,
# sin-cos positions) on 7x7 patches (a 4x4 grid: 0.40 s per step here against 1.0 s for the
# default 7x7 grid of 4x4 patches), 12 epochs, about 25 min on 2 idle cores. One device: the
# heads' BN then normalises over the global batch of 256, what sync BN over simulated replicas
# computes. Run from the repository root; rerunning resumes from $OUT/backup
# (BackupAndRestore). tools/make_preset.py then scores the run and writes the package preset.
set -e
OUT=${1:-runs/zoo/mocov3_vit_fashion_mnist}
exec nice -n 5 .venv/bin/python -m keras_contrast train --model mocov3 \
    --preset mocov3_vit_mini --patch-size 7 --dataset fashion_mnist --epochs 12 \
    --batch-size 256 --temperature 0.2 --optimizer adamw --learning-rate 2e-3 \
    --weight-decay 0.1 --schedule cosine --warmup-steps 468 --knn-every 3 --seed 0 \
    --verbose 2 --out "$OUT"
