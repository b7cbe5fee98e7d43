"""SimCLR training throughput on an accelerator: native vs GradCache vs tiled
loss, XLA off/on, float32 / mixed_bfloat16, at every batch size that fits.

What is measured
----------------
SimCLR (`keras_contrast.models.SimCLR`) with a ResNet-50 backbone (ImageNet
stem, 224x224x3, BN; one device, where synchronised BN is plain BN) and the
projection (2048, 128), InfoNCE (τ = 0.1), SGD with momentum 0.9, on
synthetic images made on the device once (no input pipeline in the time).
Variants:

- `native`: the model's own `train_step` on the whole batch;
- `gradcache`: `GradCache(model, chunk_size=--chunk-size)` (one more forward
  pass, activation memory of one chunk);
- `tiled`: the native step with `InfoNCE(tile_size=--tile-size)` (the loss's
  N x N logits in tiles).

Each (variant, XLA, precision, batch size) runs in a fresh interpreter (this
script with `--single`), so that one configuration's memory or an
out-of-memory error cannot touch the next. Batch sizes run upwards; after
the first out-of-memory error of a (variant, XLA, precision) the larger
sizes are recorded as skipped.

- Step time: the step (`tf.function(train_step, jit_compile=...)`, as
  `fit` compiles it) runs `--warmup` times (the first compiles), then
  `--repeats` timed steps, each ended by reading the loss (a device sync).
  Reported: the median step, images/s (an image = one pair of views) and
  the compile step's time.
- Peak memory: on a GPU, `tf.config.experimental.reset_memory_stats` before
  the first step and `get_memory_info(...)["peak"]` after the last
  (compilation included); on the CPU, the process's peak RSS growth.
- Model-FLOPs utilisation (MFU): a hand count of the model's FLOPs per step
  over the time and the device's peak. `forward_flops` counts 2 FLOPs per
  multiply-add of every convolution and dense layer from their shapes:
  ResNet-50 at 224x224 is 8.2 GFLOP per image forward (4.1 GMACs, the
  published count; tests/benchmarks check the counter against it), and the
  projection head adds 9 MFLOP. A training step costs 3 forwards (forward,
  backward with respect to activations and to weights) per view; SimCLR has
  2 views; GradCache adds one more forward per view. BN, activations and
  the loss are not counted (the loss is ~2 · (2N)² · 128 FLOPs, < 0.1 % at
  N ≤ 1024). Peaks are dense (no sparsity) tensor-core TFLOP/s: TF32 for
  float32, because TensorFlow runs float32 matmuls and convolutions in TF32
  on Ampere and later by default (`tensor_float_32_execution_enabled` is
  recorded), and BF16 for mixed_bfloat16. Unknown devices get no MFU
  unless `--peak-tflops` gives one.

Results go to `benchmarks/results/accelerator.json` (`--output`).

Usage:
    python benchmarks/accelerator_bench.py            # the GPU grid, ~1-2 h
    python benchmarks/accelerator_bench.py --smoke    # tiny CPU grid, ~1 min
    python benchmarks/accelerator_bench.py --variants native --xla on \\
        --precisions mixed_bfloat16 --batch-sizes 256,512
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import child_command  # noqa: E402
from bench_common import current_rss_kib  # noqa: E402
from bench_common import machine_info  # noqa: E402
from bench_common import peak_rss_kib  # noqa: E402
from bench_common import run_child  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "accelerator.json"
)
VARIANTS = ("native", "gradcache", "tiled")
PRECISIONS = ("float32", "mixed_bfloat16")
# Dense (no structured sparsity) tensor-core peaks in TFLOP/s from NVIDIA's
# datasheets: (TF32, BF16). Matched as substrings of the device name, in
# order (so "H100 PCIe" before "H100").
PEAK_TFLOPS = (
    ("H200", (494.7, 989.4)),
    ("H100 PCIe", (378.0, 756.0)),
    ("H100", (494.7, 989.4)),
    ("A100", (156.0, 312.0)),
    ("L40S", (183.0, 366.0)),
    ("L4", (60.0, 121.0)),
    ("A10", (62.5, 125.0)),
)
FULL = dict(depth=50, stem="imagenet", width=64, image_size=224,
            batch_sizes="32,64,128,256,512,1024", chunk_size=64, tile_size=512,
            warmup=2, repeats=10)
# The CPU smoke grid: the same code paths on a ResNet-18 of width 4 at 16x16.
SMOKE = dict(depth=18, stem="cifar", width=4, image_size=16, batch_sizes="8",
             chunk_size=4, tile_size=8, warmup=1, repeats=2)
SMOKE_GRID = (("native", "off", "float32"), ("gradcache", "on", "float32"),
              ("tiled", "on", "float32"), ("native", "on", "mixed_bfloat16"))


def forward_flops(model):
    """FLOPs of one sample's forward pass through `model`'s convolution and
    dense layers: 2 per multiply-add, from the layers' static shapes.

    Conv2D: 2 · H_out · W_out · k_h · k_w · C_in / groups · C_out (+ nothing
    for the bias, as in the published counts); Dense: 2 · in · out per
    position. Nested models are walked; other layers count 0.

    Args:
        model: a built functional Keras model with static spatial shapes.
    """
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            kernel_height, kernel_width, channels_in, _ = layer.kernel.shape
            total += 2 * height * width * kernel_height * kernel_width * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            positions = 1
            for size in layer.input.shape[1:-1]:
                positions *= size
            total += 2 * positions * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def step_flops(forward_per_image, batch_size, variant, views=2):
    """Hand count of one training step: 3 forwards per view (forward, two
    backward products), GradCache one forward more."""
    forwards = 4 if variant == "gradcache" else 3
    return forwards * views * forward_per_image * batch_size


def peak_tflops(device_name, precision, override=None):
    """`(peak TFLOP/s, where from)` for the device and precision, or
    `(None, reason)` when the device is not in `PEAK_TFLOPS`."""
    if override:
        return override, "--peak-tflops"
    for key, (tf32, bf16) in PEAK_TFLOPS:
        if device_name and key in device_name:
            return (tf32, f"{key} dense TF32") if precision == "float32" else (
                bf16, f"{key} dense BF16")
    return None, f"no peak known for {device_name!r}; pass --peak-tflops"


def is_out_of_memory(error):
    """Whether an exception from a step is the device running out of memory."""
    import tensorflow as tf

    text = str(error)
    return isinstance(error, tf.errors.ResourceExhaustedError) or (
        "out of memory" in text.lower() or "OOM when allocating" in text)


# ---------------------------------------------------------------------------
# What a child process runs.
# ---------------------------------------------------------------------------


def build(args, variant, precision):
    import keras

    from keras_contrast import losses
    from keras_contrast.models import ResNetBackbone
    from keras_contrast.models import SimCLR
    from keras_contrast.training import GradCache

    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    backbone = ResNetBackbone(depth=args.depth, stem=args.stem, norm="batch", width=args.width,
                              input_shape=(args.image_size, args.image_size, 3))
    model = SimCLR(backbone, projection_dims=(2048, 128))
    model.build((None, 2, args.image_size, args.image_size, 3))
    loss = losses.InfoNCE(0.1, tile_size=args.tile_size if variant == "tiled" else None)
    trainer = GradCache(model, chunk_size=min(args.chunk_size, args.batch_size)) if (
        variant == "gradcache") else model
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss)
    trainer.optimizer.build(trainer.trainable_variables)
    head = 2 * (backbone.output_shape[-1] * 2048 + 2048 * 128)
    return trainer, forward_flops(backbone) + head


def measure(args):
    """One configuration's record (printed as a JSON line)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU:0" if gpus else "CPU:0"
    device_name = (tf.config.experimental.get_device_details(gpus[0]).get("device_name")
                   if gpus else machine_info()["cpu_model"])
    record = dict(variant=args.variant, xla=args.xla == "on", precision=args.precision,
                  batch_size=args.batch_size, device=device, device_name=device_name,
                  tf32_enabled=bool(tf.config.experimental.tensor_float_32_execution_enabled()),
                  load_average_1_min=os.getloadavg()[0])
    baseline_kib = current_rss_kib()
    try:
        trainer, forward = build(args, args.variant, args.precision)
        shape = (args.batch_size, 2, args.image_size, args.image_size, 3)
        with tf.device(device):
            images = tf.random.uniform(shape, seed=0)
        step = tf.function(trainer.train_step, jit_compile=args.xla == "on")
        if gpus:
            tf.config.experimental.reset_memory_stats(device)
        times = []
        for _ in range(args.warmup + args.repeats):
            start = time.perf_counter()
            loss = float(step(images)["loss"])
            times.append(time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 - a failed configuration is a result
        if not is_out_of_memory(error):
            raise
        record.update(status="out_of_memory", error=str(error).strip().splitlines()[0][:300])
        return record
    median = statistics.median(times[args.warmup:])
    flops = step_flops(forward, args.batch_size, args.variant)
    peak, peak_source = peak_tflops(device_name, args.precision, args.peak_tflops)
    achieved = flops / median / 1e12
    if gpus:
        memory = dict(peak_memory_bytes=tf.config.experimental.get_memory_info(device)["peak"],
                      memory_kind="device peak (get_memory_info)")
    else:
        memory = dict(peak_memory_bytes=(peak_rss_kib() - baseline_kib) * 1024,
                      memory_kind="host peak RSS growth")
    record.update(
        status="ok", loss=loss, loss_finite=loss == loss and abs(loss) != float("inf"),
        step_seconds=median, steps_seconds=times[args.warmup:], compile_seconds=times[0],
        images_per_second=args.batch_size / median, forward_flops_per_image=forward,
        flops_per_step=flops, achieved_tflops=achieved, peak_tflops=peak,
        peak_source=peak_source, mfu=achieved / peak if peak else None, **memory)
    return record


# ---------------------------------------------------------------------------
# The driver.
# ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny CPU grid (CI's smoke test)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--xla", default="off,on", help="off, on or off,on")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    for name in ("depth", "width", "image_size", "chunk_size", "tile_size", "warmup",
                 "repeats"):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    parser.add_argument("--stem")
    parser.add_argument("--batch-sizes")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak TFLOP/s for the chosen precision")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per configuration")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--single", nargs=4, metavar=("VARIANT", "XLA", "PRECISION", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option, allowed in (("variants", VARIANTS), ("xla", ("off", "on")),
                            ("precisions", PRECISIONS)):
        chosen = getattr(args, option).split(",")
        if not chosen or set(chosen) - set(allowed):
            parser.error(f"--{option} takes a comma-separated subset of {allowed}, "
                         f"got {getattr(args, option)!r}")
        setattr(args, option, chosen)
    try:
        args.batch_sizes = sorted(int(b) for b in str(args.batch_sizes).split(","))
    except ValueError:
        parser.error(f"--batch-sizes takes comma-separated integers, got {args.batch_sizes!r}")
    if min(args.batch_sizes) < 2:
        parser.error("--batch-sizes must be >= 2 (a contrastive batch needs negatives)")
    return args


