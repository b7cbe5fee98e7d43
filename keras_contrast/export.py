"""SavedModel export of trained encoders (`serve`: images → embeddings)."""

import keras
import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_writable_directory
from keras_contrast.training.contrastive_model import encoder_of
from keras_contrast.training.step import TrainStep

__all__ = ["export_dual_encoder", "export_encoder"]

_DUAL_ATTRIBUTES = ("tower_a", "tower_b", "encode_a", "encode_b")


def _signature(model, input_signature, what, argument="input_signature"):
    if input_signature is not None:
        if (
            not isinstance(input_signature, (list, tuple))
            or len(input_signature) != 1
            or not isinstance(input_signature[0], tf.TensorSpec)
        ):
            raise ValueError(
                f"`{argument}` must be a list of one tf.TensorSpec, e.g. "
                f"[tf.TensorSpec((None, 32, 32, 3), tf.float32)], got {input_signature!r}."
            )
        return list(input_signature)
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"Cannot infer the input of {what}: give `input_signature`, e.g. "
            "[tf.TensorSpec((None, 32, 32, 3), tf.float32)]."
        )
    shape = (None,) + tuple(inputs[0].shape[1:])
    return [tf.TensorSpec(shape, inputs[0].dtype or tf.float32, name="images")]


@keras_contrast_export("keras_contrast.export.export_encoder")
def export_encoder(model_or_encoder, path, normalize=True, input_signature=None):
    """Writes a SavedModel whose `serve` signature maps images to embeddings.

    The batch dimension is polymorphic; the encoder runs in inference mode
    (moving BN statistics). Load it without Keras:
    `tf.saved_model.load(path).serve(images)`; inspect it with
    `saved_model_cli show --dir path --all`.

    Args:
        model_or_encoder: the encoder (e.g. a backbone), or a model with an
            `encoder` attribute (`SimCLR`, `MoCoV3`, also inside
            `GradCache`), whose encoder is exported.
        path: output directory.
        normalize: bool. L2-normalise the embeddings (cosine retrieval).
        input_signature: list of one `tf.TensorSpec`; default from the
            encoder's input with a `None` batch dimension.

    Returns:
        The exported encoder.

    Raises:
        ValueError: `path` cannot be written, a `DualEncoder` is given (use
            `export_dual_encoder`), or the input cannot be inferred.

    Example:
    >>> export_encoder(simclr_model, "saved_models/simclr_fashion_mnist")
    """
    if not isinstance(normalize, bool):
        raise ValueError(f"`normalize` must be a bool, got {normalize!r}.")
    encoder = encoder_of(model_or_encoder)
    if all(hasattr(encoder, name) for name in _DUAL_ATTRIBUTES):
        raise ValueError(
            "`model_or_encoder` is a dual encoder (two towers): export it with "
            "`export_dual_encoder`."
        )
    if not isinstance(encoder, (keras.layers.Layer, tf.Module)):
        raise ValueError(
            "`model_or_encoder` must be a Keras model or layer (or a model with an `encoder`), "
            f"got {type(model_or_encoder).__name__}."
        )
    check_writable_directory(path, "path")
    signature = _signature(encoder, input_signature, "the encoder")
    if not encoder.built:
        # Build a subclassed encoder by calling it once on a dummy batch.
        spec = signature[0]
        encoder(tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype), training=False)
    archive = keras.export.ExportArchive()
    archive.track(encoder)

    def serve(images):
        embeddings = encoder(images, training=False)
        embeddings = tf.reshape(embeddings, (tf.shape(embeddings)[0], -1))
        return tf.math.l2_normalize(embeddings, axis=-1) if normalize else embeddings

    archive.add_endpoint("serve", serve, input_signature=signature)
    archive.write_out(str(path), verbose=False)
    return encoder


