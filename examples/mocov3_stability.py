"""MoCo v3 stability against the learning rate (docs/design.md §5): a small
ViT with a learned vs a frozen random patch projection, each trained at
learning rates from the recipe's (AdamW, 1.5e-4 x batch / 256) to 30x it,
without warm-up. Per run: the loss of every step, the gradient inf-norm of
the first trainable and of the last backbone layer (`GradientNormMonitor`),
kNN accuracy at the end.

Per projection the table gives the highest learning rate that trains
without diverging (loss finite and kNN >= 90 % of the best kNN of that
projection's sweep), the gradient spikes, and the lag at which the first
layer's log inf-norm correlates best with the last layer's (positive: the
first layer leads).
"""

import math
import time

import experiment_common as common
import keras  # after experiment_common, which selects the backend

NAME = "mocov3_stability"
PROJECTIONS = (("learned", False), ("frozen", True))
RECIPE_LR = 1.5e-4  # MoCo v3's ViT recipe, per 256 images of batch
STABLE_FRACTION = 0.9
# 1x to 30x the recipe's rate in steps of √30, then 100x and 300x: a first
# sweep of 1x-30x in steps of 30^(1/4) saw no divergence and no spike, so
# the budget of five rates went to finding where training breaks.
MULTIPLIERS = [1.0, 5.477, 30.0, 100.0, 300.0]


def spikes(trace, factor=3.0, window=10):
    """Steps whose value exceeds `factor` x the median of the `window` steps
    before it (non-finite steps never count)."""
    import numpy as np

    trace = np.asarray(trace, dtype=float)
    return [t for t in range(window, len(trace))
            if np.isfinite(trace[t]) and trace[t] > factor * np.median(trace[t - window:t])]


def relative_log(trace, window=10):
    """`log g[t] - median(log g[t - window : t])` for `t >= window`: each
    step's inf-norm relative to the steps just before it (what a spike
    measures), which removes the slow drift of the norm over training.
    Stops at the first non-finite value."""
    import numpy as np

    logs = np.log(np.maximum(np.asarray(trace, dtype=float), 1e-30))
    bad = np.flatnonzero(~np.isfinite(logs))
    if bad.size:
        logs = logs[:bad[0]]
    return np.asarray([logs[t] - np.median(logs[t - window:t])
                       for t in range(window, len(logs))])


def peak_lag(first, last, max_lag=10):
    """The lag `k` in `[-max_lag, max_lag]` maximising the correlation of
    `first[t]` with `last[t + k]` (both mean-removed; the sum over the
    overlapping steps divided by their count and by the two series' std).
    Positive `k`: `last` repeats `first` `k` steps later (the first layer
    leads). Returns `(k, correlation)`, or `(None, None)` when the series
    are shorter than 3 steps or constant."""
    import numpy as np

    a = np.asarray(first, dtype=float)
    b = np.asarray(last, dtype=float)
    n = min(len(a), len(b))
    if n < 3:
        return None, None
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    if a.std() == 0 or b.std() == 0:
        return None, None
    scale = a.std() * b.std()
    best = (None, -np.inf)
    for k in range(-min(max_lag, n - 2), min(max_lag, n - 2) + 1):
        x, y = (a[:n - k], b[k:]) if k >= 0 else (a[-k:], b[:n + k])
        value = float(np.mean(x * y) / scale)
        if value > best[1]:
            best = (k, value)
    return best


def highest_stable_rate(runs, fraction=STABLE_FRACTION):
    """The highest learning rate of `runs` (dicts with `lr`, `loss`: the
    per-step losses, `knn`) at which every seed's losses are finite and the
    mean kNN over seeds is at least `fraction` x the best mean kNN over the
    rates; None when no rate qualifies. Returns `(rate, {rate: stable})`."""
    import numpy as np

    by_rate = {}
    for run in runs:
        by_rate.setdefault(run["lr"], []).append(run)
    finite = {lr: all(np.all(np.isfinite(r["loss"])) and np.isfinite(r["knn"]) for r in rs)
              for lr, rs in by_rate.items()}
    knn = {lr: float(np.mean([r["knn"] for r in rs])) for lr, rs in by_rate.items()}
    scored = [knn[lr] for lr in by_rate if finite[lr]]
    best = max(scored) if scored else None
    stable = {lr: bool(finite[lr] and knn[lr] >= fraction * best) for lr in sorted(by_rate)}
    rates = [lr for lr, ok in stable.items() if ok]
    return (max(rates) if rates else None), stable


