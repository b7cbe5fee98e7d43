"""BN leak against the per-replica batch (docs/design.md §4): SimCLR at a
global batch of 256 split over 1, 4 and 16 replicas (256, 64 and 16 images
per replica), per-replica vs synchronised BN, 1,000 steps; the training
loss, BNLeakMonitor's `bn_leak` and kNN accuracy.

Per-replica BN normalises each replica's images with that replica's own
statistics; SimCLR puts both views of an image on the same replica, so a
positive pair shares statistics that most of its negatives (gathered from
the other replicas) do not, and the network can find its positive by them
(SimCLR, Chen et al. 2020, §2.2 "Global BN"). The fewer images per
replica, the more the statistics tell about the images behind them.

How the replicas are run. With the loss gathered across replicas, R
replicas with per-replica BN compute exactly what one device computes with
every consecutive group of the batch normalised alone (Ghost BN with a
virtual batch of the 2·256/R views one replica holds: the batch is split
over replicas in order and SimCLR keeps an image's two views adjacent);
synchronised BN over R replicas computes the whole batch's statistics, as
one device does. So every arm trains on one device: 16 simulated replicas
on 2 cores cost 6x (per-replica) to 20x (synchronised, 5 collectives per
step) the time of one device, which no 1,000-step run here can afford.
The first steps of each emulated arm are also run on real simulated
replicas and the weights compared (the "check" columns): the emulation is
exact to float32 rounding, and the check also measures what a real
16-replica step costs here, tracing included.
"""

import time

import experiment_common as common

REPLICAS = (1, 4, 16)
QUICK_REPLICAS = (1, 2)
STEPS_PER_EPOCH = 50  # Keras epochs of 50 steps: the loss is logged per 50 steps


def build(norm, groups, config, seed, optimizer=None):
    """SimCLR with the 4-convolution backbone and a (128, 64) projection,
    every normalisation `norm`; `groups` > 1 normalises each of that many
    consecutive groups of the batch alone (per-replica BN of that many
    replicas, emulated). AdamW unless `optimizer` is given."""
    import functools

    import keras

    from keras_contrast import losses
    from keras_contrast import models
    from keras_contrast.normalization import normalization_layer

    keras.utils.set_random_seed(seed)
    size = config["image_size"]
    if groups > 1:
        views_per_replica = 2 * config["batch"] // groups
        kind = functools.partial(normalization_layer, "ghost",
                                 virtual_batch_size=views_per_replica)
    else:
        kind = functools.partial(normalization_layer, norm)
    backbone = common.small_conv_backbone(kind, config["width"], (size, size, 1))
    model = models.SimCLR(backbone, projection_dims=(128, 64), projection_norm=kind)
    model.compile(optimizer=optimizer or keras.optimizers.AdamW(config["lr"], weight_decay=1e-4),
                  loss=losses.InfoNCE(0.2))
    model.build((None, 2, size, size, 1))
    return model


