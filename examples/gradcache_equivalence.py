"""Naive gradient accumulation optimises a different objective, GradCache
the big-batch one: the same LayerNorm SimCLR trained (a) natively at batch
B, (b) with `GradCache` at batch B in k chunks of B/k, (c) with Keras'
`gradient_accumulation_steps=k` over k batches of B/k, with the same
optimizer steps, initial weights and pairs per update.

Each model is scored on the big-batch objective (the training InfoNCE on
fixed held-out batches of B pairs) during and after training, and by kNN.
On one seed, the gradient of (b) and of (c) on a fixed batch is compared
with (a)'s, in float32 and (for (b)) in a float64 encoder.

The encoder uses LayerNorm: its output for a sample does not depend on the
other samples of the batch, so chunking changes nothing in (b). (With
BatchNorm each chunk is normalised alone and GradCache differs from the
native batch by design: docs/design.md §6.)
"""

import functools
import math
import statistics
import time

import experiment_common as common

ARMS = ("native", "grad_cache", "accumulation")
HELD_OUT_SEED = 1234


def build(seed, config):
    import keras

    from keras_contrast import models

    keras.utils.set_random_seed(seed)
    size = config["image_size"]
    model = models.from_preset("simclr_resnet_tiny", input_shape=(size, size, 1),
                               width=config["width"], norm="layer", projection_norm="layer")
    model.build((None, 2, size, size, 1))  # the projection head too, drawn from `seed`
    return model


def build_float64(config):
    import keras

    keras.config.set_dtype_policy("float64")
    try:
        return build(0, config)
    finally:
        keras.config.set_dtype_policy("float32")


def gradients_of(model, views, loss, chunks=1):
    """Mean over `chunks` equal chunks of d loss(chunk) / d weights: one
    chunk is the native big-batch gradient, k chunks the gradient Keras'
    accumulation applies."""
    import tensorflow as tf

    total = None
    for chunk in tf.split(views, chunks):
        with tf.GradientTape() as tape:
            value = loss(None, model(chunk, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
    return [t / chunks for t in total]


def gradient_recorder(model, loss, chunks):
    """A `GradCache` around `model` whose optimizer stores the gradient it
    is handed instead of applying it; run eagerly (tracing the chunked step
    costs more than the few calls made here). Returns `gradients(views)`."""
    import keras

    from keras_contrast.training import GradCache

    class Recorder(keras.optimizers.Optimizer):
        def __init__(self):
            super().__init__(learning_rate=0.0)

        def build(self, variables):
            super().build(variables)
            self.recorded = [self.add_variable_from_reference(v, "recorded") for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            self.recorded[self._get_variable_index(variable)].assign(gradient)

    trainer = GradCache(model, num_chunks=chunks)
    trainer.compile(optimizer=Recorder(), loss=loss, run_eagerly=True)

    def gradients(views):
        trainer.train_on_batch(views)
        return [v.numpy() for v in trainer.optimizer.recorded]

    return gradients


def relative_difference(gradients, reference):
    """max |g − g_ref| / max |g_ref| over all entries of all weights."""
    import numpy as np

    top = max(float(np.max(np.abs(np.asarray(r)))) for r in reference)
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(r))))
               for g, r in zip(gradients, reference)) / top


def reset_optimizer(optimizer):
    """Back to a fresh optimizer's state (step 0, zero moments and
    accumulators) without rebuilding it, so the traced train step of the
    arm is reused by the next seed."""
    for variable in optimizer.variables:
        if variable.name != "learning_rate":
            variable.assign(variable.numpy() * 0)


