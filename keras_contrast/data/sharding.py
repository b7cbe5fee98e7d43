"""Two-view input sharded over replicas and workers: each input pipeline
reads and decodes only the examples of its own replicas."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.data import pipeline

_KWARGS = ("labels", "shuffle", "drop_remainder", "augment", "image_size", "channels", "split",
           "num_parallel_calls", "threads", "on_error")


@keras_contrast_export("keras_contrast.data.distribute_two_view_dataset")
def distribute_two_view_dataset(strategy, source, global_batch_size, seed=0, epoch=0,
                                num_epochs=1, **two_view_kwargs):
    """`two_view_dataset` spread over a strategy's replicas, one shard each.

    Built on `strategy.distribute_datasets_from_function`: every input
    pipeline (one per worker) builds the per-replica batches of its own
    replicas only, in the order in which `tf.distribute` hands consecutive
    elements to a worker's local replicas. For random-access sources
    (arrays, folders) replica `r` of step `k` gets positions
    `[k·B + r·b, k·B + (r+1)·b)` of the epoch's order (`B` the global,
    `b = B / replicas` the per-replica batch), with the same per-view
    seeds: the union over replicas of step `k` is exactly the
    single-device global batch `k` of `two_view_dataset(source, B, ...)`,
    however the replicas are spread over workers. Sequential sources
    (TFRecord, TFDS) give each worker the shard `examples(shard_index=
    worker, shard_count=workers)` (whole files or records) and cut every
    worker to the same number of steps. Each epoch's last partial global
    batch is dropped.

    Args:
        strategy: a `tf.distribute.Strategy`.
        source: anything `two_view_dataset` takes.
        global_batch_size: int > 0, divisible by the number of replicas.
        seed, epoch, num_epochs: as for `two_view_dataset`.
        **two_view_kwargs: the other arguments of `two_view_dataset`
            (`labels`, `shuffle`, `augment`, `image_size`, `channels`,
            `split`, `num_parallel_calls`, `threads`, `on_error`;
            `drop_remainder` must stay True).

    Returns:
        A distributed dataset (`tf.distribute.DistributedDataset`) of
        per-replica `(b, 2, H, W, C)` views (or `(views, labels)`). Pass
        `steps_per_epoch` to `model.fit`: `num_examples // B` for
        random-access sources, `(num_examples // workers) // (B //
        workers)` for sequential ones.

    Example:
    >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()
    >>> dataset = keras_contrast.data.distribute_two_view_dataset(
    ...     strategy, "flowers", 512, seed=0, num_epochs=100, image_size=64)
    >>> model.fit(dataset, epochs=100, steps_per_epoch=num_examples // 512)
    """
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"`strategy` must be a tf.distribute.Strategy, got {strategy!r}.")
    unknown = sorted(set(two_view_kwargs) - set(_KWARGS))
    if unknown:
        raise TypeError(f"distribute_two_view_dataset() got unexpected keyword arguments "
                        f"{unknown}; it takes {list(_KWARGS)}.")
    check_positive_int(global_batch_size, "global_batch_size")
    if two_view_kwargs.pop("drop_remainder", True) is not True:
        raise ValueError("`drop_remainder` must be True: every replica takes a full batch.")
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"`global_batch_size`={global_batch_size} is not divisible by the "
                         f"{replicas} replicas of the strategy.")
    shuffle = two_view_kwargs.get("shuffle", True)
    threads = two_view_kwargs.get("threads")
    num_parallel_calls = two_view_kwargs.get("num_parallel_calls", tf.data.AUTOTUNE)
    pipeline._check_common(global_batch_size, seed, epoch, num_epochs, shuffle, True, threads,
                           num_parallel_calls)
    augments = pipeline._check_augment(two_view_kwargs.get("augment", pipeline.simclr_augment))
    source, with_labels = pipeline._resolve(
        source, two_view_kwargs.get("labels"), two_view_kwargs.get("split", "train"),
        two_view_kwargs.get("image_size"), two_view_kwargs.get("channels"),
        two_view_kwargs.get("on_error", "raise"))
    num_examples = source.num_examples
    if num_examples < global_batch_size:
        raise ValueError(f"`global_batch_size`={global_batch_size} exceeds the {num_examples} "
                         "images.")
    per_replica = global_batch_size // replicas

    def dataset_fn(context):
        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        local = context.num_replicas_in_sync // pipelines
        block = {"pipeline": index, "pipelines": pipelines, "replicas": local,
                 "offset": index * local * per_replica, "size": local * per_replica,
                 "global": global_batch_size,
                 "steps": (num_examples // pipelines) // (local * per_replica)}
        dataset = pipeline._stream_two_views(source, per_replica, seed, epoch, num_epochs,
                                             with_labels, shuffle, True, augments,
                                             num_parallel_calls, block=block)
        return pipeline._with_threads(dataset, threads)

    return strategy.distribute_datasets_from_function(dataset_fn)
