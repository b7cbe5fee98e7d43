"""Gradient infinity-norm monitor (docs/design.md §5)."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.training.step import LOG_PREFIX
from keras_contrast.training.step import TrainStep
from keras_contrast.training.step import watch_gradient_norms


def _computes_norms(model):
    """ContrastiveModel and GradCache: their train step computes the norms."""
    return isinstance(model, TrainStep)


@keras_contrast_export("keras_contrast.callbacks.GradientNormMonitor")
class GradientNormMonitor(keras.callbacks.Callback):
    """Records the infinity norm (max |g|) of chosen layers' gradients at
    every training step.

    MoCo v3 found that training instability with ViTs shows as spikes in
    the first layer's gradient infinity norm, tens of steps before the last
    layer's (docs/design.md §5). A callback cannot see gradients, so this one
    asks the model's train step to compute them
    (`keras_contrast.training.watch_gradient_norms`; `ContrastiveModel`s and
    `GradCache` support it): the step logs `grad_inf_norm/<name>`, the
    global-batch gradient's value (summed across replicas, loss scale
    undone), so it also reaches the progress bar, `History` (last step of
    each epoch) and TensorBoard. Every step's value is kept in `history`.
    Any other model (a plain `keras.Model`, whose train step computes no
    norms) makes `fit` raise a ValueError when training begins.

    Args:
        layers: `"first_last"` (logged as `grad_inf_norm/first` and
            `grad_inf_norm/last`: the layers owning the first and the last
            trainable variable) or a list of layers / layer names.

    Example:
    >>> monitor = keras_contrast.callbacks.GradientNormMonitor()
    >>> model.fit(data, callbacks=[monitor])
    >>> monitor.history["grad_inf_norm/first"]  # one float per step
    """

    def __init__(self, layers="first_last"):
        super().__init__()
        self.layers = layers
        self.history = {}

    def get_config(self):
        layers = self.layers
        if isinstance(layers, (list, tuple)):
            layers = [getattr(layer, "name", layer) for layer in layers]
        return {"layers": layers}

    def set_model(self, model):
        super().set_model(model)
        if not _computes_norms(model):
            return  # on_train_begin says what is needed
        groups = watch_gradient_norms(model, self.layers)
        for name in groups:
            self.history.setdefault(name, [])

    def on_train_begin(self, logs=None):
        if not _computes_norms(self.model):
            raise ValueError(
                "GradientNormMonitor needs a keras_contrast.training.ContrastiveModel (SimCLR, "
                "MoCo, MoCoV3, DualEncoder, or a subclass) or a GradCache: their train step "
                "computes the gradient norms; got a "
                f"{type(self.model).__name__}, whose train step does not."
            )

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            if name.startswith(LOG_PREFIX):
                self.history.setdefault(name, []).append(float(value))

    def plot(self, path, title="Gradient infinity norm per step"):
        """Saves a log-scale plot of the recorded norms to `path` (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 3.5))
        for name, values in self.history.items():
            axis.plot(values, label=name[len(LOG_PREFIX):], linewidth=1)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("max |g|")
        axis.set_title(title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