def main():
    args = common.parse_args(__doc__.split("\n\n")[0])
    config = (dict(train=256, test=256, epochs=2, width=4, image_size=14, batch=64, chunks=2,
                   held_out_batches=2, seeds=2, every=4) if args.quick
              else dict(train=12800, test=2048, epochs=4, width=4, image_size=14, batch=512,
                        chunks=8, held_out_batches=4, seeds=2, every=20))
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_contrast import data
    from keras_contrast import losses
    from keras_contrast.data import augmentation
    from keras_contrast.training import GradCache

    seeds = list(range(args.seeds or config["seeds"]))
    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    batch, chunks, epochs = config["batch"], config["chunks"], config["epochs"]
    small = batch // chunks
    steps_per_epoch = len(x_train) // batch
    total_steps = epochs * steps_per_epoch
    size = config["image_size"]
    # Views: SimCLR crops of the 28x28 images resized to size x size (at 14,
    # a quarter of the pixels and about half the CPU time of a step: the
    # steps the budget allows double); kNN sees whole images resized alike.
    augment = functools.partial(augmentation.simclr_augment, output_size=size)
    bank = (common.resized(x_train, size), y_train)
    test = (common.resized(x_test, size), y_test)
    loss = losses.InfoNCE(0.2)

    # The big-batch objective: fixed batches of B pairs of held-out images.
    held_out_images = x_test[:config["held_out_batches"] * batch]
    held_out = list(data.two_view_dataset(held_out_images, batch, seed=HELD_OUT_SEED,
                                          augment=augment))

    def big_batch_loss(model):
        return float(np.mean([float(loss(None, model(views, training=False)))
                              for views in held_out]))

    # (c) sees in each update the same B pairs as (a) and (b): the batches of
    # B/k are consecutive slices of the batches of B (same keyed order and
    # augmentation).
    first_big = next(iter(data.two_view_dataset(x_train, batch, seed=0, augment=augment)))
    first_small = list(data.two_view_dataset(x_train, small, seed=0, augment=augment)
                       .take(chunks))
    same_pairs = bool(np.array_equal(first_big.numpy(), tf.concat(first_small, 0).numpy()))

    def optimizer(**kwargs):
        return keras.optimizers.AdamW(1e-3, weight_decay=1e-4, **kwargs)

    models, trainers = {}, {}
    for arm in ARMS:
        models[arm] = build(0, config)
        if arm == "grad_cache":
            trainers[arm] = GradCache(models[arm], num_chunks=chunks)
            trainers[arm].compile(optimizer=optimizer(), loss=loss)
        else:
            trainers[arm] = models[arm]
            trainers[arm].compile(optimizer=optimizer(**(
                {"gradient_accumulation_steps": chunks} if arm == "accumulation" else {})),
                loss=loss)
    initial = {seed: build(seed, config).get_weights() for seed in seeds}

    # Gradient check (first seed, on the weights of (a) at a few steps), on
    # copies so the trained models' state stays untouched.
    probe, probe64 = build(0, config), build_float64(config)
    cached_gradients = gradient_recorder(probe, loss, chunks)
    cached_gradients64 = gradient_recorder(probe64, loss, chunks)
    check_views = held_out[0]
    check_views64 = tf.cast(check_views, tf.float64)
    check_steps = sorted({0, total_steps // 2, total_steps})
    differences = []

    def gradient_check(step, weights):
        probe.set_weights(weights)
        probe64.set_weights([w.astype("float64") for w in weights])
        reference = gradients_of(probe, check_views, loss)
        reference64 = gradients_of(probe64, check_views64, loss)
        differences.append({
            "step": step,
            "grad_cache": relative_difference(cached_gradients(check_views), reference),
            "accumulation": relative_difference(
                gradients_of(probe, check_views, loss, chunks), reference),
            "grad_cache_float64": relative_difference(cached_gradients64(check_views64),
                                                      reference64)})
        print(f"gradient check at step {step}: {differences[-1]}", flush=True)

    class Monitor(keras.callbacks.Callback):
        """The big-batch objective every `every` optimizer steps (and the
        gradient check when asked), keyed by optimizer steps, not batches."""

        def __init__(self, model, optimizer, check):
            super().__init__()
            self.watched, self.optimizer, self.check = model, optimizer, check
            self.curve = []

        def record(self):
            step = int(self.optimizer.iterations)  # updates, also under accumulation
            if self.curve and self.curve[-1][0] == step:
                return
            if step % config["every"] == 0 or step == total_steps:
                self.curve.append((step, big_batch_loss(self.watched)))
            if self.check and step in check_steps:
                gradient_check(step, self.watched.get_weights())

        def on_train_begin(self, logs=None):
            self.record()

        def on_train_batch_end(self, batch_index, logs=None):
            self.record()

    runs = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in ARMS:
            model, trainer = models[arm], trainers[arm]
            started = time.time()
            model.set_weights(initial[seed])
            reset_optimizer(trainer.optimizer)
            monitor = Monitor(model, trainer.optimizer,
                              check=arm == "native" and seed == seeds[0])
            per_update = small if arm == "accumulation" else batch
            factor = chunks if arm == "accumulation" else 1
            history = trainer.fit(
                data.two_view_dataset(x_train, per_update, seed=seed, num_epochs=epochs,
                                      augment=augment),
                epochs=epochs, steps_per_epoch=factor * steps_per_epoch, verbose=0,
                callbacks=[monitor])
            run = {"seed": seed, "optimizer_steps": int(trainer.optimizer.iterations),
                   "training_loss": history.history["loss"],
                   "big_batch_curve": monitor.curve,
                   "big_batch_loss": monitor.curve[-1][1],
                   "knn": common.knn(model.encoder, bank, test)}
            run["seconds"] = time.time() - started  # training, evaluations and kNN
            if arm == "grad_cache":
                run["weight_difference_to_native"] = relative_difference(
                    model.get_weights(), runs["native"][-1]["weights"])
            if arm == "native":
                run["weights"] = model.get_weights()
            runs[arm].append(run)
            print(f"{arm}, seed {seed}: big-batch loss {run['big_batch_loss']:.4f}, "
                  f"kNN {run['knn']:.4f}, {run['optimizer_steps']} optimizer steps", flush=True)
    for run in runs["native"]:
        del run["weights"]
    raw = common.knn(None, bank, test)

    def values(arm, key):
        return [run[key] for run in runs[arm]]

    def spread(arm, key):
        """The larger seed-to-seed std of `arm` and native; None with one seed."""
        return common.seed_spread(values("native", key), values(arm, key))

    def paired(arm, key):
        """Mean over seeds of (arm − native) on the same seed."""
        return statistics.mean(a - n for a, n in zip(values(arm, key), values("native", key)))

    labels = {"native": f"(a) native, batch {batch}",
              "grad_cache": f"(b) GradCache, {chunks} chunks of {small}",
              "accumulation": f"(c) gradient_accumulation_steps={chunks}, batch {small}"}
    short = {"native": "(a) native", "grad_cache": "(b) GradCache",
             "accumulation": "(c) accumulation"}
    colors = {"native": "C0", "grad_cache": "C1", "accumulation": "C2"}
    steps_label = "/".join(str(d["step"]) for d in differences)

    def per_check(key):
        return " / ".join(f"{d[key]:.1e}" for d in differences)

    rows = []
    for arm in ARMS:
        difference = ("0 (reference)" if arm == "native" else
                      f"{paired(arm, 'big_batch_loss'):+.4f}")
        rows.append([labels[arm], str(runs[arm][0]["optimizer_steps"]),
                     common.mean_std(values(arm, "big_batch_loss"), digits=4, scale=1.0),
                     difference, common.mean_std(values(arm, "knn")),
                     {"native": "0 (reference)", "grad_cache": per_check("grad_cache"),
                      "accumulation": per_check("accumulation")}[arm],
                     {"native": "0 (reference)", "grad_cache": per_check("grad_cache_float64"),
                      "accumulation": "–"}[arm]])

    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for arm in ARMS:
        curves = np.array([[value for _, value in run["big_batch_curve"]] for run in runs[arm]])
        steps = [step for step, _ in runs[arm][0]["big_batch_curve"]]
        axes[0].plot(steps, curves.mean(0), marker="o", markersize=3, label=labels[arm],
                     color=colors[arm])
        if len(seeds) > 1:
            axes[0].fill_between(steps, curves.min(0), curves.max(0), alpha=0.2,
                                 color=colors[arm])
    axes[0].set(xlabel="optimizer step", ylabel=f"InfoNCE on held-out batches of {batch}",
                title=f"big-batch objective (mean, band: range over {len(seeds)} seeds)")
    axes[0].legend(fontsize=7)
    for key, label, color, style in (
            ("grad_cache", "(b) GradCache, float32", "C1", "-"),
            ("grad_cache_float64", "(b) GradCache, float64 encoder", "C1", "--"),
            ("accumulation", "(c) accumulation", "C2", "-")):
        axes[1].semilogy([d["step"] for d in differences],
                         [max(d[key], 1e-16) for d in differences], marker="o", label=label,
                         color=color, linestyle=style)
    axes[1].set(xlabel="optimizer step of (a)", ylabel="max |g − g_a| / max |g_a|",
                title=f"gradient difference to native (seed {seeds[0]})")
    axes[1].legend(fontsize=7)
    for arm in ARMS:
        knn = [100 * v for v in values(arm, "knn")]
        axes[2].bar(short[arm], statistics.mean(knn), color=colors[arm],
                    yerr=(max(knn) - min(knn)) / 2 if len(knn) > 1 else None, capsize=4)
    axes[2].tick_params(axis="x", labelsize=8)
    axes[2].axhline(100 * raw, color="gray", linestyle="--", label="raw pixels")
    axes[2].set(ylabel="kNN accuracy (%)", title=f"kNN (bars: seed range, {len(seeds)} seeds)")
    axes[2].legend(fontsize=7)

    worst = {key: max(d[key] for d in differences)
             for key in ("grad_cache", "accumulation", "grad_cache_float64")}
    accumulation_gap = paired("accumulation", "big_batch_loss")
    accumulation_spread = spread("accumulation", "big_batch_loss")
    if accumulation_gap > 0 and (accumulation_spread is None
                                 or accumulation_gap > accumulation_spread):
        accumulation_verdict = "higher"
    elif accumulation_gap > 0:
        accumulation_verdict = "higher, but not by more than the seed spread"
    else:
        accumulation_verdict = "not higher"
    weight_gaps = values("grad_cache", "weight_difference_to_native")
    uniform = math.log(2 * batch - 1)
    seed_minutes = sum(runs[arm][0]["seconds"] for arm in ARMS) / 60
    notes = [
        f"Data: {source}, {config['train']} training images (also the kNN bank), "
        f"{config['test']} test images (kNN queries); the big-batch objective uses "
        f"{config['held_out_batches']} fixed batches of {batch} pairs of the first "
        f"{len(held_out_images)} test images (two SimCLR views, seed {HELD_OUT_SEED}), "
        f"never trained on. Views: SimCLR crops resized to {size}x{size} (kNN: whole images "
        f"resized to {size}x{size}). Model: SimCLR ResNet-18 of width {config['width']} with "
        f"LayerNorm in backbone and projection, InfoNCE τ = 0.2, AdamW 1e-3 (weight decay "
        f"1e-4), {epochs} epochs = {total_steps} optimizer steps in every arm; the three arms "
        f"of a seed start from the same weights and see the same {batch} pairs in every update "
        f"(checked: {same_pairs}). {len(seeds)} seeds ({seeds}): one seed of all three arms is "
        f"the unit repeated; it took {seed_minutes:.1f} min here (first seed, tracing "
        "included). Spread: population std over "
        "seeds; a difference to (a) is the mean over seeds of the per-seed difference, judged "
        "against the larger std of the two arms. kNN: cosine, k = 200, τ = 0.1; raw pixels "
        f"{100 * raw:.1f} %. Gradient check: on held-out batch 1, at the weights of (a) "
        f"(seed {seeds[0]}) after {steps_label} steps, max |g − g_a| / max |g_a|.",
        "",
        "Expected (GradCache: Gao et al. 2021, \"Scaling Deep Contrastive Learning Batch Size "
        "under Memory Limited Setup\", arXiv 2101.06983; docs/design.md §6): GradCache "
        "computes the gradient of the loss of the whole batch of "
        f"{batch}, so its gradient on a fixed batch equals native's (to 1e-5 relative in a "
        "float64 encoder) and its big-batch held-out loss differs from native's by less than "
        "the seed spread. Keras' accumulation averages the gradients of "
        f"{chunks} separate losses of {small} pairs (each with {2 * small - 2} negatives "
        f"instead of {2 * batch - 2}): a different objective, so its loss on the big-batch "
        "objective is higher.",
        "",
        f"Observed: GradCache's gradient differs from native's by at most "
        f"{worst['grad_cache']:.1e} in float32 and {worst['grad_cache_float64']:.1e} with the "
        "same weights in a float64 encoder, "
        + ("within" if worst["grad_cache_float64"] < 1e-5 else "NOT within")
        + f" 1e-5; the accumulated gradient differs by "
        f"{min(d['accumulation'] for d in differences):.1e} to {worst['accumulation']:.1e}. "
        f"Big-batch held-out loss after {total_steps} steps (ln(2·{batch} − 1) = "
        f"{uniform:.3f} for equal similarities): (a) "
        f"{common.mean_std(values('native', 'big_batch_loss'), digits=4, scale=1.0)}, (b) "
        f"{common.mean_std(values('grad_cache', 'big_batch_loss'), digits=4, scale=1.0)}, (c) "
        f"{common.mean_std(values('accumulation', 'big_batch_loss'), digits=4, scale=1.0)}. "
        "(b) − (a): "
        + common.judge(paired("grad_cache", "big_batch_loss"),
                       spread("grad_cache", "big_batch_loss"), digits=4)
        + "; (c) − (a): "
        + common.judge(accumulation_gap, accumulation_spread, digits=4)
        + f": accumulation's big-batch loss is {accumulation_verdict}. kNN accuracy: (b) − (a) "
        + common.judge(paired("grad_cache", "knn"), spread("grad_cache", "knn"),
                       scale=100.0, digits=1, unit=" points")
        + "; (c) − (a) "
        + common.judge(paired("accumulation", "knn"), spread("accumulation", "knn"),
                       scale=100.0, digits=1, unit=" points")
        + f". (b)'s final weights are within {max(weight_gaps):.1e} (relative) of (a)'s on "
        "the same seed (float32 rounding of chunked vs whole-batch kernels, grown along the "
        "trajectory).",
    ]
    common.write_results(
        args, "gradcache_equivalence",
        f"GradCache vs native big batch vs gradient accumulation ({len(seeds)} seeds)",
        ["training", "optimizer steps",
         f"big-batch held-out loss ({len(seeds)} seeds)", "(x) − (a), mean of per-seed",
         f"kNN accuracy (%) ({len(seeds)} seeds)",
         f"gradient difference to (a), float32, after {steps_label} steps (seed {seeds[0]})",
         "float64 encoder"], rows, notes,
        {"config": config, "source": source, "seeds": seeds, "total_steps": total_steps,
         "same_pairs_per_update": same_pairs, "differences": differences, "runs": runs,
         "raw_pixels_knn": raw}, figure)


if __name__ == "__main__":
    main()
