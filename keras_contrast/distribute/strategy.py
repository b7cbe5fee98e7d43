"""Strategy helpers: simulated replicas on one CPU."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export

# One strategy per device set, for the life of the process (see below).
_STRATEGIES = {}
# Collective group keys reserved per strategy.
_GROUP_KEYS_PER_STRATEGY = 10_000


@keras_contrast_export("keras_contrast.distribute.configure_logical_cpus")
def configure_logical_cpus(num_devices):
    """Splits the first physical CPU into `num_devices` logical devices.

    Must run before TensorFlow initialises its devices (before the first op
    or device query in the process). Calling it again with a number not
    larger than the devices already configured is a no-op.

    Args:
        num_devices: int >= 1.

    Returns:
        The list of logical CPU device names.

    Raises:
        ValueError: `num_devices` is not a positive int.
        RuntimeError: TensorFlow already initialised fewer logical CPUs.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int):
        raise ValueError(
            f"`num_devices` must be a positive int, got {num_devices!r}."
        )
    if num_devices < 1:
        raise ValueError(f"`num_devices` must be >= 1, got {num_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is None or len(configured) < num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu,
                [tf.config.LogicalDeviceConfiguration()] * num_devices,
            )
        except RuntimeError as error:
            available = len(tf.config.list_logical_devices("CPU"))
            if available < num_devices:
                raise RuntimeError(
                    f"Cannot split the CPU into {num_devices} logical devices: "
                    f"TensorFlow has already initialised its devices with "
                    f"{available} logical CPU(s). Call "
                    "`keras_contrast.distribute.simulated_cpu_strategy` (or "
                    "`configure_logical_cpus`) at the start of the process, "
                    "before any TensorFlow op runs."
                ) from error
    return [d.name for d in tf.config.list_logical_devices("CPU")]


@keras_contrast_export("keras_contrast.distribute.simulated_cpu_strategy")
def simulated_cpu_strategy(num_replicas):
    """A `MirroredStrategy` over `num_replicas` logical devices of one CPU.

    Simulates a multi-accelerator machine on a CPU so that cross-replica
    code (gathers, synchronised BatchNorm, strategy-reduced losses) can be
    run and tested anywhere.

    Args:
        num_replicas: int >= 1.

    Returns:
        A `tf.distribute.MirroredStrategy` with `num_replicas` replicas; the
        same object for the same `num_replicas` within a process.

    Raises:
        RuntimeError: TensorFlow's devices were initialised before this call
            with fewer logical CPUs than requested.

    Example:
    >>> strategy = keras_contrast.distribute.simulated_cpu_strategy(4)
    >>> with strategy.scope():
    ...     model = build_model()
    ...     model.compile(optimizer="sgd", loss=keras_contrast.losses.DCLW())
    """
    devices = tuple(configure_logical_cpus(num_replicas)[:num_replicas])
    if devices not in _STRATEGIES:
        # Every MirroredStrategy numbers its collective groups from
        # 1 + `_collective_key_base`; two strategies over different device
        # sets in one process (2 and 4 replicas, say) would then reuse a
        # group key with another group size and abort their collectives.
        # Each strategy made here gets a key range of its own.
        strategy_class = type(
            "SimulatedCpuMirroredStrategy",
            (tf.distribute.MirroredStrategy,),
            {"_collective_key_base": _GROUP_KEYS_PER_STRATEGY * len(_STRATEGIES)},
        )
        _STRATEGIES[devices] = strategy_class(list(devices))
    return _STRATEGIES[devices]