def learning_rates(config):
    """`multipliers` x the recipe's rate for the batch."""
    recipe = RECIPE_LR * config["batch"] / 256
    return [recipe * m for m in config["multipliers"]]


class StepLoss(keras.callbacks.Callback):
    """Records each step's loss. Keras logs the running mean over the
    epoch, `mean_n = ((n - 1) mean_(n-1) + loss_n) / n`, so
    `loss_n = n mean_n - (n - 1) mean_(n-1)`."""

    def __init__(self):
        super().__init__()
        self.losses = []
        self.first_step = None
        self._previous = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if not self.losses:
            self.first_step = time.time()  # after tracing, in a model's first fit
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._previous)
        self._previous = mean


class NormReader(keras.callbacks.Callback):
    """Appends each step's `grad_inf_norm/*` logs to `monitor.history`, as
    `GradientNormMonitor` does, without its `set_model`: that one makes
    every `fit` retrace the train step."""

    def __init__(self, monitor):
        super().__init__()
        self.monitor = monitor

    def on_train_batch_end(self, batch, logs=None):
        self.monitor.on_train_batch_end(batch, logs)


def step_losses(running_means):
    """The per-step losses behind Keras' running means of one epoch."""
    recorder = StepLoss()
    for batch, mean in enumerate(running_means):
        recorder.on_train_batch_end(batch, {"loss": mean})
    return recorder.losses


def build(frozen, seed, config):
    from keras_contrast import models

    keras.utils.set_random_seed(seed)
    model = models.from_preset(
        "mocov3_vit_tiny", image_size=28, num_channels=1, patch_size=config["patch"],
        hidden_dim=config["width"], depth=config["depth"], num_heads=config["heads"],
        mlp_dim=config["mlp"], freeze_patch_projection=frozen,
        projection_dims=(config["head"], config["head"], config["head"] // 4),
        prediction_dims=(config["head"], config["head"] // 4), projection_norm="batch",
        total_steps=config["steps"])
    model.build((None, 2, 28, 28, 1))
    return model


class Trainer:
    """One compiled model per projection, reset to seed `s`'s initial
    weights and a fresh optimizer before each run, so the train step is
    traced once per projection rather than once per run."""

    def __init__(self, frozen, config):
        from keras_contrast import callbacks
        from keras_contrast import losses

        self.config = config
        self.frozen = frozen
        self.model = build(frozen, 0, config)
        self.model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.1),
                           loss=losses.MoCoV3Loss(0.2))
        # First trainable layer that sees the patch tokens, and the
        # backbone's last layer.
        self.layers = {"first": "block1_attention" if frozen else "patch_projection",
                       "last": f"block{config['depth']}_mlp2"}
        self.monitor = callbacks.GradientNormMonitor(list(self.layers.values()))
        self._watched = False
        self._initial = {}

    def run(self, seed, lr, dataset):
        import numpy as np

        if seed not in self._initial:
            self._initial[seed] = build(self.frozen, seed, self.config).get_weights()
        self.model.set_weights(self._initial[seed])
        optimizer = self.model.optimizer
        if optimizer.built:
            for variable in optimizer.variables:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        optimizer.learning_rate = lr
        callbacks = [NormReader(self.monitor) if self._watched else self.monitor]
        self._watched = True
        self.monitor.history = {name: [] for name in self.monitor.history}
        losses = StepLoss()
        started = time.time()
        self.model.fit(dataset, epochs=1, steps_per_epoch=self.config["steps"], verbose=0,
                       shuffle=False, callbacks=callbacks + [losses])
        seconds = time.time() - started
        prefix = "grad_inf_norm/"
        norms = {key: self.monitor.history[prefix + name] for key, name in self.layers.items()}
        return losses.losses, norms, seconds, losses.first_step - started