@keras_contrast_export("keras_contrast.export.export_dual_encoder")
def export_dual_encoder(model, path, input_signature_a=None, input_signature_b=None):
    """Writes a SavedModel of a `DualEncoder`: the L2-normalised embeddings
    of each tower (`encode_a`, `encode_b`) and, when the model learns them,
    its logit scale and bias, so served scores can be calibrated.

    Endpoints:
    - `encode_a(inputs_a)`, `encode_b(inputs_b)`: `(batch, dim)` unit rows.
    - `logit_scale()` (no inputs), when the model learns its temperature:
      the scalar t = 1/τ.
    - `logit_bias()` (no inputs), when it learns SigLIP's bias b
      (`learnable_bias=True`): the scalar b.
    - `pair_probability(inputs_a, inputs_b)`, with a learnable bias: the
      calibrated probability `σ(t · <a_i, b_i> + b)` `(batch,)` that row i of
      `inputs_a` and row i of `inputs_b` are a pair, the SigLIP model's own
      estimate. (Score a query against many candidates with the embeddings:
      `σ(t · A Bᵀ + b)`.) A model that learns b but not τ takes t from its
      compiled `SigLIPLoss`.

    Args:
        model: a `DualEncoder` (or any model with `tower_a`, `tower_b`,
            `encode_a`, `encode_b`), also inside a `GradCache`.
        path: output directory.
        input_signature_a: list of one `tf.TensorSpec`; default from
            `tower_a`'s input.
        input_signature_b: the same for tower B.

    Returns:
        The exported dual encoder.

    Raises:
        ValueError: `model` is not a dual encoder, `path` cannot be
            written, or the model learns b but no τ is known (it learns none
            and has no compiled loss with a temperature).

    Example:
    >>> export_dual_encoder(dual, "/tmp/dual")
    >>> served = tf.saved_model.load("/tmp/dual")
    >>> served.encode_a(queries)
    >>> served.pair_probability(queries, keys)  # SigLIP: σ(t·s + b)
    """
    if isinstance(model, TrainStep):
        model = model.trained_model()  # the model a GradCache wraps
    missing = [name for name in _DUAL_ATTRIBUTES if not hasattr(model, name)]
    if missing or not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "`model` must be a keras_contrast.models.DualEncoder (a Keras model with "
            f"{', '.join(_DUAL_ATTRIBUTES)}), got {type(model).__name__}"
            + (f" without {', '.join(missing)}" if missing else "")
            + "; export a single encoder with `export_encoder`."
        )
    bias = getattr(model, "logit_bias", None)
    scale = _logit_scale(model, needed=bias is not None)
    check_writable_directory(path, "path")
    signature_a = _signature(model.tower_a, input_signature_a, "tower_a", "input_signature_a")
    signature_b = _signature(model.tower_b, input_signature_b, "tower_b", "input_signature_b")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "encode_a", lambda inputs: model.encode_a(inputs, training=False),
        input_signature=signature_a,
    )
    archive.add_endpoint(
        "encode_b", lambda inputs: model.encode_b(inputs, training=False),
        input_signature=signature_b,
    )
    if getattr(model, "temperature", None) is not None:
        archive.add_endpoint("logit_scale", scale, input_signature=[])
    if bias is not None:
        archive.add_endpoint("logit_bias", lambda: tf.convert_to_tensor(bias),
                             input_signature=[])

        def pair_probability(inputs_a, inputs_b):
            a = model.encode_a(inputs_a, training=False)
            b = model.encode_b(inputs_b, training=False)
            similarity = tf.reduce_sum(a * b, axis=-1)
            logits = (tf.cast(scale(), similarity.dtype) * similarity
                      + tf.cast(bias, similarity.dtype))
            return tf.sigmoid(logits)

        archive.add_endpoint("pair_probability", pair_probability,
                             input_signature=signature_a + signature_b)
    archive.write_out(str(path), verbose=False)
    return model


def _logit_scale(model, needed):
    """A function of no arguments giving the model's t = 1/τ (the loss
    divides by τ, so does this): its learnable temperature's, else, when
    `needed`, its compiled loss's configured τ."""
    temperature = getattr(model, "temperature", None)
    if temperature is not None:
        return lambda: 1.0 / temperature()
    if not needed:
        return None
    tau = getattr(getattr(model, "loss", None), "temperature", None)
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0:
        raise ValueError(
            "`model` learns a logit bias but not its temperature, and has no compiled loss "
            "with a temperature (e.g. SigLIPLoss(temperature=...)): compile it with the loss "
            "it was trained with before exporting, so `pair_probability` knows t = 1/τ."
        )
    return lambda: tf.constant(1.0 / tau, tf.float32)
