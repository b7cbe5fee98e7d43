"""BN leak where MoCo found it (docs/design.md §4): MoCo with a queue of
4,096 negatives on 4 simulated replicas of 16 samples, key momentum 0.99,
(a) per-replica BN without shuffling, (b) per-replica BN with Shuffle BN,
(c) synchronised BN. Pretext accuracy and loss every 50 steps, the BN leak
every 250 steps, kNN at the end.

MoCo's positive key is computed in the same step, on the same replica, as
its query; the queue's negatives were computed in earlier steps, from other
batches. With per-replica BN and no shuffling the query and its key are
normalised with the statistics of the same 32 images, which none of the
queued keys share, so the network can find its positive by those
statistics ("cheating", MoCo §3.3): the pretext task gets easy without a
better representation. Shuffle BN normalises each key with the statistics
of a different subset of the global batch.
"""

import time

import experiment_common as common

REPLICAS = 4
QUICK_REPLICAS = 2  # the smoke test traces each arm's step once per replica
ARMS = (
    ("(a) per-replica BN", dict(norm="batch")),
    ("(b) Shuffle BN", dict(norm="batch", shuffle_bn=True)),
    ("(c) synchronised BN", dict(norm="sync")),
)
LOG_EVERY = 50  # steps per Keras epoch: history holds the mean over each 50 steps
THRESHOLD = 0.9


