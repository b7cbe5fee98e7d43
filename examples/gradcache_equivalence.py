"""GradCache is the big batch, gradient accumulation is not: the same model
trained (a) natively at batch B, (b) with `GradCache` at batch B in k chunks,
(c) with Keras' `gradient_accumulation_steps=k` over k batches of B/k.

Per-step gradient difference to (a) at several points of (a)'s training, and
kNN accuracy after training. Expected: (b) == (a) up to float error; (c)
differs (each small batch only sees its own negatives) and is worse.

The encoder uses LayerNorm: its output for a sample does not depend on the
other samples of the batch, so chunking changes nothing in (b). (With
BatchNorm, chunk statistics differ from big-batch statistics; see README,
"Gradient cache".)
"""

import experiment_common as common


def build(seed, config, x_shape):
    import keras

    from keras_contrast import models

    keras.utils.set_random_seed(seed)
    return models.from_preset("simclr_resnet_tiny", input_shape=x_shape, width=config["width"],
                              norm="layer", projection_norm="layer")


def gradients_of(model, views, loss, chunks=1):
    """Mean over `chunks` equal chunks of d loss(chunk) / d weights; one
    chunk is the native big-batch gradient."""
    import tensorflow as tf

    total = None
    for chunk in tf.split(views, chunks):
        with tf.GradientTape() as tape:
            value = loss(None, model(chunk, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
    return [t / chunks for t in total]


def grad_cache_gradients(model, views, loss, chunks):
    """The gradient GradCache's train step hands to its optimizer."""
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
    trainer.compile(optimizer=Recorder(), loss=loss)
    trainer.train_on_batch(views)
    return [v.numpy() for v in trainer.optimizer.recorded]


def float64_copy(model, config, x_shape):
    """The same network in float64 with `model`'s weights: rounding then
    cannot explain a gradient difference of more than ~1e-12."""
    import keras

    keras.config.set_dtype_policy("float64")
    try:
        copy = build(0, config, x_shape)
        copy.build((None, 2) + tuple(x_shape))
    finally:
        keras.config.set_dtype_policy("float32")
    copy.set_weights([w.astype("float64") for w in model.get_weights()])
    return copy


def relative_difference(gradients, reference):
    import numpy as np

    top = max(float(np.max(np.abs(np.asarray(r)))) for r in reference)
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(r))))
               for g, r in zip(gradients, reference)) / top