def dataset(x_train, config, seed, steps):
    import functools

    from keras_contrast import data
    from keras_contrast.data import augmentation

    passes = -(-steps * config["batch"] // len(x_train))
    augment = functools.partial(augmentation.simclr_augment, output_size=config["image_size"])
    return data.two_view_dataset(x_train, config["batch"], seed=seed, num_epochs=passes,
                                 augment=augment)


def check_emulation(replicas, x_train, config, seed):
    """Weights after `check_steps` steps of per-replica BN on `replicas`
    real simulated replicas vs the one-device emulation from the same
    weights and batches: the largest |difference| relative to the largest
    |weight|, and the seconds the real replicas took (tracing included).

    In float64 and with SGD, not the runs' float32 AdamW: the training
    trajectory amplifies rounding (measured here in float32: 1e-3 relative
    after 2 steps, against 3e-2 for the whole batch's statistics; in float64
    1e-15), and Adam's first steps move every weight by about ±lr whatever
    its gradient's size, so a gradient that is 0 in exact arithmetic (the
    bias of a Dense layer before BN) would turn rounding into lr-sized
    differences."""
    import keras

    # Both: once a layer has been built, Keras keeps the global dtype policy
    # it made from floatx, whatever floatx becomes.
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        return _check_emulation(replicas, x_train, config, seed)
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


def _check_emulation(replicas, x_train, config, seed):
    import keras
    import numpy as np

    from keras_contrast import distribute

    steps = config["check_steps"]

    def sgd():
        return keras.optimizers.SGD(config["check_lr"])

    emulated = build("batch", replicas, config, seed, sgd())
    start = emulated.get_weights()
    strategy = distribute.simulated_cpu_strategy(replicas)
    with strategy.scope():
        real = build("batch", 1, config, seed, sgd())
    real.set_weights(start)
    started = time.time()
    real.fit(dataset(x_train, config, seed, steps), epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.time() - started
    # The reference that shows the check can fail: the same steps with the
    # whole batch's statistics (what synchronised BN computes).
    whole = build("batch", 1, config, seed, sgd())
    whole.set_weights(start)
    for model in (emulated, whole):
        model.fit(dataset(x_train, config, seed, steps), epochs=1, steps_per_epoch=steps,
                  verbose=0)
    scale = max(float(np.max(np.abs(w))) for w in real.get_weights())

    def relative(model):
        return max(float(np.max(np.abs(a - b)))
                   for a, b in zip(real.get_weights(), model.get_weights())) / scale

    return {"replicas": replicas, "steps": steps, "relative_difference": relative(emulated),
            "relative_difference_to_whole_batch": relative(whole), "real_seconds": seconds}


def train(groups, x_train, heldout, config, seed):
    """One run: per-replica BN of `groups` replicas (emulated), or, with
    `groups` = 1, the whole batch's statistics (1 replica = synchronised BN
    over any number). Returns the run's record and the model."""
    import keras
    import numpy as np

    from keras_contrast import callbacks
    from keras_contrast import losses

    model = build("batch", groups, config, seed)
    # BNLeakMonitor needs the whole batch's statistics in training mode,
    # which a Ghost-BN model does not have: it scores a twin with plain BN
    # and the same weights (Ghost BN holds BN's variables, in BN's order).
    twin = model if groups == 1 else build("batch", 1, config, seed)
    monitors = {r: callbacks.BNLeakMonitor(heldout, num_groups=r, loss=losses.InfoNCE(0.2),
                                           seed=seed)
                for r in config["monitor_groups"]}
    for monitor in monitors.values():
        monitor.set_model(twin)
    leaks = {str(r): [] for r in monitors}

    def measure(epoch, logs=None):
        if (epoch + 1) % config["monitor_every"]:
            return
        if twin is not model:
            twin.set_weights(model.get_weights())
        for r, monitor in monitors.items():
            values = monitor.leaks()
            leaks[str(r)].append(((epoch + 1) * STEPS_PER_EPOCH, float(np.mean(values)),
                                  float(np.std(values, ddof=1))))

    started = time.time()
    history = model.fit(dataset(x_train, config, seed, config["steps"]),
                        epochs=config["steps"] // STEPS_PER_EPOCH,
                        steps_per_epoch=STEPS_PER_EPOCH, verbose=0,
                        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=measure)])
    seconds = time.time() - started
    return {"seed": seed, "loss": history.history["loss"], "bn_leak": leaks,
            "seconds": seconds}, model


def arm_name(groups):
    return "synchronised BN (any R) = 1 replica" if groups == 1 else (
        f"per-replica BN, {groups} replicas")


