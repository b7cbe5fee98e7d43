"""Cross-replica machinery: gather with gradients, replica ids, shuffle across
replicas, strategies."""

from keras_contrast.distribute.replica import all_gather
from keras_contrast.distribute.replica import gathered_sizes
from keras_contrast.distribute.replica import local_batch_offset
from keras_contrast.distribute.replica import num_replicas
from keras_contrast.distribute.replica import replica_id
from keras_contrast.distribute.shuffle import shuffle_across_replicas
from keras_contrast.distribute.shuffle import shuffle_permutation
from keras_contrast.distribute.strategy import configure_logical_cpus
from keras_contrast.distribute.strategy import simulated_cpu_strategy

__all__ = [
    "all_gather",
    "configure_logical_cpus",
    "gathered_sizes",
    "local_batch_offset",
    "num_replicas",
    "replica_id",
    "shuffle_across_replicas",
    "shuffle_permutation",
    "simulated_cpu_strategy",
]