def main():
    args = common.parse_args(__doc__.split("\n\n")[0])
    config = (dict(train=256, test=256, epochs=1, width=4, batch=64, chunks=2) if args.quick
              else dict(train=4096, test=2000, epochs=3, width=4, batch=256, chunks=4))
    import keras

    import tensorflow as tf

    from keras_contrast import data
    from keras_contrast import losses
    from keras_contrast.training import GradCache

    (x_train, y_train), (x_test, y_test), source = common.load_images(
        args.quick, config["train"], config["test"])
    batch, chunks, epochs = config["batch"], config["chunks"], config["epochs"]
    loss = losses.InfoNCE(0.2)
    probe = next(iter(data.two_view_dataset(x_train, batch, seed=99)))

    def optimizer(**kwargs):
        return keras.optimizers.AdamW(1e-3, weight_decay=1e-4, **kwargs)

    # (a) native, with the gradient comparison at the start of every epoch.
    native = build(0, config, x_train.shape[1:])
    native.compile(optimizer=optimizer(), loss=loss)
    differences = []
    for epoch in range(epochs):
        reference = gradients_of(native, probe, loss)
        cached = grad_cache_gradients(native, probe, loss, chunks)
        accumulated = gradients_of(native, probe, loss, chunks)
        copy = float64_copy(native, config, x_train.shape[1:])
        probe64 = tf.cast(probe, tf.float64)
        reference64 = gradients_of(copy, probe64, loss)
        cached64 = grad_cache_gradients(copy, probe64, loss, chunks)
        differences.append({"epoch": epoch, "grad_cache": relative_difference(cached, reference),
                            "accumulation": relative_difference(accumulated, reference),
                            "grad_cache_float64": relative_difference(cached64, reference64)})
        print(f"epoch {epoch}: {differences[-1]}", flush=True)
        native.fit(data.two_view_dataset(x_train, batch, seed=0, epoch=epoch), verbose=0)
    # (b) GradCache at batch B, (c) Keras accumulation of k batches of B/k.
    cached_model = build(0, config, x_train.shape[1:])
    trainer = GradCache(cached_model, num_chunks=chunks)
    trainer.compile(optimizer=optimizer(), loss=loss)
    trainer.fit(data.two_view_dataset(x_train, batch, seed=0, num_epochs=epochs),
                epochs=epochs, steps_per_epoch=len(x_train) // batch, verbose=0)
    accumulating = build(0, config, x_train.shape[1:])
    accumulating.compile(optimizer=optimizer(gradient_accumulation_steps=chunks), loss=loss)
    accumulating.fit(data.two_view_dataset(x_train, batch // chunks, seed=0, num_epochs=epochs),
                     epochs=epochs, steps_per_epoch=len(x_train) // (batch // chunks), verbose=0)
    bank, test = (x_train, y_train), (x_test, y_test)
    accuracy = {"(a) native": common.knn(native.encoder, bank, test),
                "(b) GradCache": common.knn(cached_model.encoder, bank, test),
                "(c) accumulation": common.knn(accumulating.encoder, bank, test)}
    weight_gap = relative_difference(cached_model.get_weights(), native.get_weights())
    raw = common.knn(None, bank, test)

    worst = {key: max(d[key] for d in differences)
             for key in ("grad_cache", "accumulation", "grad_cache_float64")}

    def per_epoch(key):
        return " / ".join(f"{d[key]:.1e}" for d in differences)

    rows = [["(a) native, batch %d" % batch, "0 (reference)", "0 (reference)",
             f"{100 * accuracy['(a) native']:.1f}"],
            [f"(b) GradCache, {chunks} chunks of {batch // chunks}", per_epoch("grad_cache"),
             per_epoch("grad_cache_float64"), f"{100 * accuracy['(b) GradCache']:.1f}"],
            [f"(c) gradient_accumulation_steps={chunks}, batch {batch // chunks}",
             per_epoch("accumulation"), "–", f"{100 * accuracy['(c) accumulation']:.1f}"]]
    plt = common.pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("grad_cache", "(b) GradCache"), ("accumulation", "(c) accumulation")):
        axes[0].semilogy([d["epoch"] for d in differences],
                         [max(d[key], 1e-12) for d in differences], marker="o", label=label)
    axes[0].set(xlabel="epoch of (a)", ylabel="max |g − g_a| / max |g_a|",
                title="gradient difference to native")
    axes[0].legend(fontsize=8)
    axes[1].bar([k.split(" ", 1)[0] + "\n" + k.split(" ", 1)[1] for k in accuracy],
                [100 * v for v in accuracy.values()])
    axes[1].axhline(100 * raw, color="gray", linestyle="--", label="raw pixels")
    axes[1].set(ylabel="kNN accuracy (%)", title="after training")
    axes[1].legend(fontsize=8)
    notes = [
        f"Data: {source}, {config['train']} training images (also the kNN bank), "
        f"{config['test']} test images; SimCLR ResNet-18 of width {config['width']} with "
        f"LayerNorm, InfoNCE τ = 0.2, AdamW 1e-3, {epochs} epochs, the same number of optimizer "
        f"steps in (a), (b), (c). Gradient differences: on one fixed batch of {batch} pairs, at "
        f"the weights of (a) at the start of each epoch: max |g − g_a| / max |g_a|. kNN: "
        f"cosine, k = 200, τ = 0.1; raw pixels {100 * raw:.1f} %.",
        "",
        f"Observed: GradCache's gradient differs from the native one by at most "
        f"{worst['grad_cache']:.1e} (relative to the largest gradient entry) in float32; with "
        f"the same weights in a float64 encoder (the loss still computes in float32) by at most "
        f"{worst['grad_cache_float64']:.1e}"
        + (", i.e. the float32 differences are rounding of chunked vs whole-batch kernels, "
           "amplified where the network is ill-conditioned, not a different gradient. "
           if worst["grad_cache_float64"] < 1e-6 else
           ": the float64 check does NOT bring the difference down to rounding level. ")
        + f"The accumulated small-batch gradient differs by "
        f"{min(d['accumulation'] for d in differences):.1e} to {worst['accumulation']:.1e} "
        "(a different objective, not rounding). After "
        f"{epochs} epochs of AdamW, (b)'s weights are within {weight_gap:.1e} (relative) of "
        "(a)'s (rounding differences grow along the trajectory); kNN accuracy: (b) "
        f"{100 * (accuracy['(b) GradCache'] - accuracy['(a) native']):+.1f}, (c) "
        f"{100 * (accuracy['(c) accumulation'] - accuracy['(a) native']):+.1f} points from "
        "native. With one seed, kNN differences of about a point are within run-to-run noise.",
    ]
    common.write_results(
        args, "gradcache_equivalence", "GradCache vs native big batch vs gradient accumulation",
        ["training", "gradient difference to (a), float32, per epoch",
         "float64 encoder, per epoch", "kNN accuracy (%)"], rows, notes,
        {"config": config, "source": source, "differences": differences, "knn": accuracy,
         "raw_pixels_knn": raw, "weight_relative_difference_b_vs_a": weight_gap}, figure)


if __name__ == "__main__":
    main()
