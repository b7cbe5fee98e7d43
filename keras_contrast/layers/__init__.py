"""Layers for contrastive models."""

from keras_contrast.api_export import deprecated_aliases
from keras_contrast.layers.batch_normalization import BatchNormalization
from keras_contrast.layers.frozen_batch_normalization import FrozenBatchNormalization
from keras_contrast.layers.ghost_batch_normalization import GhostBatchNormalization
from keras_contrast.layers.projection_head import ProjectionHead
from keras_contrast.layers.replica_statistics import ReplicaMeanStatistics
from keras_contrast.layers.replica_statistics import average_replica_statistics
from keras_contrast.layers.split_batch_normalization import SplitBatchNormalization
from keras_contrast.layers.statistics import domain_scope
from keras_contrast.layers.statistics import frozen_statistics
from keras_contrast.layers.temperature import ClipValue
from keras_contrast.layers.temperature import LearnableTemperature

__all__ = [
    "BatchNormalization",
    "ClipValue",
    "FrozenBatchNormalization",
    "GhostBatchNormalization",
    "LearnableTemperature",
    "ProjectionHead",
    "ReplicaMeanStatistics",
    "SplitBatchNormalization",
    "average_replica_statistics",
    "domain_scope",
    "frozen_statistics",
]

# Names that left the public API; each warns and still works for one release.
_DEPRECATED = {
    "effective_momentum": "keras_contrast.layers.statistics.effective_momentum",
    "statistics_frozen": "keras_contrast.layers.statistics.statistics_frozen",
}
__getattr__ = deprecated_aliases(__name__, _DEPRECATED)
del deprecated_aliases
