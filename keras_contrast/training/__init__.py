"""Training: the contrastive gradient cache."""

from keras_contrast.training.grad_cache import GradCache

__all__ = ["GradCache"]
