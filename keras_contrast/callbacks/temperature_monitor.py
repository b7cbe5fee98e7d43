"""Learnable temperature (and logit bias) monitor."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.temperature import LearnableTemperature


def _logit_bias(layer):
    """The learnable logit bias weight of `layer` (a SigLIP
    `DualEncoder(learnable_bias=True)`), or None."""
    bias = getattr(layer, "logit_bias", None)
    return bias if isinstance(bias, keras.Variable) else None


@keras_contrast_export("keras_contrast.callbacks.TemperatureMonitor")
class TemperatureMonitor(keras.callbacks.Callback):
    """Logs the learnable temperature τ and logit bias b at the end of every
    epoch.

    A drifting learnable temperature is one source of oscillating training
    (docs/design.md §5); this puts τ of the model's `LearnableTemperature`
    layers into the epoch logs (`temperature`, or `temperature/<layer>`
    when there are several) and into `history`, and likewise the learnable
    logit bias of a SigLIP `DualEncoder(learnable_bias=True)` (`bias`, or
    `bias/<model>` when there are several). Layers inside a wrapping
    `GradCache` are found too. A model with neither raises a ValueError.

    Example:
    >>> model.fit(data, callbacks=[keras_contrast.callbacks.TemperatureMonitor()])
    """

    def __init__(self):
        super().__init__()
        self.history = {}

    def get_config(self):
        return {}

    def on_epoch_end(self, epoch, logs=None):
        layers = self.model._flatten_layers()
        temperatures = [layer for layer in layers if isinstance(layer, LearnableTemperature)]
        biases = [(layer, _logit_bias(layer)) for layer in layers
                  if _logit_bias(layer) is not None]
        if not temperatures and not biases:
            raise ValueError(
                "TemperatureMonitor: the model has no LearnableTemperature layer and no "
                "learnable logit bias (DualEncoder(learnable_bias=True)).")
        values = {}
        for layer in temperatures:
            key = "temperature" if len(temperatures) == 1 else f"temperature/{layer.name}"
            values[key] = float(keras.ops.convert_to_numpy(layer()))
        for layer, bias in biases:
            key = "bias" if len(biases) == 1 else f"bias/{layer.name}"
            values[key] = float(keras.ops.convert_to_numpy(bias))
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
            if logs is not None:
                logs[key] = value