def train(settings, seed, x_train, heldout, config):
    import functools

    import keras

    from keras_contrast import callbacks
    from keras_contrast import data
    from keras_contrast import distribute
    from keras_contrast import losses
    from keras_contrast import models
    from keras_contrast.data import augmentation

    keras.utils.set_random_seed(seed)
    size = config["image_size"]
    strategy = distribute.simulated_cpu_strategy(config["replicas"])
    with strategy.scope():
        backbone = common.small_conv_backbone(settings["norm"], config["width"],
                                              (size, size, x_train.shape[-1]))
        model = models.MoCo(backbone, projection_dims=(128, 64), queue_size=config["queue"],
                            momentum=config["momentum"], shuffle_seed=seed,
                            shuffle_bn=settings.get("shuffle_bn", False))
        model.compile(optimizer=keras.optimizers.AdamW(config["lr"], weight_decay=1e-4),
                      loss=losses.InfoNCE(0.2))
    batch = config["batch"]
    passes = -(-config["steps"] * batch // len(x_train))
    augment = functools.partial(augmentation.simclr_augment, output_size=size)
    dataset = data.two_view_dataset(x_train, batch, seed=seed, num_epochs=passes,
                                    augment=augment)
    monitor = callbacks.BNLeakMonitor(heldout, num_groups=config["replicas"],
                                      every_n_epochs=config["monitor_every"], seed=seed)
    started = time.time()
    history = model.fit(dataset, epochs=config["steps"] // LOG_EVERY,
                        steps_per_epoch=LOG_EVERY, verbose=0, shuffle=False,
                        callbacks=[monitor])
    return model, history.history, monitor.history, time.time() - started


def steps_to(accuracies, threshold=THRESHOLD):
    """Steps until a 50-step window's mean pretext accuracy first exceeds
    `threshold`, or None."""
    for index, value in enumerate(accuracies):
        if value > threshold:
            return (index + 1) * LOG_EVERY
    return None


def main():
    args = common.parse_args(__doc__.split("\n\n")[0],
                             replicas=lambda args: QUICK_REPLICAS if args.quick else REPLICAS)
    config = (dict(train=256, test=256, bank=256, steps=50, batch=32, width=4, image_size=14,
                   queue=512, momentum=0.99, lr=1e-3, seeds=1, monitor_batch=64,
                   monitor_every=1, replicas=QUICK_REPLICAS) if args.quick
              else dict(train=60000, test=2000, bank=10000, steps=1500, batch=64, width=8,
                        image_size=14, queue=4096, momentum=0.99, lr=1e-3, seeds=2,
                        monitor_batch=128, monitor_every=5, replicas=REPLICAS))
    seeds = range(args.seeds or config["seeds"])
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    bank, heldout, test = common.monitored_split((x_train, y_train), (x_test, y_test), config)
    previous = common.previous_runs(args, "bn_leak_moco", config)
    results = {}
    for name, settings in ARMS:
        runs = []
        for seed in seeds:
            done = [r for r in previous.get(name, []) if r["seed"] == seed]
            if done:
                runs.append(done[0])
                continue
            model, history, leaks, seconds = train(settings, seed, x_train, heldout, config)
            accuracy = common.knn(model.encoder, bank, test)
            run = {"seed": seed, "loss": history["loss"],
                   "pretext_accuracy": history["pretext_accuracy"],
                   "bn_leak": [(LOG_EVERY * (epoch + 1), value, spread)
                               for epoch, value, spread in leaks],
                   "knn": accuracy, "steps_to_90": steps_to(history["pretext_accuracy"]),
                   "seconds": seconds}
            runs.append(run)
            print(f"{name}, seed {seed}: loss {run['loss'][-1]:.3f}, pretext "
                  f"{run['pretext_accuracy'][-1]:.3f}, >90 % at {run['steps_to_90']}, "
                  f"leak {run['bn_leak'][-1][1]:.3f}, kNN {accuracy:.4f}, {seconds:.0f} s",
                  flush=True)
        results[name] = runs
    raw = common.knn(None, bank, test)
    write(args, config, source, seeds, results, raw)


def write(args, config, source, seeds, results, raw):
    import numpy as np

    def mean(values):
        return float(np.mean(values))

    def steps_cell(runs):
        steps = [r["steps_to_90"] for r in runs]
        return " / ".join("not reached" if s is None else str(s) for s in steps)

    rows, summary = [], {}
    for name, runs in results.items():
        final_loss = [r["loss"][-1] for r in runs]
        final_pretext = [r["pretext_accuracy"][-1] for r in runs]
        final_leak = [r["bn_leak"][-1][1] for r in runs]
        knn = [r["knn"] for r in runs]
        summary[name] = {"loss": final_loss, "pretext": final_pretext, "leak": final_leak,
                         "knn": knn}
        rows.append([name, steps_cell(runs), common.mean_std(final_pretext),
                     common.mean_std(final_loss, digits=3, scale=1.0),
                     common.mean_std(final_leak, digits=3, scale=1.0), common.mean_std(knn)])

    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, runs in results.items():
        steps = [LOG_EVERY * (i + 1) for i in range(len(runs[0]["pretext_accuracy"]))]
        mean_pretext = np.mean([r["pretext_accuracy"] for r in runs], axis=0)
        line, = axes[0].plot(steps, 100 * mean_pretext, label=name)
        axes[1].plot(steps, np.mean([r["loss"] for r in runs], axis=0), label=name,
                     color=line.get_color())
        leak_steps = [step for step, _, _ in runs[0]["bn_leak"]]
        axes[2].plot(leak_steps, np.mean([[v for _, v, _ in r["bn_leak"]] for r in runs],
                                         axis=0), marker="o", label=name,
                     color=line.get_color())
    axes[0].axhline(100 * THRESHOLD, color="gray", linestyle=":")
    axes[0].set(xlabel="step", ylabel="pretext accuracy (%)",
                title="pretext accuracy (mean over seeds)")
    axes[1].set(xlabel="step", ylabel="InfoNCE loss vs the queue", title="training loss")
    axes[2].axhline(0, color="gray", linestyle=":")
    axes[2].set(xlabel="step", ylabel="bn_leak", title="BNLeakMonitor (held-out batch)")
    for axis in axes:
        axis.legend(fontsize=7)

    a, b, c = (summary[name] for name, _ in ARMS)

    def compare(x, y, key, lower_word, higher_word, scale=1.0, unit="", digits=3):
        gap = mean(x[key]) - mean(y[key])
        word = lower_word if gap < 0 else higher_word
        verdict = common.judge(gap, common.seed_spread(x[key], y[key]), scale, digits, unit)
        return f"{word} ({verdict})"

    notes = [
        f"Data: {source}, {config['train']} training images; kNN bank the "
        f"first {config['bank']} of them, {config['test'] - config['monitor_batch']} test "
        f"images scored, {config['monitor_batch']} other test images are BNLeakMonitor's "
        f"held-out batch ({config['replicas']} groups, 5 random splits). Views: SimCLR crops "
        f"resized to {config['image_size']}x{config['image_size']} (kNN: whole images resized "
        "alike). "
        f"MoCo v2 with a 4-convolution backbone (width {config['width']}, BN or sync BN "
        f"after every convolution) and projection (128, 64) without BN, queue "
        f"{config['queue']} ({config['queue'] // config['batch']}x the global batch), key "
        f"momentum {config['momentum']}, InfoNCE τ = 0.2, global batch {config['batch']} on "
        f"{config['replicas']} simulated replicas ({config['batch'] // config['replicas']} "
        f"per replica), AdamW {config['lr']}, {config['steps']} steps, seeds {list(seeds)} "
        f"({len(seeds)} per arm; training "
        + ", ".join(f"{r['seconds'] / 60:.1f}" for runs in results.values() for r in runs)
        + " min per run). kNN: cosine, k = 200, τ = 0.1; raw pixels "
        f"{100 * raw:.1f} %. Pretext accuracy: the fraction of queries whose own key scores "
        "above every queued key, averaged over each 50 steps (the weights move during the "
        "window). bn_leak: the held-out loss with the whole batch's statistics minus the "
        f"loss with each of {config['replicas']} groups normalised alone (positive: the model "
        "gains from per-replica statistics).",
        "",
        "Expected (MoCo, He et al. 2020, §3.3 \"Shuffling BN\" and the appendix figure of "
        "the pretext accuracy): without shuffling the model cheats through BN — its pretext "
        "accuracy climbs faster and its loss drops lower than with Shuffle BN, while its "
        "kNN accuracy is worse; synchronised BN may keep a small leak, since a query and its "
        "key are still normalised with statistics of the same images.",
        "",
        "Observed, (a) against (b): final pretext accuracy "
        + compare(a, b, "pretext", "lower", "higher", 100, " points", 1)
        + "; final training loss " + compare(a, b, "loss", "lower", "higher")
        + "; kNN accuracy " + compare(a, b, "knn", "lower", "higher", 100, " points", 1)
        + "; bn_leak at the end " + compare(a, b, "leak", "lower", "higher") + ". "
        + "(c) against (b): final pretext accuracy "
        + compare(c, b, "pretext", "lower", "higher", 100, " points", 1)
        + "; kNN accuracy " + compare(c, b, "knn", "lower", "higher", 100, " points", 1)
        + "; bn_leak at the end " + compare(c, b, "leak", "lower", "higher") + ".",
    ]
    common.write_results(
        args, "bn_leak_moco", "BN leak in MoCo: per-replica BN vs Shuffle BN vs synchronised BN",
        ["normalisation", "steps to pretext accuracy > 90 % (per seed)",
         "final pretext accuracy (%)", "final training loss", "final bn_leak",
         "kNN accuracy (%)"], rows, notes,
        {"config": config, "source": source, "raw_pixels_knn": raw, "runs": results}, figure)


if __name__ == "__main__":
    main()
