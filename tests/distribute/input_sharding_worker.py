"""One worker of tests/distribute/input_sharding_test.py.

Reads TF_CONFIG, builds a MultiWorkerMirroredStrategy over 2 workers,
reads one epoch of `distribute_two_view_dataset` recording the example ids
(labels are ids) each local replica saw, trains the tiny synchronised-BN
SimCLR of `build_model` for one epoch on the same sharded input, and
writes {"ids": [...], "weights": [...]} as JSON to argv[1].
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_contrast as kc  # noqa: E402

NUM_EXAMPLES, GLOBAL_BATCH, IMAGE = 32, 8, (8, 8, 1)


def images():
    return np.random.default_rng(5).integers(0, 256, (NUM_EXAMPLES,) + IMAGE, dtype=np.uint8)


def flip(image, seed):
    """A cheap stateless augmentation (the test is about the input order)."""
    noise = tf.random.stateless_uniform(tf.shape(image), seed, -0.1, 0.1)
    return tf.clip_by_value(tf.image.stateless_random_flip_left_right(image, seed) + noise,
                            0.0, 1.0)


def build_model():
    """SimCLR: Conv → synchronised BN → ReLU → GAP, DCLW, SGD; the same
    initial weights in every process."""
    keras.utils.set_random_seed(3)
    backbone = keras.Sequential([
        keras.Input(IMAGE),
        keras.layers.Conv2D(4, 3, use_bias=False,
                            kernel_initializer=keras.initializers.GlorotUniform(3)),
        kc.layers.BatchNormalization(synchronized=True),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
    ])
    model = kc.models.SimCLR(backbone, projection_dims=(8, 6))
    model.build((None, 2) + IMAGE)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=kc.losses.DCLW(0.1))
    return model


def dataset(strategy, labels):
    source = kc.data.ArraySource(images(), np.arange(NUM_EXAMPLES) if labels else None)
    return kc.data.distribute_two_view_dataset(strategy, source, GLOBAL_BATCH, seed=4,
                                               labels=labels, augment=flip)


def run(strategy):
    """(ids each local replica saw, initial and final weights)."""
    ids = [[] for _ in range(strategy.num_replicas_in_sync)]
    for _, labels in dataset(strategy, labels=True):
        for r, local in enumerate(strategy.experimental_local_results(labels)):
            ids[r].extend(int(i) for i in local.numpy())
    with strategy.scope():
        model = build_model()
    initial = model.get_weights()
    model.fit(dataset(strategy, labels=False), epochs=1,
              steps_per_epoch=NUM_EXAMPLES // GLOBAL_BATCH, verbose=0)
    return ids, initial, model.get_weights()


def main(output_path):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ids, _, weights = run(strategy)
    ids = [i for i in ids if i]
    with open(output_path, "w") as handle:
        json.dump({"ids": ids, "weights": [w.tolist() for w in weights]}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
