"""Training: the contrastive model base and the contrastive gradient cache."""

from keras_contrast.training.contrastive_model import ContrastiveModel
from keras_contrast.training.contrastive_model import resolve_gradient_norm_groups
from keras_contrast.training.contrastive_model import watch_gradient_norms
from keras_contrast.training.grad_cache import GradCache

__all__ = ["ContrastiveModel", "GradCache", "resolve_gradient_norm_groups", "watch_gradient_norms"]