def grid(args):
    if args.smoke and (args.variants, args.xla, args.precisions) == (
            list(VARIANTS), ["off", "on"], list(PRECISIONS)):
        return list(SMOKE_GRID)
    return [(v, x, p) for v in args.variants for x in args.xla for p in args.precisions]


def main(argv=None):
    args = parse_args(argv)
    if args.single:
        args.variant, args.xla, args.precision, batch = args.single
        args.batch_size = int(batch)
        print(json.dumps(measure(args)), flush=True)
        return
    options = {key: getattr(args, key) for key in (
        "depth", "stem", "width", "image_size", "chunk_size", "tile_size", "warmup",
        "repeats")}
    if args.peak_tflops:
        options["peak_tflops"] = args.peak_tflops
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    results = []
    for variant, xla, precision in grid(args):
        failed_at = None
        for batch_size in args.batch_sizes:
            key = dict(variant=variant, xla=xla == "on", precision=precision,
                       batch_size=batch_size)
            if failed_at is not None:
                record = {**key, "status": "skipped",
                          "reason": f"batch {failed_at} ran out of memory"}
            else:
                command = child_command(__file__, (variant, xla, precision, str(batch_size)),
                                        **options)
                record = run_child(
                    command, key, args.timeout,
                    lambda: {**key, "status": "timeout", "timeout_seconds": args.timeout},
                    lambda growth: {**key, "status": "stopped", "growth_mib": growth})
                record.setdefault("status", "error")
                if record["status"] == "out_of_memory":
                    failed_at = batch_size
            results.append(record)
            print(describe(record), flush=True)
    output = {
        "benchmark": "accelerator_bench",
        "machine": machine_info(started),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "model": dict(options, model="SimCLR", projection=[2048, 128], loss="InfoNCE(0.1)",
                      optimizer="SGD(0.1, momentum=0.9)"),
        "flops_rule": "3 forwards per view per step (GradCache 4), 2 views, 2 FLOPs per "
                      "multiply-add of conv and dense layers; BN, activations, loss not "
                      "counted",
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(output, file, indent=1)
    print(f"wrote {args.output}")


def describe(record):
    head = (f"{record['variant']:9s} xla={'on ' if record['xla'] else 'off'} "
            f"{record['precision']:14s} N={record['batch_size']:5d}")
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record.get('error') or record.get('reason', '')}"
    mfu = "" if record["mfu"] is None else f" MFU {100 * record['mfu']:.1f} %"
    return (f"{head} {record['step_seconds'] * 1e3:9.1f} ms/step "
            f"{record['images_per_second']:9.1f} img/s "
            f"{record['peak_memory_bytes'] / 2**20:8.0f} MiB{mfu}")


if __name__ == "__main__":
    main()
