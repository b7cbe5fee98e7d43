"""Precise BN where EMA statistics are stale (docs/design.md §4): a
supervised ResNet-18 (width 8, CIFAR stem, BN) trained at a high constant
learning rate, then a cosine decay, evaluated on the test set during
training with four sets of BN statistics for the same weights: the EMA at
momentum 0.99 and at 0.999, Precise BN over N batches, and the exact
population statistics of all the training images, layer by layer; then a
SimCLR encoder of the same architecture through a linear probe with the
same four.

The BN moving statistics never enter a training step (training mode
normalises with the batch's own statistics), so the weights do not depend
on the momentum: one training with BN momentum 0, whose moving statistics
are then the last batch's, gives both EMAs exactly, by updating
`ema ← m·ema + (1 − m)·batch statistics` after every step for m = 0.99
and 0.999 (from Keras' initial values, mean 0 and variance 1). A short run
at the start checks this against BN layers that keep the momentum
themselves. Evaluations run on a separate copy of the model, so they never
touch the training run.
"""

import functools
import time

import experiment_common as common

MOMENTA = (0.99, 0.999)
EMA = {m: f"EMA, momentum {m}" for m in MOMENTA}
PRECISE = "Precise BN"
EXACT = "exact population"
KINDS = (*EMA.values(), PRECISE, EXACT)
CLASSES = 10


def config_for(quick):
    if quick:
        return dict(train=256, test=128, image_size=14, width=4, batch=32, epochs=2,
                    constant_epochs=1, early_every=8, lr=0.2, weight_decay=5e-4,
                    precise_batches=4, seeds=1, check_steps=0, simclr_steps=4,
                    simclr_batch=32, simclr_lr=2e-3, probe_train=128, probe_epochs=3)
    # Calibrated on 2 busy cores (load ~3): a step 0.17 s, Precise BN 10 s (mostly
    # tracing), the exact statistics of 60,000 images ~80 s, 5,000 test images 1.2 s;
    # ~13 min per seed at those rates.
    return dict(train=60000, test=2000, image_size=14, width=8, batch=128, epochs=3,
                constant_epochs=2, early_every=78, lr=0.2, weight_decay=5e-4,
                precise_batches=50, seeds=2, check_steps=20, simclr_steps=200,
                simclr_batch=128, simclr_lr=2e-3, probe_train=5000, probe_epochs=20)


def schedule(config, steps_per_epoch):
    """The evaluation steps (every `early_every` steps of the first 2
    epochs, then every epoch end) and the two where the exact statistics
    are computed too: the end of epoch 2 and the last step."""
    early_end = 2 * steps_per_epoch
    total = config["epochs"] * steps_per_epoch
    early = list(range(config["early_every"], early_end + 1, config["early_every"]))
    ends = list(range(steps_per_epoch, total + 1, steps_per_epoch))
    steps = sorted(set(early) | set(ends))
    return steps, sorted({early_end, total})


def bn_layers(model):
    import keras

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def backbone(config, norm="batch"):
    """ResNet-18 with BN momentum 0 (the moving statistics are each step's
    batch statistics), unless `norm` is a callable making the BN layers."""
    from keras_contrast import models

    size = config["image_size"]
    return models.ResNetBackbone(
        18, stem="cifar", norm=norm, norm_kwargs={"momentum": 0.0} if norm == "batch" else {},
        width=config["width"], input_shape=(size, size, 1))


def classifier(config, norm="batch"):
    """`backbone` + a linear layer."""
    import keras

    size = config["image_size"]
    encoder = backbone(config, norm)
    inputs = keras.Input((size, size, 1), name="images")
    outputs = keras.layers.Dense(CLASSES, name="classifier")(encoder(inputs))
    return keras.Model(inputs, outputs, name="classifier_model"), encoder


