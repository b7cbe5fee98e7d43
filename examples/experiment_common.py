"""What the experiment scripts of examples/ share: arguments, data, the
kNN protocol, and writing a Markdown table, a JSON record and a PNG to
examples/results/."""

import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(description, replicas=1, extra=None):
    """`--quick`, `--out`, `--seeds` and the script's own arguments; also
    splits the CPU into `replicas` logical devices before TensorFlow starts
    (`replicas` may be a function of the parsed arguments).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="a run of about a minute (smoke test), not the reported one")
    parser.add_argument("--out", default=RESULTS, help="where tables and plots go")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of the existing results that used the same "
                             "configuration and seed (scripts that support it)")
    if extra:
        extra(parser)
    args = parser.parse_args()
    if callable(replicas):
        replicas = replicas(args)
    if replicas > 1:
        from keras_contrast import distribute

        distribute.configure_logical_cpus(replicas)
    os.makedirs(args.out, exist_ok=True)
    args.started = time.time()
    args.load = os.getloadavg()[0]  # other work on the cores slows the run down
    return args


def load_images(quick, train_size, test_size):
    """Fashion-MNIST (Debian `dataset-fashion-mnist`), else the 3,000-image
    subset shipped for tests; `--quick` always uses the subset. Returns
    float32 `(n, 28, 28, 1)` images in [0, 1] and int labels, and the name
    of the source."""
    import numpy as np

    from keras_contrast import data

    source = "Fashion-MNIST"
    try:
        if quick:
            raise FileNotFoundError
        (x, y), (xt, yt) = data.load_fashion_mnist()
    except FileNotFoundError:
        subset = np.load(os.path.join(HERE, "..", "tests", "data", "fashion_mnist_subset.npz"))
        x, y, xt, yt = (subset[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        source = "Fashion-MNIST subset (tests/data)"
    scale = lambda a: (a[..., None] / 255.0).astype("float32")  # noqa: E731
    return ((scale(x[:train_size]), y[:train_size].astype("int64")),
            (scale(xt[:test_size]), yt[:test_size].astype("int64")), source)


def knn(encoder, bank, test, k=200):
    """The repository's kNN protocol: cosine, weighted votes, τ = 0.1."""
    from keras_contrast import evaluation

    return evaluation.knn_accuracy(encoder, bank, test, k=k)


def mean_std(values, digits=1, scale=100.0):
    """`"m ± s"` (population std over seeds) of `values` x `scale`."""
    import numpy as np

    values = np.asarray(values, dtype=float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def write_results(args, name, title, header, rows, notes, record, figure=None):
    """Writes `<name>.md` (title, command, date, table, notes), `<name>.json`
    and `<name>.png` to `args.out`. The minutes recorded include those of the
    earlier invocations whose runs `previous_runs` handed back."""
    command = "python examples/" + os.path.basename(sys.argv[0]) + (
        " " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    earlier = getattr(args, "previous_minutes", 0.0)
    minutes = (time.time() - args.started) / 60 + earlier
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    kept = (f", {earlier:.1f} of them in the earlier invocations whose runs `--resume` kept"
            if earlier else "")
    load = f"load average {args.load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    lines = [f"# {title}", "", f"Command: `{command}` ({date}, {minutes:.1f} min on "
             f"{os.cpu_count()} CPU cores{kept}{', quick run' if args.quick else ''}; "
             f"{load}).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    lines += ["", *notes, ""]
    with open(os.path.join(args.out, f"{name}.md"), "w") as handle:
        handle.write("\n".join(lines))
    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump({"command": command, "date": date, "minutes": minutes, "quick": args.quick,
                   "load_average": [args.load, os.getloadavg()[0]], **record},
                  handle, indent=2, default=float)
    if figure is not None:
        figure.tight_layout()
        figure.savefig(os.path.join(args.out, f"{name}.png"), dpi=90)
    print("\n".join(lines))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def small_conv_backbone(norm, width, input_shape):
    """Four 3x3 convolutions (width x 1, 2, 4, 8 channels; strides 1, 2, 2,
    2), each followed by `norm` and ReLU, then global average pooling: BN
    where a ResNet has it, at a cost that lets 2 cores train thousands of
    steps (a ResNet-18 of width 4 costs ~10x more per image)."""
    import keras

    from keras_contrast.normalization import normalization_layer

    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for index, (factor, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
        x = keras.layers.Conv2D(width * factor, 3, strides=stride, padding="same",
                                use_bias=False, name=f"conv{index}")(x)
        x = normalization_layer(norm, name=f"norm{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="backbone")


def resized(images, size):
    """`images` `(n, H, W, C)` resized to `size` x `size` by area averaging
    (what the kNN sees when the views are crops resized to that size)."""
    import tensorflow as tf

    return tf.image.resize(images, (size, size), method="area").numpy()


def previous_runs(args, name, config, may_differ=()):
    """The runs of `<out>/<name>.json` when it was written with the same
    `config` (so `--resume` adds seeds to a finished run without redoing
    the others), else `{}`; keys in `may_differ` are not compared (a
    script whose runs record that value, e.g. a sweep's list of rates, can
    then add points to a sweep). When runs come back,
    `args.previous_minutes` holds the minutes that record took
    (`write_results` adds them)."""
    path = os.path.join(args.out, f"{name}.json")
    if not getattr(args, "resume", False) or not os.path.exists(path):
        return {}
    with open(path) as handle:
        record = json.load(handle)

    def compared(values):
        return {key: value for key, value in values.items() if key not in may_differ}

    same = (compared(json.loads(json.dumps(config, default=float)))
            == compared(record.get("config") or {}))
    runs = record.get("runs", {}) if same else {}
    if runs:
        args.previous_minutes = float(record.get("minutes", 0.0))
    return runs


def seed_spread(*arms):
    """The larger seed-to-seed std (population, as `mean_std` prints it) of
    the per-seed values of `arms`; None when an arm has fewer than 2 seeds
    (nothing to judge a difference against)."""
    import numpy as np

    if not arms or min(len(values) for values in arms) < 2:
        return None
    return max(float(np.std(values)) for values in arms)


def judge(difference, spread, scale=1.0, digits=3, unit=""):
    """`difference` as text with its verdict against `spread` (from
    `seed_spread`): the one rule every table of examples/ uses — a
    difference counts when its magnitude exceeds the seed-to-seed std."""
    text = f"{scale * difference:+.{digits}f}{unit}"
    if spread is None:
        return text + " (one seed: no spread to judge against)"
    side = "outside" if abs(difference) > spread else "within"
    return f"{text}, {side} the seed-to-seed std ({scale * spread:.{digits}f}{unit})"


def monitored_split(train, test, config):
    """The kNN bank (the first `config["bank"]` training images), the
    BNLeakMonitor's held-out batch (two views of the first
    `config["monitor_batch"]` test images, which the kNN does not score) and
    the kNN test set (the other test images), all resized to
    `config["image_size"]`."""
    from keras_contrast import data

    (x_train, y_train), (x_test, y_test) = train, test
    size, held = config["image_size"], config["monitor_batch"]
    bank = (resized(x_train[:config["bank"]], size), y_train[:config["bank"]])
    heldout = next(iter(data.two_view_dataset(resized(x_test[:held], size), held,
                                              seed=99))).numpy()
    return bank, heldout, (resized(x_test[held:], size), y_test[held:])