def main():
    args = common.parse_args(
        __doc__.split("\n\n")[0],
        replicas=lambda args: max(QUICK_REPLICAS if args.quick else REPLICAS))
    config = (dict(train=512, test=320, bank=512, steps=50, batch=64, width=4, image_size=14,
                   lr=1e-3, seeds=1, replicas=QUICK_REPLICAS, monitor_batch=64,
                   monitor_groups=(2,), monitor_every=1, check_steps=2,
                   check_lr=0.1) if args.quick
              else dict(train=60000, test=2000, bank=10000, steps=1000, batch=256, width=8,
                        image_size=14, lr=1e-3, seeds=3, replicas=REPLICAS, monitor_batch=256,
                        monitor_groups=(4, 16), monitor_every=5, check_steps=2,
                        check_lr=0.1))
    seeds = range(args.seeds or config["seeds"])
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    bank, heldout, test = common.monitored_split((x_train, y_train), (x_test, y_test), config)
    previous = common.previous_runs(args, "bn_leak", config)
    results = {}
    for groups in config["replicas"]:
        name = arm_name(groups)
        runs = []
        for seed in seeds:
            done = [r for r in previous.get(name, []) if r["seed"] == seed]
            if done:
                runs.append(done[0])
                continue
            run, model = train(groups, x_train, heldout, config, seed)
            run["knn"] = common.knn(model.encoder, bank, test)
            runs.append(run)
            print(f"{name}, seed {seed}: loss {run['loss'][-1]:.3f}, kNN {run['knn']:.4f}, "
                  f"bn_leak {({r: v[-1][1] for r, v in run['bn_leak'].items()})}, "
                  f"{run['seconds']:.0f} s", flush=True)
        results[name] = runs
    checks = [check_emulation(r, x_train, config, seed=0) for r in config["replicas"] if r > 1]
    for check in checks:
        print("check", check, flush=True)
    raw = common.knn(None, bank, test)
    write(args, config, source, list(seeds), results, checks, raw)