class EMATracker:
    """The EMAs of the batch statistics of `layers` (BN layers with momentum
    0, whose moving statistics hold the last batch's), in float64, one per
    momentum."""

    def __init__(self, layers, momenta=MOMENTA):
        import numpy as np

        self.layers = layers
        self.ema = {m: [(np.zeros(layer.moving_mean.shape), np.ones(layer.moving_variance.shape))
                        for layer in layers] for m in momenta}

    def update(self):
        import numpy as np

        batch = [(np.asarray(layer.moving_mean, np.float64),
                  np.asarray(layer.moving_variance, np.float64)) for layer in self.layers]
        for m, statistics in self.ema.items():
            self.ema[m] = [(m * mean + (1 - m) * b_mean, m * var + (1 - m) * b_var)
                           for (mean, var), (b_mean, b_var) in zip(statistics, batch)]

    def assign(self, momentum, layers):
        for layer, (mean, var) in zip(layers, self.ema[momentum]):
            layer.moving_mean.assign(mean.astype("float32"))
            layer.moving_variance.assign(var.astype("float32"))


def segments(encoder):
    """The ResNet cut after the stem and after every block: functional
    models sharing `encoder`'s layers, each with its BN layers."""
    import keras
    import tensorflow as tf

    names = ["stem_relu"] + [f"stage{s}_block{b}_out" for s in range(1, 5) for b in (1, 2)]
    ends = [encoder.get_layer(name).output for name in names]
    parts = []
    for start, end in zip([encoder.input] + ends[:-1], ends):
        part = keras.Model(start, end)
        parts.append((part, tf.function(lambda x, part=part: part(x, training=False),
                                        reduce_retracing=True)))
    return parts


def exact_population(parts, images, batch=2000):
    """Sets every BN layer's moving statistics to the population statistics
    of its inputs over all `images`, with every earlier BN layer in
    inference mode with its own new statistics: `precise_batch_norm(...,
    order="layer_by_layer")` block by block, on each block's inputs computed
    (in inference mode) once and kept, instead of one pass of the whole
    network per BN layer (the same statistics, ~6x cheaper)."""
    from keras_contrast import normalization

    x = [images[i:i + batch] for i in range(0, len(images), batch)]
    for index, (part, forward) in enumerate(parts):
        normalization.precise_batch_norm(part, x, num_batches=len(x), order="layer_by_layer")
        if index + 1 < len(parts):
            x = [forward(b).numpy() for b in x]


def accuracy_fn(model):
    import tensorflow as tf

    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1),
                          reduce_retracing=True)

    def accuracy(x, y, batch=1000):
        import numpy as np

        correct = sum(int(np.sum(predict(x[i:i + batch]).numpy() == y[i:i + batch]))
                      for i in range(0, len(x), batch))
        return correct / len(x)

    return accuracy


def precise_dataset(x, config, seed):
    import tensorflow as tf

    # Random training batches of the training batch size, new ones each call.
    return tf.data.Dataset.from_tensor_slices(x).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True).batch(config["batch"])


def check_ema(seed, x_train, y_train, config):
    """Trains `check_steps` steps twice from the same initial weights and
    batches: with BN momentum 0 and the tracker, and with BN layers keeping
    the EMA themselves (momenta 0.99 and 0.999 alternating over the
    layers); returns, per momentum, the largest difference of the moving
    statistics relative to their largest magnitude in that layer."""
    import itertools

    import keras
    import numpy as np

    from keras_contrast import layers

    def alternating():
        momenta = itertools.cycle(MOMENTA)
        return lambda name=None, **kwargs: layers.BatchNormalization(
            name=name, **{**kwargs, "momentum": next(momenta)})

    def run(norm):
        keras.utils.set_random_seed(seed)
        model, encoder = classifier(config, norm)
        compile_classifier(model, config, steps_per_epoch=len(x_train) // config["batch"])
        tracker = EMATracker(bn_layers(encoder))
        callback = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: tracker.update())
        model.fit(supervised_dataset(x_train, y_train, config, seed), epochs=1,
                  steps_per_epoch=config["check_steps"], verbose=0, callbacks=[callback])
        return bn_layers(encoder), tracker

    _, tracker = run("batch")
    reference, _ = run(alternating())
    gaps = {str(m): 0.0 for m in MOMENTA}
    for index, layer in enumerate(reference):
        m = layer.momentum
        mean, var = tracker.ema[m][index]
        gap = max(np.max(np.abs(np.asarray(layer.moving_mean) - mean)) / np.max(np.abs(mean)),
                  np.max(np.abs(np.asarray(layer.moving_variance) - var)) / np.max(var))
        gaps[str(m)] = max(gaps[str(m)], float(gap))
    return gaps


