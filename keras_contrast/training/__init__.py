"""Training: the contrastive model base and its contract with the train step,
the step's shared bookkeeping, momentum encoders and the contrastive
gradient cache."""

from keras_contrast.api_export import deprecated_aliases
from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.contrastive_model import assemble_loss
from keras_contrast.training.contrastive_model import encoder_of
from keras_contrast.training.contrastive_model import regularization_loss
from keras_contrast.training.grad_cache import GradCache
from keras_contrast.training.momentum import MomentumEncoderModel
from keras_contrast.training.momentum import cosine_momentum
from keras_contrast.training.momentum import ema_update
from keras_contrast.training.step import watch_gradient_norms

__all__ = [
    "ContrastiveModel",
    "GradCache",
    "MomentumEncoderModel",
    "assemble_loss",
    "cosine_momentum",
    "ema_update",
    "encoder_of",
    "regularization_loss",
    "watch_gradient_norms",
]

# Names that left the public API; each warns and still works for one release.
_DEPRECATED = {
    "momentum_copy": "keras_contrast.training.momentum.momentum_copy",
    "resolve_gradient_norm_groups": "keras_contrast.training.step.resolve_gradient_norm_groups",
}
__getattr__ = deprecated_aliases(__name__, _DEPRECATED)
del deprecated_aliases