def write(args, config, source, seeds, results, checks, raw):
    import numpy as np

    sync = results[arm_name(1)]
    by_replicas = {check["replicas"]: check for check in checks}
    rows, verdicts = [], []
    for groups in config["replicas"]:
        runs = results[arm_name(groups)]
        per_batch = config["batch"] // groups
        loss = [r["loss"][-1] for r in runs]
        knn = [r["knn"] for r in runs]
        sync_loss, sync_knn = [r["loss"][-1] for r in sync], [r["knn"] for r in sync]
        # Paired by seed: both arms of a seed start from the same weights and
        # see the same batches.
        loss_gap = float(np.mean(np.subtract(loss, sync_loss)))
        knn_gap = float(np.mean(np.subtract(knn, sync_knn)))
        leak = " / ".join(common.mean_std([r["bn_leak"][str(g)][-1][1] for r in runs],
                                          digits=3, scale=1.0)
                          for g in config["monitor_groups"])
        check = by_replicas.get(groups)
        if groups == 1:
            gap_cells = ["0 (control: the same run)", "0 (control)"]
        else:
            gap_cells = [common.judge(loss_gap, common.seed_spread(loss, sync_loss)),
                         common.judge(knn_gap, common.seed_spread(knn, sync_knn), 100.0, 1,
                                      " points")]
            verdicts.append((groups, loss_gap, common.seed_spread(loss, sync_loss), knn_gap,
                             common.seed_spread(knn, sync_knn)))
        rows.append([
            f"{groups}", f"{per_batch}", common.mean_std(loss, digits=3, scale=1.0),
            gap_cells[0], common.mean_std(knn), gap_cells[1],
            leak,
            (f"{check['relative_difference']:.1e} (whole-batch statistics: "
             f"{check['relative_difference_to_whole_batch']:.1e}; {check['real_seconds']:.0f} s "
             f"for {check['steps']} real steps)") if check else "—"])

    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for groups in config["replicas"]:
        runs = results[arm_name(groups)]
        name = arm_name(groups)
        mean_loss = np.mean([r["loss"] for r in runs], axis=0)
        steps = STEPS_PER_EPOCH * np.arange(1, len(mean_loss) + 1)
        line, = axes[0].plot(steps, mean_loss, label=name)
        for r_groups, style in zip(config["monitor_groups"], ("-", "--")):
            series = np.mean([[v for _, v, _ in r["bn_leak"][str(r_groups)]] for r in runs],
                             axis=0)
            leak_steps = [s for s, _, _ in runs[0]["bn_leak"][str(r_groups)]]
            axes[1].plot(leak_steps, series, style, marker="o", color=line.get_color(),
                         label=f"{name}: {r_groups} groups")
        knn = [100 * r["knn"] for r in runs]
        axes[2].bar(str(groups), np.mean(knn), color=line.get_color(),
                    yerr=np.std(knn) if len(knn) > 1 else None, capsize=4)
    axes[0].set(xlabel="step", ylabel="InfoNCE loss", title="training loss (mean over seeds)")
    axes[1].axhline(0, color="gray", linestyle=":")
    axes[1].set(xlabel="step", ylabel="bn_leak", title="BNLeakMonitor (held-out batch)")
    axes[2].axhline(100 * raw, color="gray", linestyle="--", label="raw pixels")
    axes[2].set(xlabel="replicas (1 = synchronised BN)", ylabel="kNN accuracy (%)",
                title="kNN (bars: seed std)")
    for axis in axes:
        axis.legend(fontsize=6)

    gaps = [v[1] for v in verdicts]
    grows = len(gaps) > 1 and all(later < earlier for earlier, later in zip(gaps, gaps[1:]))
    minutes = ", ".join(f"{r['seconds'] / 60:.1f}" for runs in results.values() for r in runs)
    notes = [
        f"Data: {source}, {config['train']} training images; kNN bank the first "
        f"{config['bank']} of them, {config['test'] - config['monitor_batch']} test images "
        f"scored, {config['monitor_batch']} other test images are BNLeakMonitor's held-out "
        f"batch (5 random splits into {' and '.join(map(str, config['monitor_groups']))} "
        "groups, scored every "
        f"{config['monitor_every'] * STEPS_PER_EPOCH} steps on a plain-BN twin with the "
        f"run's weights). Views: SimCLR crops resized to {config['image_size']}x"
        f"{config['image_size']} (kNN: whole images resized alike). SimCLR with a "
        f"4-convolution backbone (width {config['width']}, BN after every convolution) and "
        f"a (128, 64) projection with BN, InfoNCE τ = 0.2 over the global batch of "
        f"{config['batch']}, AdamW {config['lr']} (weight decay 1e-4), {config['steps']} "
        f"steps, seeds {seeds} ({len(seeds)} per arm; training {minutes} min per run). "
        "Per-replica BN of R replicas: each of R consecutive groups of the batch normalised "
        "alone on one device (the module docstring says why this is exact); check: the "
        f"same {config['check_steps']} first steps on R real simulated replicas (SGD "
        f"{config['check_lr']}, float64: see `check_emulation`), max |w_real − w_emulated| / "
        "max |w| (moving statistics included), next to the same measure against a run with the "
        "whole batch's statistics (what the check would show if the emulation were wrong; "
        "seconds: the real replicas' steps, tracing included). Differences to synchronised "
        "BN are paired by seed and judged against the larger seed-to-seed std of the two "
        f"arms. kNN: cosine, k = 200, τ = 0.1; raw pixels {100 * raw:.1f} %. bn_leak: the "
        "held-out loss with "
        "the whole batch's statistics minus the loss with each group normalised alone "
        "(positive: the model gains from per-group statistics).",
        "",
        "Expected (SimCLR, Chen et al. 2020, §2.2 \"Global BN\"): per-replica BN lets the "
        "model exploit local information leakage, so its training loss drops below "
        "synchronised BN's without a better representation, and the gap grows as the "
        "per-replica batch shrinks; 1 replica is the control (both arms the same run).",
        "",
        "Observed: " + "; ".join(
            f"{groups} replicas ({config['batch'] // groups} per replica): training loss "
            f"− synchronised {common.judge(loss_gap, loss_spread)}, kNN "
            f"{common.judge(knn_gap, knn_spread, 100.0, 1, ' points')}"
            for groups, loss_gap, loss_spread, knn_gap, knn_spread in verdicts) + ". "
        + (f"The loss gap {'grows' if grows else 'does not grow'} (in the per-replica − "
           "synchronised direction) as the per-replica batch shrinks." if len(gaps) > 1
           else ""),
    ]
    common.write_results(
        args, "bn_leak", "BN leak against the per-replica batch: per-replica vs synchronised BN",
        ["replicas", "per replica", "final training loss", "− synchronised (paired)",
         "kNN accuracy (%)", "− synchronised (paired)", "final bn_leak ("
         + " / ".join(map(str, config["monitor_groups"])) + " groups)",
         "check: real replicas vs emulation"], rows, notes,
        {"config": config, "source": source, "raw_pixels_knn": raw, "runs": results,
         "checks": checks}, figure)


if __name__ == "__main__":
    main()