def compile_classifier(model, config, steps_per_epoch):
    import keras

    constant = config["constant_epochs"] * steps_per_epoch
    total = config["epochs"] * steps_per_epoch
    # Constant for `constant` steps (the "warm-up" from lr to lr), then cosine to 0.
    lr = keras.optimizers.schedules.CosineDecay(
        config["lr"], decay_steps=total - constant, warmup_target=config["lr"],
        warmup_steps=constant)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                                 weight_decay=config["weight_decay"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def supervised_dataset(x, y, config, seed):
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .batch(config["batch"], drop_remainder=True).repeat())


class Evaluations:
    """The copy of the model that is evaluated, with each kind of statistics
    set on it in turn."""

    def __init__(self, config, make):
        self.model, self.encoder = make()
        self.layers = bn_layers(self.encoder)
        self.parts = segments(self.encoder)
        self.config = config

    def load(self, source):
        self.model.set_weights(source.get_weights())

    def statistics(self, tracker, x_precise_dataset, x_train, kinds, score):
        """`{kind: (score, seconds)}` for the weights loaded last."""
        from keras_contrast import normalization

        results = {}
        for m in MOMENTA:
            started = time.time()
            tracker.assign(m, self.layers)
            results[EMA[m]] = (score(), time.time() - started)
        if PRECISE in kinds:
            started = time.time()
            normalization.precise_batch_norm(self.encoder, x_precise_dataset,
                                             num_batches=self.config["precise_batches"])
            results[PRECISE] = (score(), time.time() - started)
        if EXACT in kinds:
            started = time.time()
            exact_population(self.parts, x_train)
            results[EXACT] = (score(), time.time() - started)
        return results


