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
    """Writes a SavedModel of a `DualEncoder` with two signatures,
    `encode_a` and `encode_b` (L2-normalised embeddings of each tower).

    Args:
        model: a `DualEncoder` (or any model with `tower_a`, `tower_b`,
            `encode_a`, `encode_b`).
        path: output directory.
        input_signature_a: list of one `tf.TensorSpec`; default from
            `tower_a`'s input.
        input_signature_b: the same for tower B.

    Raises:
        ValueError: `model` is not a dual encoder, or `path` cannot be
            written.

    Example:
    >>> export_dual_encoder(dual, "/tmp/dual")
    >>> tf.saved_model.load("/tmp/dual").encode_a(queries)
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
    check_writable_directory(path, "path")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "encode_a",
        lambda inputs: model.encode_a(inputs, training=False),
        input_signature=_signature(model.tower_a, input_signature_a, "tower_a",
                                   "input_signature_a"),
    )
    archive.add_endpoint(
        "encode_b",
        lambda inputs: model.encode_b(inputs, training=False),
        input_signature=_signature(model.tower_b, input_signature_b, "tower_b",
                                   "input_signature_b"),
    )
    archive.write_out(str(path), verbose=False)
    return model
