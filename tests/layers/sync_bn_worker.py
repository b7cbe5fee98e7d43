"""One worker of the multi-worker test in synchronized_batch_norm_test.py,
and the data and training call that test shares with it.

Reads TF_CONFIG, builds a MultiWorkerMirroredStrategy (one replica per
worker), runs one training call of each BatchNormalization variant on this
worker's rows of a fixed global batch, and writes the outputs, gradients and
moving statistics as JSON to the path given as argv[1].
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_contrast import layers  # noqa: E402
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics  # noqa: E402

GLOBAL_BATCH = 32
SHAPE = (3, 3, 4)  # height, width, channels
MOMENTUM, EPSILON = 0.9, 1e-3


class MeanStatisticsBatchNormalization(ReplicaMeanStatistics, keras.layers.BatchNormalization):
    pass


# name: (layer class, synchronized)
VARIANTS = {
    "keras_sync": (keras.layers.BatchNormalization, True),
    "keras_contrast_sync": (layers.BatchNormalization, True),
    "keras_per_replica": (keras.layers.BatchNormalization, False),
    "replica_mean_per_replica": (MeanStatisticsBatchNormalization, False),
}


def global_batch():
    """Inputs of realistic scale (mean 3, std 2: Keras' synchronised variance
    is the one-pass E[x²] - μ²) and the weights of the loss Σ w·y."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(GLOBAL_BATCH,) + SHAPE).astype("float32")
    w = rng.normal(size=(GLOBAL_BATCH,) + SHAPE).astype("float32")
    return x, w


def initial_weights():
    """gamma, beta, moving mean, moving variance."""
    rng = np.random.default_rng(1)
    channels = SHAPE[-1]
    return [
        (1.0 + 0.2 * rng.normal(size=channels)).astype("float32"),
        rng.normal(size=channels).astype("float32"),
        rng.normal(size=channels).astype("float32"),
        (1.0 + rng.uniform(size=channels)).astype("float32"),
    ]


def make_layer(layer_class, synchronized):
    layer = layer_class(momentum=MOMENTUM, epsilon=EPSILON, synchronized=synchronized)
    layer.build((None,) + SHAPE)
    layer.set_weights(initial_weights())
    return layer


def training_call(layer, x, w):
    """Outputs and the gradients of Σ w·y w.r.t. x, gamma and beta."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(w * y)
    return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))


def main(output_path):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    local = GLOBAL_BATCH // strategy.num_replicas_in_sync
    x, w = (tf.constant(a[task * local : (task + 1) * local]) for a in global_batch())
    results = {}
    for name, (layer_class, synchronized) in VARIANTS.items():
        with strategy.scope():
            layer = make_layer(layer_class, synchronized)

        @tf.function
        def step(x, w):
            return strategy.run(lambda x, w: training_call(layer, x, w), args=(x, w))

        y, x_gradient, gamma_gradient, beta_gradient = step(x, w)
        results[name] = {
            "outputs": y.numpy().tolist(),
            "input_gradient": x_gradient.numpy().tolist(),
            "gamma_gradient": strategy.reduce("SUM", gamma_gradient, axis=None).numpy().tolist(),
            "beta_gradient": strategy.reduce("SUM", beta_gradient, axis=None).numpy().tolist(),
            # Read outside the replicas, as get_weights() and saving do.
            "moving_mean": layer.moving_mean.numpy().tolist(),
            "moving_variance": layer.moving_variance.numpy().tolist(),
        }
    with open(output_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1])
