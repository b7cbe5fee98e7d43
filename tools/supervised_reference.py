"""The upper reference of a zoo card: a supervised ResNet of the same width,
trained for the same time as the self-supervised run.

    python tools/supervised_reference.py --budget-seconds S --width 8 --out DIR

ResNet-18 (CIFAR stem, per-replica BN on one device) + a linear softmax
layer, trained with labels on Fashion-MNIST (random horizontal flip and a
random shift of up to 2 pixels, the usual light supervised augmentation),
AdamW 2e-3 with weight decay 1e-4 off biases and BN, warm-up for 1 % of the
run then cosine decay to 0. The run's length in steps is fixed on its first
invocation from 30 timed steps, so that training takes `--budget-seconds`;
it is written to `DIR/plan.json` and a rerun resumes from
`DIR/backup` (BackupAndRestore) with the same plan. The results are the
classifier's test accuracy and the kNN / 30-epoch linear probe of its
backbone features with the cards' protocol, in `DIR/reference.json` (a list
that `tools/make_preset.py --references` reads).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_contrast import evaluation  # noqa: E402
from keras_contrast.data import load_fashion_mnist  # noqa: E402
from keras_contrast.models import ResNetBackbone  # noqa: E402
from keras_contrast.optimizers import WarmupCosineDecay  # noqa: E402
from keras_contrast.optimizers import is_bias_or_norm  # noqa: E402

BATCH = 256
CALIBRATION_STEPS = 30


def build(width, total_steps):
    backbone = ResNetBackbone(18, stem="cifar", norm="batch", width=width,
                              input_shape=(28, 28, 1))
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(backbone(inputs)))
    schedule = WarmupCosineDecay(2e-3, max(1, total_steps // 100), max(total_steps, 2))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if is_bias_or_norm(v)])
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, backbone


def batches(x, y, seed, steps, first_step=0):
    """Shuffled, augmented batches `first_step` to `steps - 1`, keyed by
    (seed, example position): flip and a shift of up to 2 pixels (pad 2,
    random 28x28 crop), stateless, so a resumed run sees the batches of
    the uninterrupted one."""
    n = len(x)
    epochs = -(-steps * BATCH // n)
    order = np.concatenate([np.random.default_rng([seed, e]).permutation(n)
                            for e in range(epochs)])[:steps * BATCH]
    images, labels = tf.constant(x), tf.constant(y.astype(np.int64))

    def augment(position, index):
        key = tf.stack([tf.cast(seed, tf.int64), position])
        image = tf.cast(tf.gather(images, index), tf.float32)[..., None] / 255.0
        image = tf.image.stateless_random_flip_left_right(image, key)
        image = tf.pad(image, [[2, 2], [2, 2], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(image, (28, 28, 1), key + 1)
        return image, tf.gather(labels, index)

    start = first_step * BATCH
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.arange(start, len(order), dtype=np.int64), order[start:].astype(np.int64)))
    return dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(
        BATCH, drop_remainder=True).prefetch(2)


def plan(args, x, y):
    """The run's total steps: from the plan file, or timed now."""
    path = os.path.join(args.out, "plan.json")
    if os.path.exists(path):
        return json.load(open(path))
    model, _ = build(args.width, 10**6)
    data = iter(batches(x, y, args.seed, CALIBRATION_STEPS + 5))
    for _ in range(5):
        model.train_on_batch(*next(data))
    started = time.time()
    for _ in range(CALIBRATION_STEPS):
        model.train_on_batch(*next(data))
    step_seconds = (time.time() - started) / CALIBRATION_STEPS
    result = {"step_seconds": step_seconds, "budget_seconds": args.budget_seconds,
              "total_steps": max(2, int(args.budget_seconds / step_seconds)),
              "load_average": os.getloadavg()[0]}
    os.makedirs(args.out, exist_ok=True)
    json.dump(result, open(path, "w"), indent=2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, required=True)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on (and use as the kNN bank) the first N training images")
    parser.add_argument("--test-size", type=int, default=None,
                        help="score on the first N test images (default: all 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.budget_seconds > 0 or args.width <= 0:
        parser.error("--budget-seconds and --width must be > 0")
    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = load_fashion_mnist()
    x, y = x[:args.train_size], y[:args.train_size]
    xt, yt = xt[:args.test_size], yt[:args.test_size]
    run = plan(args, x, y)
    # Epochs of at most one pass; the planned steps rounded up to a whole
    # number of equal epochs (at most epochs - 1 extra steps).
    epochs = -(-run["total_steps"] // max(1, len(x) // BATCH))
    per_epoch = -(-run["total_steps"] // epochs)
    model, backbone = build(args.width, epochs * per_epoch)
    backup = os.path.join(args.out, "backup")
    done = 0
    if os.path.exists(os.path.join(backup, "training_metadata.json")):
        done = int(json.load(open(os.path.join(backup, "training_metadata.json")))["epoch"])
    started = time.time()
    model.fit(batches(x, y, args.seed, epochs * per_epoch, done * per_epoch), epochs=epochs,
              steps_per_epoch=per_epoch, verbose=2, shuffle=False,
              callbacks=[keras.callbacks.BackupAndRestore(backup)])
    seconds = time.time() - started
    bank, test = (x[..., None] / 255.0, y), (xt[..., None] / 255.0, yt)
    logits = model.predict(test[0], batch_size=512, verbose=0)
    reference = {
        "name": f"supervised ResNet-18 width {args.width}, same time",
        "test_accuracy": float(np.mean(np.argmax(logits, axis=1) == yt)),
        "knn_accuracy": evaluation.knn_accuracy(backbone, bank, test, k=200),
        "linear_probe_accuracy": evaluation.linear_probe(backbone, bank, test,
                                                         epochs=args.probe_epochs)[0],
        "steps": epochs * per_epoch, "epochs": epochs * per_epoch * BATCH / len(x),
        "train_seconds_this_invocation": seconds, "plan": run,
        "command": "python tools/supervised_reference.py " + " ".join(argv or sys.argv[1:]),
    }
    json.dump([reference], open(os.path.join(args.out, "reference.json"), "w"), indent=2)
    print(json.dumps(reference, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