def train_supervised(seed, data, config):
    import keras

    (x_train, y_train), (x_test, y_test) = data
    steps_per_epoch = len(x_train) // config["batch"]
    eval_steps, exact_steps = schedule(config, steps_per_epoch)
    keras.utils.set_random_seed(seed)
    model, encoder = classifier(config)
    compile_classifier(model, config, steps_per_epoch)
    tracker = EMATracker(bn_layers(encoder))
    evaluations = Evaluations(config, lambda: classifier(config))
    accuracy = accuracy_fn(evaluations.model)
    score = functools.partial(accuracy, x_test, y_test)
    precise_data = precise_dataset(x_train, config, seed)
    curves = {kind: [] for kind in KINDS}
    seconds = {kind: 0.0 for kind in KINDS}
    clock = {"train": 0.0, "last": None, "step": 0}

    class Callback(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            clock["last"] = time.time()

        def on_train_batch_end(self, batch, logs=None):
            tracker.update()
            clock["train"] += time.time() - clock["last"]
            clock["step"] += 1
            step = clock["step"]
            if step not in eval_steps:
                return
            evaluations.load(model)
            kinds = (PRECISE, EXACT) if step in exact_steps else (PRECISE,)
            for kind, (value, spent) in evaluations.statistics(
                    tracker, precise_data, x_train, kinds, score).items():
                curves[kind].append((step, value))
                seconds[kind] += spent
            print(f"seed {seed} step {step}: "
                  + ", ".join(f"{k} {v[-1][1]:.4f}" for k, v in curves.items()
                              if v and v[-1][0] == step), flush=True)

    history = model.fit(supervised_dataset(x_train, y_train, config, seed),
                        epochs=config["epochs"], steps_per_epoch=steps_per_epoch, verbose=0,
                        callbacks=[Callback()])
    return {"seed": seed, "curves": curves, "loss": history.history["loss"],
            "train_seconds": clock["train"], "eval_seconds": seconds}


def train_simclr(seed, x_train, probe_train, test, config):
    import keras

    from keras_contrast import data
    from keras_contrast import evaluation
    from keras_contrast import losses
    from keras_contrast import models
    from keras_contrast.data import augmentation

    size = config["image_size"]
    keras.utils.set_random_seed(seed)
    model = models.SimCLR(backbone(config), projection_dims=(128, 64), projection_norm="batch")
    model.compile(optimizer=keras.optimizers.AdamW(config["simclr_lr"], weight_decay=1e-4),
                  loss=losses.DCLW(0.2))
    tracker = EMATracker(bn_layers(model.encoder))
    batch = config["simclr_batch"]
    passes = -(-config["simclr_steps"] * batch // len(x_train))
    augment = functools.partial(augmentation.simclr_augment, output_size=size)
    views = data.two_view_dataset(x_train, batch, seed=seed, num_epochs=passes, augment=augment)
    started = time.time()
    model.fit(views, epochs=1, steps_per_epoch=config["simclr_steps"], verbose=0, shuffle=False,
              callbacks=[keras.callbacks.LambdaCallback(
                  on_train_batch_end=lambda batch, logs: tracker.update())])
    train_seconds = time.time() - started

    def make():
        encoder = backbone(config)
        return encoder, encoder

    evaluations = Evaluations(config, make)
    evaluations.model.set_weights(model.encoder.get_weights())
    # Whole (not cropped) images at the views' size, as the probe sees them.
    x_whole = common.resized(x_train, size)
    probe = functools.partial(evaluation.linear_probe, evaluations.encoder, probe_train, test,
                              epochs=config["probe_epochs"], seed=seed)
    results = evaluations.statistics(tracker, precise_dataset(x_whole, config, seed), x_whole,
                                     (PRECISE, EXACT), lambda: probe()[0])
    return {"seed": seed, "probe": {k: v for k, (v, _) in results.items()},
            "eval_seconds": {k: s for k, (_, s) in results.items()},
            "train_seconds": train_seconds}


def main():
    args = common.parse_args(__doc__.split("\n\n")[0])
    config = config_for(args.quick)
    seeds = list(range(args.seeds or config["seeds"]))
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    size = config["image_size"]
    x_small, x_test_small = common.resized(x_train, size), common.resized(x_test, size)
    previous = common.previous_runs(args, "precise_bn", config)
    ema_check = None
    if config["check_steps"]:  # not in --quick: two more traces of a training step
        started = time.time()
        ema_check = check_ema(0, x_small, y_train, config)
        print(f"EMA check (largest relative difference): {ema_check}, "
              f"{time.time() - started:.0f} s", flush=True)
    runs = {"supervised": [], "simclr": []}
    data = ((x_small, y_train), (x_test_small, y_test))
    n_probe = config["probe_train"]
    probe_train = (x_small[:n_probe], y_train[:n_probe])
    for seed in seeds:
        done = [r for r in previous.get("supervised", []) if r["seed"] == seed]
        runs["supervised"].append(done[0] if done else train_supervised(seed, data, config))
    for seed in seeds:
        done = [r for r in previous.get("simclr", []) if r["seed"] == seed]
        run = done[0] if done else train_simclr(seed, x_train, probe_train,
                                                (x_test_small, y_test), config)
        print(f"SimCLR seed {seed}: {run['probe']}", flush=True)
        runs["simclr"].append(run)
    write(args, config, source, seeds, runs, ema_check)


def write(args, config, source, seeds, runs, ema_check):
    import numpy as np

    steps_per_epoch = config["train"] // config["batch"]
    eval_steps, exact_steps = schedule(config, steps_per_epoch)
    early, epoch2, final = eval_steps[1], 2 * steps_per_epoch, eval_steps[-1]
    points = (("early", early), ("end of epoch 2", epoch2), ("final", final))

    def values(kind, step):
        return [dict(r["curves"][kind])[step] for r in runs["supervised"]]

    def probe(kind):
        return [r["probe"][kind] for r in runs["simclr"]]

    rows = [["supervised, test accuracy", kind]
            + [common.mean_std(values(kind, step)) if kind != EXACT or step in exact_steps
               else "—" for _, step in points] for kind in KINDS]
    rows += [["SimCLR, linear probe", kind, "—", "—", common.mean_std(probe(kind))]
             for kind in KINDS]

    def judged(x, y):
        return common.judge(float(np.mean(x) - np.mean(y)), common.seed_spread(x, y),
                            scale=100, digits=1, unit=" points")

    def observed_at(label, step):
        precise = values(PRECISE, step)
        parts = [f"Precise BN − {EMA[m]}: {judged(precise, values(EMA[m], step))}"
                 for m in MOMENTA]
        if step in exact_steps:
            parts.append(f"exact − Precise BN: {judged(values(EXACT, step), precise)}")
        return f"{label} (step {step}): " + "; ".join(parts) + "."

    def gap(m, step):
        return float(np.mean(values(PRECISE, step)) - np.mean(values(EMA[m], step)))

    trend = []
    for m in MOMENTA:
        first, last = gap(m, early), gap(m, final)
        direction = ("narrower" if abs(last) < abs(first) else
                     "wider" if abs(last) > abs(first) else "unchanged")
        trend.append(f"at momentum {m} the mean gap Precise BN − EMA goes from "
                     f"{100 * first:+.1f} points at step {early} to {100 * last:+.1f} at step "
                     f"{final} ({direction})")
    probe_notes = [f"Precise BN − {EMA[m]}: {judged(probe(PRECISE), probe(EMA[m]))}"
                   for m in MOMENTA]
    probe_notes.append(f"exact − Precise BN: {judged(probe(EXACT), probe(PRECISE))}")
    init_weight = ", ".join(f"{m}^{step} = {m ** step:.2f}" for m in MOMENTA
                            for _, step in points[:1])
    train_minutes = ", ".join(f"{r['train_seconds'] / 60:.1f}" for r in runs["supervised"])
    simclr_minutes = ", ".join(f"{r['train_seconds'] / 60:.1f}" for r in runs["simclr"])
    exact_seconds = np.mean([r["eval_seconds"][EXACT] / len(exact_steps)
                             for r in runs["supervised"]])
    notes = [
        f"Data: {source}, {config['train']} training images and {config['test']} test images, "
        f"resized from 28x28 to {config['image_size']}x{config['image_size']} by area "
        "averaging (at 28x28 a training step of this ResNet costs ~10x more on 2 cores). "
        f"Supervised: ResNet-18 of width {config['width']} with the CIFAR stem and BN, a "
        f"linear classifier, SGD with Nesterov momentum 0.9, learning rate {config['lr']} "
        f"constant for {config['constant_epochs']} epochs then cosine to 0 at epoch "
        f"{config['epochs']}, weight decay {config['weight_decay']}, batch {config['batch']} "
        f"({steps_per_epoch} steps per epoch), no augmentation; seeds {seeds} "
        f"({len(seeds)} per row; training {train_minutes} min per seed). Test accuracy at "
        f"steps {eval_steps}. BN statistics, all for the same weights on a copy of the model: "
        f"the EMAs at momentum {MOMENTA[0]} and {MOMENTA[1]} (horizons ~100 and ~1,000 steps) "
        "kept beside one training with BN momentum 0 (the weights do not depend on the "
        "momentum; " + (f"checked over the first {config['check_steps']} steps against BN "
                        "layers keeping the EMA themselves: largest relative difference "
                        + ", ".join(f"{v:.1e} at {m}" for m, v in ema_check.items())
                        if ema_check else "not checked in --quick")
        + f"); Precise BN: `precise_batch_norm` one sweep over N = "
        f"{config['precise_batches']} random batches of {config['batch']} training images; "
        "exact population: every BN layer's statistics over all "
        f"{config['train']} training images with the earlier layers in inference mode with "
        "their new statistics (`precise_batch_norm(order=\"layer_by_layer\")` block by block "
        f"on the kept inputs of each block), at steps {exact_steps} only (the end of "
        f"epoch 2 and the last step; {exact_seconds:.0f} s each). At "
        f"step {early} the EMAs still weigh Keras' initial statistics (mean 0, variance 1) "
        f"by {init_weight}. Kept short for the 2-core budget: {config['epochs']} epochs, "
        "the exact statistics at two points, a short SimCLR run"
        + ".",
        "",
        f"SimCLR: the same backbone (BN momentum 0 and the two EMAs kept beside it), "
        f"projection (128, 64) with BN, DCLW τ = 0.2, AdamW {config['simclr_lr']}, batch "
        f"{config['simclr_batch']} two-view crops of the 28x28 images resized to "
        f"{config['image_size']}x{config['image_size']}, {config['simclr_steps']} steps "
        f"(training {simclr_minutes} min per seed); linear probe "
        "(`keras_contrast.evaluation.linear_probe`, "
        f"{config['probe_epochs']} epochs) trained on the first {config['probe_train']} "
        f"training images and scored on the {config['test']} test images, whole images. "
        "Precise BN and the exact population use un-augmented training images (what the "
        "probe encodes), the EMAs augmented views.",
        "",
        "Expected (docs/design.md §4, \"false overfitting\"): the EMA with momentum m averages "
        "about 1/(1 − m) steps of statistics from weights that no longer exist, so while the "
        "weights move fast (high constant learning rate) the EMA accuracy is well below "
        "Precise BN's, more so at momentum 0.999 than 0.99, and the gap closes as training "
        "settles (cosine decay); Precise BN ≈ the exact population statistics.",
        "",
        "Observed (differences of the means over seeds, judged against the larger seed "
        "std of the two arms compared): " + " ".join(observed_at(label, step)
                                                     for label, step in points),
        "Over training, " + "; ".join(trend) + ".",
        "SimCLR linear probe: " + "; ".join(probe_notes) + ".",
    ]

    plt = common.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    for kind in KINDS:
        steps = [s for s, _ in runs["supervised"][0]["curves"][kind]]
        mean = np.mean([[v for _, v in r["curves"][kind]] for r in runs["supervised"]], axis=0)
        axes[0].plot(steps, 100 * mean, marker="o" if kind == EXACT else ".", label=kind,
                     linestyle=":" if kind == EXACT else "-")
    for step in range(steps_per_epoch, final + 1, steps_per_epoch):
        axes[0].axvline(step, color="gray", linewidth=0.5)
    axes[0].set(xlabel="step", ylabel="test accuracy (%)",
                title=f"supervised ResNet-18 w{config['width']} (mean over {len(seeds)} seeds)")
    axes[0].legend(fontsize=8)
    means = [100 * np.mean(probe(kind)) for kind in KINDS]
    axes[1].bar(range(len(KINDS)), means, color=[f"C{i}" for i in range(len(KINDS))])
    labels = [k.replace("EMA, momentum ", "EMA\n").replace(" population", "\npopulation")
              for k in KINDS]
    axes[1].set_xticks(range(len(KINDS)), labels, fontsize=7)
    axes[1].set(ylabel="linear probe accuracy (%)",
                ylim=(max(0, min(means) - 10), min(100, max(means) + 5)),
                title=f"SimCLR, {config['simclr_steps']} steps")
    common.write_results(
        args, "precise_bn", "Precise BN where EMA statistics are stale",
        ["model, metric", "BN statistics at evaluation", f"early (step {early}) (%)",
         f"end of epoch 2 (step {epoch2}) (%)", "final (%)"], rows, notes,
        {"config": config, "source": source, "seeds": seeds, "eval_steps": eval_steps,
         "exact_steps": exact_steps, "ema_check": ema_check, "runs": runs}, figure)


if __name__ == "__main__":
    main()
