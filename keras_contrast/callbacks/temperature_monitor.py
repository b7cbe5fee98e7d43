"""Learnable temperature monitor."""

import keras

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.layers.temperature import LearnableTemperature


@keras_contrast_export("keras_contrast.callbacks.TemperatureMonitor")
class TemperatureMonitor(keras.callbacks.Callback):
    """Logs the learnable temperature τ at the end of every epoch.

    A drifting learnable temperature is one source of oscillating training
    (docs/design.md §5); this puts τ of the model's `LearnableTemperature`
    layers into the epoch logs (`temperature`, or `temperature/<layer>`
    when there are several) and into `history`.

    Example:
    >>> model.fit(data, callbacks=[keras_contrast.callbacks.TemperatureMonitor()])
    """

    def __init__(self):
        super().__init__()
        self.history = {}

    def get_config(self):
        return {}

    def on_epoch_end(self, epoch, logs=None):
        found = [
            layer for layer in self.model._flatten_layers()
            if isinstance(layer, LearnableTemperature)
        ]
        if not found:
            raise ValueError("TemperatureMonitor: the model has no LearnableTemperature layer.")
        for layer in found:
            key = "temperature" if len(found) == 1 else f"temperature/{layer.name}"
            value = float(keras.ops.convert_to_numpy(layer()))
            self.history.setdefault(key, []).append(value)
            if logs is not None:
                logs[key] = value
