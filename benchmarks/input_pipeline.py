"""Input-pipeline throughput, the demo's epoch time when it streams, and
the memory of streaming one epoch (issue 17).

What is measured
----------------
(a) Throughput. `keras_contrast.data.two_view_dataset` (SimCLR
    augmentation of both views, batch 256, AUTOTUNE parallelism) reading a
    generated folder of 20,000 RGB JPEGs at 64x64 and at 224x224, and the
    TFRecord shards written from each folder (`write_tfrecords(...,
    image_format="original")`: the same JPEG bytes, so both decode alike),
    and images like them as an in-memory array (the array path; 4 batches'
    worth, epochs chained) for reference, with and without `output_size`:
    images per second (each image gives two views) over `--seconds` of
    batches after the first. Next to them, the rate at which
    the demo's training step consumes images: the `make demo` model
    (SimCLR `simclr_resnet_tiny`, width 8, synchronised BN, DCLW at
    temperature 0.2, AdamW, 4 simulated replicas, batch 256, 28x28x1)
    stepping on pre-materialised batches (the in-memory epochs of (b)).
(b) The demo's epoch through the streaming path. A shortened epoch
    (`--demo-steps`, default 20 of the 234 steps) of the demo model fed by
    `two_view_dataset` from a PNG folder of Fashion-MNIST's 60,000 training
    images (a fresh pipeline per epoch: its start-up counts), by the array
    path of `make demo`, and by the folder's batches pre-materialised in
    memory. One `fit` runs a warm-up epoch, then `--repeats` rounds of the
    feeds interleaved (the array path in the first only), one feed per
    epoch; the wall time of each epoch (callback), median per feed. Goal:
    streaming / in-memory <= 1.1.
(c) Peak RSS over one epoch of folders of 5,000 and 50,000 64x64 JPEGs, one
    fresh process per folder: the kernel's high-water mark (VmHWM) is reset
    after the imports, before the dataset is built, and read after the last
    batch. Bound: peak(50k) <= peak(5k) + max(10 % of peak(5k), 64 MiB).

All images are Fashion-MNIST (`keras_contrast.data.load_fashion_mnist`,
offline), upsampled bilinearly and, for the JPEG folders, tinted with a
per-image foreground and background colour (natural content, real RGB).
They are generated once under `--cache-dir` (default
/tmp/keras_contrast_bench/input_pipeline; not in git) and reused. The load
average is recorded at the start and the end of each part.

Usage:
    python benchmarks/input_pipeline.py           # ~10-15 min on 2 cores (first run
                                                  # also generates ~3 min of files)
    python benchmarks/input_pipeline.py --quick   # small folders, a smoke run
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bench_common import current_rss_kib  # noqa: E402
from bench_common import machine_info  # noqa: E402
from bench_common import peak_rss_kib  # noqa: E402
from bench_common import reset_peak_rss  # noqa: E402

NUM_REPLICAS = 4
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "input_pipeline.json")
DEFAULT_CACHE = os.path.join("/tmp", "keras_contrast_bench", "input_pipeline")
# The `make demo` command whose model and step (b) measures.
DEMO_ARGS = ["train", "--model", "simclr", "--loss", "dclw", "--dataset", "fashion_mnist",
             "--epochs", "3", "--batch-size", "256", "--replicas", str(NUM_REPLICAS),
             "--norm", "sync", "--width", "8", "--temperature", "0.2"]
FULL = dict(throughput_images=20000, sides=(64, 224), rss_sizes=(5000, 50000),
            png_images=60000, batch_size=256, seconds=20.0, demo_steps=20, repeats=2)
QUICK = dict(throughput_images=768, sides=(64, 224), rss_sizes=(512, 2048), png_images=4096,
             batch_size=64, seconds=2.0, demo_steps=3, repeats=1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="small folders, few batches and steps (a smoke run; writes "
                             "input_pipeline_quick.json in the cache folder unless --output)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE,
                        help="where the generated folders and shards live (default "
                             f"{DEFAULT_CACHE})")
    parser.add_argument("--output", default=None, help=f"JSON path (default {DEFAULT_OUTPUT})")
    parser.add_argument("--parts", default="throughput,epoch,rss",
                        help="comma-separated parts to run (default all)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per throughput measurement (default 20)")
    parser.add_argument("--demo-steps", type=int, default=None,
                        help="steps of the shortened demo epoch (default 20)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of the three demo feeds (default 2)")
    # Internal: one RSS measurement in this (fresh) process.
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name in ("seconds", "demo_steps", "repeats", "batch_size"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    args.settings = settings
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - {"throughput", "epoch", "rss"}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; expected throughput, epoch, rss")
    if args.quick:
        args.cache_dir = os.path.join(args.cache_dir, "quick")
    if args.output is None:
        args.output = (os.path.join(args.cache_dir, "input_pipeline_quick.json") if args.quick
                       else DEFAULT_OUTPUT)
    return args


# --- Generated data --------------------------------------------------------


def _class_folder(label):
    from keras_contrast.data import FASHION_MNIST_CLASSES

    name = FASHION_MNIST_CLASSES[label].replace("/", "-").replace(" ", "_")
    return f"{label}_{name}"


def _rgb_upsampled(gray, side, rng):
    """Fashion-MNIST images upsampled to side x side and tinted: a
    per-image foreground and background colour, uint8 RGB."""
    import numpy as np
    from PIL import Image

    out = np.empty((len(gray), side, side, 3), np.uint8)
    foreground = rng.uniform(0.3, 1.0, (len(gray), 3))
    background = rng.uniform(0.0, 0.3, (len(gray), 3))
    for k, image in enumerate(gray):
        large = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR),
                           np.float64) / 255.0
        rgb = background[k] + (foreground[k] - background[k]) * large[..., None]
        out[k] = np.clip(np.rint(255 * rgb), 0, 255).astype(np.uint8)
    return out


def _folder_ready(root, spec):
    marker = os.path.join(root, "complete.json")
    if os.path.exists(marker):
        with open(marker) as handle:
            if json.load(handle) == spec:
                return True
    shutil.rmtree(root, ignore_errors=True)
    return False


def _mark_ready(root, spec):
    with open(os.path.join(root, "complete.json"), "w") as handle:
        json.dump(spec, handle)


def jpeg_folder(cache_dir, fashion, count, side):
    """`root/train/<class>/*.jpg`: `count` tinted, upsampled Fashion-MNIST
    images (quality 90), generated once. Returns (root, seconds spent)."""
    import numpy as np
    from PIL import Image

    root = os.path.join(cache_dir, f"jpeg{side}_{count}")
    spec = {"kind": "jpeg", "side": side, "count": count, "quality": 90, "version": 1}
    if _folder_ready(root, spec):
        return root, 0.0
    start = time.perf_counter()
    images, labels = fashion
    rng = np.random.default_rng([side, count])
    for label in range(10):
        os.makedirs(os.path.join(root, "train", _class_folder(label)), exist_ok=True)
    for first in range(0, count, 1000):
        index = np.arange(first, min(first + 1000, count)) % len(images)
        for position, k, rgb in zip(range(first, count), index,
                                    _rgb_upsampled(images[index], side, rng)):
            Image.fromarray(rgb).save(os.path.join(
                root, "train", _class_folder(int(labels[k])), f"{position:06d}.jpg"), quality=90)
    _mark_ready(root, spec)
    return root, time.perf_counter() - start


def png_folder(cache_dir, fashion, count):
    """Fashion-MNIST's first `count` training images as 28x28 gray PNGs in
    `root/train/<class>/`, generated once. Returns (root, seconds)."""
    from PIL import Image

    root = os.path.join(cache_dir, f"fashion_mnist_png_{count}")
    spec = {"kind": "png", "count": count, "version": 1}
    if _folder_ready(root, spec):
        return root, 0.0
    start = time.perf_counter()
    images, labels = fashion
    for label in range(10):
        os.makedirs(os.path.join(root, "train", _class_folder(label)), exist_ok=True)
    for k in range(count):
        Image.fromarray(images[k]).save(
            os.path.join(root, "train", _class_folder(int(labels[k])), f"{k:05d}.png"))
    _mark_ready(root, spec)
    return root, time.perf_counter() - start


def tfrecords_of(folder, num_shards=16):
    """The folder's JPEG bytes as TFRecord shards (generated once).
    Returns (`tfrecord:` glob, seconds)."""
    from keras_contrast.data.tfrecords import write_tfrecords

    root = folder + "_tfrecords"
    spec = {"kind": "tfrecords", "folder": folder, "shards": num_shards, "version": 1}
    pattern = "tfrecord:" + os.path.join(root, "train-*.tfrecord")
    if _folder_ready(root, spec):
        return pattern, 0.0
    start = time.perf_counter()
    os.makedirs(root, exist_ok=True)
    write_tfrecords(folder, os.path.join(root, "train"), num_shards=num_shards,
                    image_format="original")
    _mark_ready(root, spec)
    return pattern, time.perf_counter() - start


def disk_mib(path):
    total = 0
    for directory, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files)
    return round(total / 2**20, 1)


# --- Measurements ----------------------------------------------------------


def pipeline_throughput(source, batch_size, seconds, **kwargs):
    """Images/s of `two_view_dataset(source, batch_size, **kwargs)` over
    `seconds` of batches after the first (or the whole epoch if shorter)."""
    from keras_contrast import data

    start = time.perf_counter()
    dataset = data.two_view_dataset(source, batch_size, seed=0, **kwargs)
    iterator = iter(dataset)
    first = next(iterator)
    first.numpy()
    first_batch_seconds = time.perf_counter() - start
    shape = list(first.shape)
    batches, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        try:
            next(iterator).numpy()
        except StopIteration:
            break
        batches += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    images = batches * batch_size
    return {
        "images_per_second": images / elapsed if elapsed > 0 else None,
        "views_per_second": 2 * images / elapsed if elapsed > 0 else None,
        "cpu_seconds_per_1000_images": 1000 * cpu / images if images else None,
        "timed_batches": batches,
        "timed_seconds": elapsed,
        "first_batch_seconds": first_batch_seconds,
        "batch_shape": shape,
    }


def build_demo(batch_size, out, image_shape=(28, 28, 1)):
    """The `make demo` model and trainer (CLI arguments and builder), under
    the 4-replica strategy. Returns (strategy, trainer, how)."""
    from keras_contrast.cli._factories import make_strategy
    from keras_contrast.cli._parser import build_parser
    from keras_contrast.cli._train import build_trainer
    from keras_contrast.cli._validation import validate_train

    command = [a if a != "256" else str(batch_size) for a in DEMO_ARGS]
    args = build_parser().parse_args(command + ["--out", out])
    validate_train(args)  # fills in the model's preset and loss
    strategy = make_strategy(args)
    _, trainer = build_trainer(args, strategy, image_shape, args.epochs * (60000 // batch_size))
    return strategy, trainer, " ".join(["keras-contrast"] + command)


def materialise(dataset, steps):
    import numpy as np
    import tensorflow as tf

    batches = np.stack([b.numpy() for b in dataset.take(steps)])
    return tf.data.Dataset.from_tensor_slices(batches)


def timed_epochs(trainer, segments, steps):
    """One `fit` over the concatenated `segments` with `steps_per_epoch =
    steps`: epoch k consumes segment k (Keras keeps the iterator across
    epochs when `steps_per_epoch` is given), so the train function is
    traced once and every epoch after the first runs warm. Returns the
    wall seconds of each epoch."""
    import functools

    import keras

    class EpochTimer(keras.callbacks.Callback):
        seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    dataset = functools.reduce(lambda a, b: a.concatenate(b), segments)
    trainer.fit(dataset, epochs=len(segments), steps_per_epoch=steps, verbose=0,
                shuffle=False, callbacks=[timer])
    return timer.seconds


def rss_child(folder, batch_size):
    """One epoch of `two_view_dataset(folder)` in this process; prints a
    JSON line with the peak RSS since the reset (after the imports)."""
    import tensorflow as tf

    from keras_contrast import data

    tf.constant(0.0).numpy()  # initialise the runtime before the reset
    baseline = current_rss_kib()
    reset_peak_rss()
    start = time.perf_counter()
    dataset = data.two_view_dataset(folder, batch_size, seed=0)
    batches = 0
    for batch in dataset:
        batch.numpy()
        batches += 1
    seconds = time.perf_counter() - start
    print(json.dumps({"folder": folder, "baseline_rss_mib": baseline / 1024,
                      "peak_rss_mib": peak_rss_kib() / 1024, "batches": batches,
                      "images": batches * batch_size, "epoch_seconds": seconds,
                      "images_per_second": batches * batch_size / seconds}), flush=True)


def run_rss_child(folder, batch_size):
    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss-child", folder,
         "--batch-size", str(batch_size)],
        capture_output=True, text=True, check=False)
    if output.returncode:
        raise RuntimeError(f"RSS measurement of {folder} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


# --- Main ------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if args.rss_child:
        return rss_child(args.rss_child, args.batch_size)
    settings = args.settings
    started_at = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()
    load = {"start": os.getloadavg()}
    # Logical devices must be configured before TensorFlow runs any op.
    from keras_contrast import distribute

    distribute.configure_logical_cpus(NUM_REPLICAS)
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_contrast
    from keras_contrast import data
    from keras_contrast.data.augmentation import simclr_views

    # As `make demo` (--deterministic, the CLI default).
    tf.config.experimental.enable_op_determinism()
    os.makedirs(args.cache_dir, exist_ok=True)
    (x_train, y_train), _ = data.load_fashion_mnist()
    fashion = (x_train, y_train)
    batch_size = settings["batch_size"]
    generation, results = {}, {}

    def generated(name, made):
        path, seconds = made
        generation[name] = {"path": path, "seconds": round(seconds, 1)}
        return path

    if "throughput" in args.parts:
        print("(a) throughput", flush=True)
        load["throughput_start"] = os.getloadavg()
        records = {}
        count = settings["throughput_images"]
        for side in settings["sides"]:
            folder = generated(f"jpeg{side}", jpeg_folder(args.cache_dir, fashion, count, side))
            augment = simclr_views(output_size=side)
            records[f"folder_jpeg_{side}"] = pipeline_throughput(
                folder, batch_size, settings["seconds"], augment=augment)
            print(f"  folder {side}x{side}: "
                  f"{records[f'folder_jpeg_{side}']['images_per_second']:.0f} images/s",
                  flush=True)
            pattern = generated(f"tfrecords{side}", tfrecords_of(folder))
            records[f"tfrecord_jpeg_{side}"] = pipeline_throughput(
                pattern, batch_size, settings["seconds"], augment=augment)
            print(f"  tfrecord {side}x{side}: "
                  f"{records[f'tfrecord_jpeg_{side}']['images_per_second']:.0f} images/s",
                  flush=True)
            # A few batches' images, their epochs chained: enough batches
            # for the timed seconds without holding the folder in memory.
            arrays = _rgb_upsampled(x_train[:min(count, 4 * batch_size)], side,
                                    np.random.default_rng(side))
            records[f"array_{side}"] = pipeline_throughput(
                arrays, batch_size, settings["seconds"], augment=augment, num_epochs=100)
            # simclr_augment without output_size: the first release's
            # depthwise-convolution blur.
            records[f"array_{side}_first_release_blur"] = pipeline_throughput(
                arrays, batch_size, settings["seconds"], num_epochs=100)
            del arrays
            for name in (f"array_{side}", f"array_{side}_first_release_blur"):
                print(f"  {name}: {records[name]['images_per_second']:.0f} images/s", flush=True)
        # The path of `make demo`: the 28x28x1 training array.
        records["array_fashion_mnist_28"] = pipeline_throughput(x_train, batch_size,
                                                                settings["seconds"])
        for side in settings["sides"]:
            generation[f"jpeg{side}"]["disk_mib"] = disk_mib(generation[f"jpeg{side}"]["path"])
        load["throughput_end"] = os.getloadavg()
        results["throughput"] = records

    if "epoch" in args.parts:
        print("(b) demo epoch: streaming folder vs in memory; the training step's rate",
              flush=True)
        load["epoch_start"] = os.getloadavg()
        steps = settings["demo_steps"]
        count = settings["png_images"]
        folder = generated("fashion_mnist_png", png_folder(args.cache_dir, fashion, count))

        def streaming(epoch):
            return data.two_view_dataset(folder, batch_size, seed=0, epoch=epoch,
                                         channels=1).take(steps)

        in_memory = materialise(streaming(0), steps)
        # The folder's ids are its class-major sorted order: the same images
        # as an array in that order give the same batches.
        sorted_images = x_train[:count][np.argsort(y_train[:count], kind="stable")]
        identical = all(np.array_equal(a, b) for a, b in zip(
            in_memory.as_numpy_iterator(),
            data.two_view_dataset(sorted_images, batch_size, seed=0).take(steps)
            .as_numpy_iterator()))
        array_path = data.two_view_dataset(x_train[:count], batch_size, seed=0).take(steps)
        # Epoch 0 warms up (tracing); then the feeds interleaved, so that
        # load from other processes falls on all of them alike.
        # (The array path, a reference, runs in the first round only.)
        plan = [("warm_up", in_memory)]
        for round_index in range(settings["repeats"]):
            plan += [("in_memory", in_memory), ("streaming_folder", streaming(round_index))]
            if round_index == 0:
                plan.append(("array_path", array_path))
        keras.utils.set_random_seed(0)
        strategy, trainer, demo_command = build_demo(
            batch_size, os.path.join(args.cache_dir, "demo_out"))
        epoch_seconds = timed_epochs(trainer, [segment for _, segment in plan], steps)
        seconds = {name: [] for name, _ in plan}
        for (name, _), value in zip(plan, epoch_seconds):
            seconds[name].append(value)
            print(f"  {name}: {value:.1f} s", flush=True)
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        ratio = medians["streaming_folder"] / medians["in_memory"]
        results["demo_epoch"] = {
            "model": demo_command,
            "steps": steps,
            "full_epoch_steps": count // batch_size,
            "epoch_seconds": seconds,
            "median_epoch_seconds": medians,
            "streaming_over_in_memory": ratio,
            "array_path_over_in_memory": medians["array_path"] / medians["in_memory"],
            "goal": "streaming_over_in_memory <= 1.1",
            "passed": ratio <= 1.1,
            "folder_batches_equal_array_batches": identical,
        }
        step_seconds = [v / steps for v in seconds["in_memory"]]
        results["train_step"] = {
            "model": demo_command,
            "source": "the in-memory epochs of (b)",
            "median_step_seconds": statistics.median(step_seconds),
            "step_seconds": step_seconds,
            "images_per_second": batch_size / statistics.median(step_seconds),
        }
        load["epoch_end"] = os.getloadavg()
        print(f"  streaming / in memory = {ratio:.3f}; training step "
              f"{results['train_step']['images_per_second']:.0f} images/s", flush=True)

    if "rss" in args.parts:
        print("(c) peak RSS over one epoch", flush=True)
        load["rss_start"] = os.getloadavg()
        records = {}
        for count in settings["rss_sizes"]:
            folder = generated(f"jpeg64_{count}", jpeg_folder(args.cache_dir, fashion, count, 64))
            records[str(count)] = run_rss_child(folder, batch_size)
            print(f"  {count} images: peak {records[str(count)]['peak_rss_mib']:.0f} MiB",
                  flush=True)
        small, large = (records[str(c)]["peak_rss_mib"] for c in settings["rss_sizes"])
        allowance = max(0.1 * small, 64.0)
        results["peak_rss"] = {
            "records": records,
            "bound_mib": small + allowance,
            "bound": f"peak({settings['rss_sizes'][1]}) <= peak({settings['rss_sizes'][0]}) + "
                     "max(10 %, 64 MiB)",
            "growth_mib": large - small,
            "passed": large <= small + allowance,
        }
        load["rss_end"] = os.getloadavg()

    load["end"] = os.getloadavg()
    cpus = len(os.sched_getaffinity(0))
    output = {
        "description": "Two-view input pipeline (keras_contrast.data.two_view_dataset) "
                       "throughput from folders, TFRecords and arrays; the demo's training "
                       "step rate; the demo's shortened epoch streaming vs in memory; peak RSS "
                       "of one streamed epoch. See benchmarks/input_pipeline.py.",
        "machine": {
            **machine_info(started_at),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_contrast": keras_contrast.__version__,
            "numpy": np.__version__,
            "load_average_1_5_15_min": load,
            "measured_under_contention": max(v[0] for v in load.values()) > cpus,
        },
        "settings": {**settings, "quick": args.quick, "parts": args.parts,
                     "cache_dir": args.cache_dir, "replicas": NUM_REPLICAS,
                     "augment": "(a): simclr_views(output_size=side) (simclr_augment "
                                "defaults; *_first_release_blur: without output_size); (b), "
                                "(c): simclr_augment defaults, as the CLI",
                     "num_parallel_calls": "AUTOTUNE", "threads": None,
                     "op_determinism": True,
                     "total_seconds": round(time.perf_counter() - started, 1)},
        "generated": generation,
        **results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(output, handle, indent=2)
    print(f"load average {load['start'][0]:.1f} -> {load['end'][0]:.1f} on {cpus} CPUs; "
          f"total {output['settings']['total_seconds']:.0f} s; written to {args.output}")


if __name__ == "__main__":
    main()
