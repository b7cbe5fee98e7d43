"""Training: the contrastive model base and its contract with the train step,
the step's shared bookkeeping, momentum encoders and the contrastive
gradient cache."""

from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.contrastive_model import assemble_loss
from keras_contrast.training.contrastive_model import encoder_of
from keras_contrast.training.contrastive_model import regularization_loss
from keras_contrast.training.grad_cache import GradCache
from keras_contrast.training.momentum import MomentumEncoderModel
from keras_contrast.training.momentum import cosine_momentum
from keras_contrast.training.momentum import ema_update
from keras_contrast.training.momentum import momentum_copy
from keras_contrast.training.step import resolve_gradient_norm_groups
from keras_contrast.training.step import watch_gradient_norms

__all__ = [
    "ContrastiveModel",
    "assemble_loss",
    "GradCache",
    "encoder_of",
    "MomentumEncoderModel",
    "cosine_momentum",
    "ema_update",
    "momentum_copy",
    "regularization_loss",
    "resolve_gradient_norm_groups",
    "watch_gradient_norms",
]
