"""MoCo v3 instability (docs/design.md §5): a small ViT trained at a high
learning rate with a learned vs a frozen random patch projection. Loss curve,
gradient inf-norm traces of the first trainable and the last layer
(`GradientNormMonitor`), final kNN accuracy.

Expected (MoCo v3 paper): gradient spikes show in the first layer a few
steps before the last layer; freezing the random patch projection damps them
and the loss dips that follow.
"""

import experiment_common as common


def spikes(trace, factor=3.0, window=10):
    """Steps whose value exceeds `factor` x the median of the `window` steps
    before it."""
    import numpy as np

    trace = np.asarray(trace)
    return [t for t in range(window, len(trace))
            if trace[t] > factor * np.median(trace[t - window:t])]


def leads(first, last, horizon=5):
    """For every last-layer spike, how many steps earlier the closest
    first-layer spike at most `horizon` steps before it came (None if none)."""
    out = []
    for step in last:
        before = [step - f for f in first if 0 <= step - f <= horizon]
        out.append(min(before) if before else None)
    return out


def train(frozen, x_train, config):
    import keras

    from keras_contrast import callbacks
    from keras_contrast import data
    from keras_contrast import losses
    from keras_contrast import models

    keras.utils.set_random_seed(0)
    steps = len(x_train) // config["batch"]
    model = models.from_preset(
        "mocov3_vit_tiny", image_size=28, num_channels=1, patch_size=4, depth=config["depth"],
        freeze_patch_projection=frozen, projection_dims=(512, 512, 128),
        prediction_dims=(512, 128), projection_norm="batch",
        total_steps=config["epochs"] * steps)
    model.compile(optimizer=keras.optimizers.AdamW(config["learning_rate"], weight_decay=0.1),
                  loss=losses.MoCoV3Loss(0.2))
    monitor = callbacks.GradientNormMonitor()
    losses_per_step = keras.callbacks.LambdaCallback()
    trace = []
    losses_per_step.on_train_batch_end = lambda batch, logs: trace.append(float(logs["loss"]))
    model.fit(data.two_view_dataset(x_train, config["batch"], seed=0,
                                    num_epochs=config["epochs"]),
              epochs=config["epochs"], steps_per_epoch=steps, verbose=0,
              callbacks=[monitor, losses_per_step])
    # Keras logs the running mean of the loss over the epoch; undo it to get
    # each step's loss.
    step_losses = []
    for epoch in range(config["epochs"]):
        means = trace[epoch * steps:(epoch + 1) * steps]
        step_losses += [means[0]] + [(i + 1) * means[i] - i * means[i - 1]
                                     for i in range(1, len(means))]
    return model, step_losses, monitor.history


def main():
    args = common.parse_args(__doc__.split("\n\n")[0], extra=lambda p: p.add_argument(
        "--learning-rate", type=float, default=None))
    config = (dict(train=256, test=256, epochs=1, batch=64, depth=1, learning_rate=1e-2)
              if args.quick else
              dict(train=4096, test=2000, epochs=3, batch=128, depth=4, learning_rate=1e-2))
    if args.learning_rate:
        config["learning_rate"] = args.learning_rate
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    runs = {}
    for name, frozen in (("learned patch projection", False), ("frozen random projection", True)):
        model, step_losses, norms = train(frozen, x_train, config)
        first, last = norms["grad_inf_norm/first"], norms["grad_inf_norm/last"]
        runs[name] = {
            "loss": step_losses, "first": first, "last": last,
            "knn": common.knn(model.encoder, (x_train, y_train), (x_test, y_test)),
            "first_spikes": spikes(first), "last_spikes": spikes(last),
            "loss_jumps": spikes([max(v, 1e-6) for v in step_losses], factor=1.05),
        }
        runs[name]["leads"] = leads(runs[name]["first_spikes"], runs[name]["last_spikes"])
        print(name, {k: v for k, v in runs[name].items() if k not in ("loss", "first", "last")},
              flush=True)
    raw = common.knn(None, (x_train, y_train), (x_test, y_test))

    plt = common.pyplot()
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for name, run in runs.items():
        axes[0].plot(run["loss"], label=name)
        axes[1].semilogy(run["first"], label=name)
        axes[2].semilogy(run["last"], label=name)
    axes[0].set(ylabel="MoCo v3 loss", title=f"ViT, AdamW lr {config['learning_rate']}")
    axes[1].set(ylabel="first layer |g|∞")
    axes[2].set(ylabel="last layer |g|∞", xlabel="step")
    axes[0].legend(fontsize=8)
    rows = []
    for name, run in runs.items():
        led = [lead for lead in run["leads"] if lead is not None]
        rows.append([name, len(run["first_spikes"]), len(run["last_spikes"]),
                     f"{len(led)} of {len(run['last_spikes'])}",
                     f"{max(run['first']):.3g} / {max(run['last']):.3g}",
                     f"{100 * run['knn']:.1f}"])
    learned, frozen = runs["learned patch projection"], runs["frozen random projection"]
    notes = [
        f"Data: {source}, {config['train']} training images (also the kNN bank), "
        f"{config['test']} test images. MoCo v3 with a ViT-Tiny width (192) of depth "
        f"{config['depth']}, patches 4x4, sin-cos positions, projector (512, 512, 128), "
        f"predictor (512, 128), τ = 0.2, batch {config['batch']}, {config['epochs']} epochs, "
        f"AdamW {config['learning_rate']} without warm-up (high on purpose), weight decay 0.1, "
        "momentum 0.99 → 1 (cosine). 'First layer' is the layer of the first trainable "
        "variable: the patch projection when learned; with it frozen, the next trainable one. "
        "A spike is a step whose |g|∞ exceeds 3x the median of the 10 steps before it; "
        f"'led' counts last-layer spikes with a first-layer spike 0–5 steps earlier. kNN: "
        f"cosine, k = 200, τ = 0.1; raw pixels {100 * raw:.1f} %.",
        "",
        f"Observed: learned projection — {len(learned['first_spikes'])} first-layer and "
        f"{len(learned['last_spikes'])} last-layer spikes; frozen — "
        f"{len(frozen['first_spikes'])} and {len(frozen['last_spikes'])}. kNN "
        f"{100 * learned['knn']:.1f} % (learned) vs {100 * frozen['knn']:.1f} % (frozen). "
        "At this scale (a few hundred steps on CPU, small ViT) the instability of the paper's "
        "large-batch runs may not appear; the counts above are what this run shows.",
    ]
    common.write_results(
        args, "mocov3_stability", "MoCo v3: learned vs frozen random patch projection",
        ["patch projection", "first-layer spikes", "last-layer spikes",
         "last spikes led by first", "max |g|∞ first / last", "kNN accuracy (%)"], rows, notes,
        {"config": config, "source": source, "raw_pixels_knn": raw, "runs": runs}, figure)


if __name__ == "__main__":
    main()