def main():
    args = common.parse_args(__doc__.split("\n\n")[0], extra=lambda parser: parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps per run"))
    config = (dict(train=512, test=200, bank=256, steps=12, batch=32, patch=7, width=32,
                   heads=2, depth=1, mlp=128, head=64, multipliers=[1.0, 30.0], seeds=1,
                   window=3, max_lag=3) if args.quick
              else dict(train=20000, test=1000, bank=3000, steps=200, batch=64, patch=7,
                        width=64, heads=4, depth=4, mlp=128, head=256,
                        multipliers=MULTIPLIERS, seeds=2,
                        window=10, max_lag=10))
    if args.steps:
        config["steps"] = args.steps
    seeds = range(args.seeds or config["seeds"])
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    from keras_contrast import data

    bank = (x_train[:config["bank"]], y_train[:config["bank"]])
    test = (x_test, y_test)
    passes = -(-config["steps"] * config["batch"] // len(x_train))
    # Runs record their multiplier: a sweep can gain rates on --resume.
    previous = common.previous_runs(args, NAME, config, may_differ=("multipliers",))
    results = {}
    for name, frozen in PROJECTIONS:
        trainer = None
        runs = []
        for lr, multiplier in zip(learning_rates(config), config["multipliers"]):
            for seed in seeds:
                done = [r for r in previous.get(name, [])
                        if r["seed"] == seed and r["multiplier"] == multiplier]
                if done:
                    runs.append(done[0])
                    continue
                trainer = trainer or Trainer(frozen, config)
                dataset = data.two_view_dataset(x_train, config["batch"], seed=seed,
                                                num_epochs=passes)
                losses, norms, seconds, first_step = trainer.run(seed, lr, dataset)
                finite = all(math.isfinite(v) for v in losses)
                # A diverged encoder's features are NaN: nothing to score.
                accuracy = (common.knn(trainer.model.encoder, bank, test) if finite
                            else float("nan"))
                run = {"seed": seed, "multiplier": multiplier, "lr": lr, "loss": losses,
                       "first": norms["first"], "last": norms["last"], "knn": accuracy,
                       "seconds": seconds, "first_step_seconds": first_step}
                run.update(analyse(run, config))
                runs.append(run)
                print(f"{name}, lr {lr:.3g} ({multiplier}x), seed {seed}: loss "
                      f"{run['final_loss']:.3f}, kNN {accuracy:.4f}, spikes "
                      f"{run['first_spikes']}/{run['last_spikes']}, lag {run['lag']}, "
                      f"{seconds:.0f} s", flush=True)
        results[name] = runs
    raw = common.knn(None, bank, test)
    write(args, config, source, seeds, results, raw)


def analyse(run, config):
    """Spike counts, loss jumps, the final loss and the first/last lag of one run."""
    import numpy as np

    window = config["window"]
    lag, correlation = peak_lag(relative_log(run["first"], window),
                                relative_log(run["last"], window), config["max_lag"])
    tail = np.asarray(run["loss"][-max(1, len(run["loss"]) // 10):], dtype=float)
    return {"first_spikes": len(spikes(run["first"], window=window)),
            "last_spikes": len(spikes(run["last"], window=window)),
            "loss_jumps": len(spikes(run["loss"], factor=1.05, window=window)),
            "lag": lag, "lag_correlation": correlation,
            "final_loss": float(tail.mean()),
            "finite": bool(np.all(np.isfinite(run["loss"])))}


def write(args, config, source, seeds, results, raw):
    import numpy as np

    def per_seed(values, fmt="{}"):
        return " / ".join("–" if v is None else fmt.format(v) for v in values)

    rates = learning_rates(config)
    summary = {}
    rows = []
    for name, runs in results.items():
        top, stable = highest_stable_rate(runs)
        summary[name] = {"highest_stable_lr": top, "stable": stable}
        for lr, multiplier in zip(rates, config["multipliers"]):
            group = sorted((r for r in runs if r["multiplier"] == multiplier),
                           key=lambda r: r["seed"])
            rows.append([name, f"{lr:.3g} ({multiplier:g}x)",
                         common.mean_std([r["final_loss"] for r in group], 3, 1.0),
                         common.mean_std([r["knn"] for r in group]),
                         per_seed([r["first_spikes"] for r in group]),
                         per_seed([r["last_spikes"] for r in group]),
                         per_seed([r["loss_jumps"] for r in group]),
                         per_seed([r["lag"] for r in group], "{:+d}"),
                         "yes" if stable[lr] else
                         "no (loss not finite)" if not all(r["finite"] for r in group) else
                         f"no (kNN < {100 * STABLE_FRACTION:.0f} % of best)"])
    for name in results:
        top = summary[name]["highest_stable_lr"]
        rows.append([f"**{name}: highest stable lr**",
                     "none" if top is None else
                     f"{top:.3g} ({config['multipliers'][rates.index(top)]:g}x)",
                     "", "", "", "", "", "", ""])

    def knn_of(name, multiplier):
        return [r["knn"] for r in results[name] if r["multiplier"] == multiplier]

    low, high = config["multipliers"][0], config["multipliers"][-1]
    observed = []
    for name in results:
        a, b = knn_of(name, high), knn_of(name, low)
        top = summary[name]["highest_stable_lr"]
        unstable = [f"{m:g}x" for lr, m in zip(rates, config["multipliers"])
                    if not summary[name]["stable"][lr]]
        runs = results[name]
        lags = [r["lag"] for r in runs if r["lag"] is not None]
        leading = sum(lag > 0 for lag in lags)
        observed.append(
            f"{name} projection: highest stable rate "
            + ("none" if top is None else f"{top:.3g}") + "; "
            + (f"not stable (loss not finite, or kNN below {100 * STABLE_FRACTION:.0f} % "
               "of the projection's best) at " + ", ".join(unstable) if unstable
               else "stable at every rate")
            + f"; kNN at {high:g}x minus at {low:g}x "
            + common.judge(float(np.mean(a) - np.mean(b)), common.seed_spread(a, b), 100, 1,
                           " points")
            + f"; {sum(r['first_spikes'] for r in runs)} first-layer and "
            + f"{sum(r['last_spikes'] for r in runs)} last-layer spikes over {len(runs)} runs "
            + f"({sum(r['first_spikes'] for r in runs if r['multiplier'] == high)} and "
            + f"{sum(r['last_spikes'] for r in runs if r['multiplier'] == high)} at {high:g}x)"
            + f"; peak-correlation lag > 0 (first layer leads) in {leading} of {len(lags)} "
            + "runs, median lag "
            + (f"{float(np.median(lags)):+g}" if lags else "–") + " steps.")
    for multiplier in (low, high):
        a, b = knn_of("learned", multiplier), knn_of("frozen", multiplier)
        observed.append(
            f"At {multiplier:g}x, kNN frozen minus learned "
            + common.judge(float(np.mean(b) - np.mean(a)), common.seed_spread(a, b), 100, 1,
                           " points") + ".")
    seconds = [r["seconds"] for runs in results.values() for r in runs]
    steady = [(r["seconds"] - r["first_step_seconds"]) / max(1, config["steps"] - 1)
              for runs in results.values() for r in runs]
    recipe = RECIPE_LR * config["batch"] / 256
    notes = [
        f"Data: {source}, {config['train']} training images; kNN bank the first "
        f"{config['bank']} of them, {config['test']} test images (cosine, k = 200, τ = 0.1; "
        f"raw pixels {100 * raw:.1f} %). MoCo v3 (preset `mocov3_vit_tiny`, overridden): ViT "
        f"of width {config['width']}, depth {config['depth']}, {config['heads']} heads, MLP "
        f"{config['mlp']}, patches {config['patch']}x{config['patch']} "
        f"({(28 // config['patch']) ** 2} tokens + class token), fixed sin-cos positions, "
        f"projector ({config['head']}, {config['head']}, {config['head'] // 4}) and predictor "
        f"({config['head']}, {config['head'] // 4}) with BN, MoCoV3Loss τ = 0.2, key momentum "
        f"0.99 → 1 (cosine over the run), SimCLR augmentations at 28x28. Batch "
        f"{config['batch']}: on 2 CPU cores time, not memory, is the limit, and this is the "
        f"largest batch at which the {2 * len(rates) * len(seeds)} runs of "
        f"{config['steps']} steps fit the time budget. AdamW, weight decay 0.1, constant "
        f"learning rate without warm-up: the recipe's 1.5e-4 x {config['batch']}/256 = "
        f"{recipe:.3g} times " + ", ".join(f"{m:g}" for m in config["multipliers"])
        + (" (a first sweep from 1x to 30x in steps of 30^(1/4), 2.34x and 12.8x included, "
           "showed no divergence and no spike; those two rates gave way to 100x and 300x)"
           if config["multipliers"] == MULTIPLIERS else "")
        + f". {len(seeds)} seed(s) per rate (initial weights and data order); training "
        f"{min(seconds):.0f}–{max(seconds):.0f} s per run (the first run of each projection "
        f"includes tracing the step), {1000 * min(steady):.0f}–{1000 * max(steady):.0f} ms "
        "per step after the first.",
        "",
        f"Definitions. 'First layer': the patch projection when learned; when frozen (not "
        f"trainable, no gradient) the first block's attention, the first trainable layer "
        f"acting on the tokens. 'Last layer': the last block's second MLP layer. Per-step "
        f"loss: undone from Keras' running mean (`StepLoss`); final loss: mean of the last "
        f"10 % of steps. A spike: a step whose ‖g‖∞ exceeds 3x the median of the "
        f"{config['window']} steps before it; a loss jump: a step whose loss exceeds 1.05x "
        f"that median. Lag: the k in ±{config['max_lag']} steps maximising the correlation "
        f"of the first layer's r[t] with the last layer's r[t + k], r = log ‖g‖∞ minus the "
        f"median of its {config['window']} previous steps, mean-removed (positive k: the "
        f"first layer leads; one value per seed). Stable (trains without divergence): every "
        f"seed's loss finite and the seed-mean kNN at least {100 * STABLE_FRACTION:.0f} % of "
        "the best seed-mean kNN of the same projection's sweep (an undertrained low rate can "
        "fail this too); the highest stable rate is the highest rate that is stable. "
        "Differences are judged against the larger seed-to-seed std of the two "
        "arms compared.",
        "",
        "Expected (MoCo v3, Chen, Xie & He 2021, §4 \"Stability of Self-Supervised ViT "
        "Training\" and its figure of the first- and last-layer gradient magnitude): with a "
        "learned patch projection accuracy falls at high learning rates, with gradient "
        "spikes that appear in the first layer and reach the last layer a few iterations "
        "later (positive lag); with a frozen random projection training stays stable and "
        "gains from higher rates.",
        "",
        "Observed: " + " ".join(observed),
    ]
    plot = plot_results(config, results, rates)
    common.write_results(
        args, NAME, "MoCo v3 stability: learned vs frozen patch projection against the "
        "learning rate",
        ["projection", "lr (x recipe)", "final loss", "kNN accuracy (%)",
         "first-layer spikes (per seed)", "last-layer spikes", "loss jumps",
         "lag (steps, per seed)", "stable?"], rows, notes,
        {"config": config, "source": source, "raw_pixels_knn": raw,
         "learning_rates": rates, "summary": {k: {"highest_stable_lr": v["highest_stable_lr"],
                                                  "stable": {str(lr): s for lr, s in
                                                             v["stable"].items()}}
                                              for k, v in summary.items()},
         "runs": results}, plot)


def plot_results(config, results, rates):
    import numpy as np

    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    high = config["multipliers"][-1]
    for name, runs in results.items():
        means = [100 * np.mean([r["knn"] for r in runs if r["lr"] == lr]) for lr in rates]
        stds = [100 * np.std([r["knn"] for r in runs if r["lr"] == lr]) for lr in rates]
        line = axes[0].errorbar(rates, means, yerr=stds, marker="o", capsize=3, label=name)
        color = line[0].get_color()
        for run in runs:
            if run["multiplier"] != high:
                continue
            label = f"{name}, seed {run['seed']}"
            style = "-" if run["seed"] == 0 else ":"
            axes[1].plot(run["loss"], style, color=color, linewidth=1, label=label)
            axes[2].semilogy(run["first"], style, color=color, linewidth=1, label=label)
    axes[0].set(xscale="log", xlabel="learning rate", ylabel="kNN accuracy (%)",
                title="kNN vs learning rate (mean ± std over seeds)")
    axes[1].set(xlabel="step", ylabel="MoCo v3 loss", title=f"loss per step at {high:g}x")
    axes[2].set(xlabel="step", ylabel="first layer ‖g‖∞",
                title=f"first-layer gradient inf-norm at {high:g}x")
    for axis in axes:
        axis.legend(fontsize=7)
    return figure


if __name__ == "__main__":
    main()
