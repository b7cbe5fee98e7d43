#!/bin/sh
# The replica-overhead measurement of simclr_resnet18_fashion_mnist's card: the same SimCLR step
# (width 16, batch 256, sync BN) on one device and on 4 simulated replicas, 60 timed steps each, one
# after the other on an otherwise idle machine. Prints each run's per-step time from Keras' log
# (the first epoch holds the compilation and is left out).
set -e
for REPLICAS in 1 4; do
    .venv/bin/python -m keras_contrast train --model simclr --loss dclw --dataset fashion_mnist \
        --epochs 2 --steps-per-epoch 60 --batch-size 256 --replicas $REPLICAS --norm sync \
        --width 16 --temperature 0.2 --knn-every 100 --verbose 2 --out /tmp/replica_timing_$REPLICAS \
        2>&1 | grep "^60/60" | tail -1 | sed "s/^/replicas=$REPLICAS: /"
    echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
done
