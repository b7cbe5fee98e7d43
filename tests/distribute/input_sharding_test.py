"""Sharded two-view input: each replica's batch is its slice of the
single-device global batch, in one process (2 and 4 replicas) and over 2
worker processes on 127.0.0.1, whose sync-BN training matches one process
with 2 replicas."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import data
from tests import test_case
from tests.distribute import input_sharding_worker as worker

WORKER = os.path.join(os.path.dirname(__file__), "input_sharding_worker.py")
IMAGES = np.random.default_rng(1).integers(0, 256, (36, 8, 8, 1), dtype=np.uint8)
IDS = np.arange(len(IMAGES))


def per_replica_batches(strategy, dataset):
    """[step][replica] -> (views, labels) as NumPy."""
    steps = []
    for views, labels in dataset:
        steps.append([(v.numpy(), y.numpy()) for v, y in zip(
            strategy.experimental_local_results(views),
            strategy.experimental_local_results(labels))])
    return steps


@pytest.mark.parametrize("replicas", [2, 4])
def test_each_replica_gets_its_slice_of_the_single_device_global_batch(replicas):
    strategy = test_case.strategy(replicas)
    # Labels are ids: the single-device array path is the reference.
    reference = [(v.numpy(), y.numpy()) for v, y in data.two_view_dataset(
        IMAGES, 8, seed=2, num_epochs=2, labels=IDS, augment=worker.flip)]
    steps = per_replica_batches(strategy, data.distribute_two_view_dataset(
        strategy, IMAGES, 8, seed=2, num_epochs=2, labels=IDS, augment=worker.flip))
    assert len(steps) == len(reference) == 2 * (36 // 8)
    b = 8 // replicas
    for step, ((views, labels), replica_batches) in enumerate(zip(reference, steps)):
        for r, (local_views, local_labels) in enumerate(replica_batches):
            np.testing.assert_array_equal(local_labels, labels[r * b:(r + 1) * b],
                                          err_msg=f"step {step} replica {r}")
            np.testing.assert_array_equal(local_views, views[r * b:(r + 1) * b])
    first_epoch = np.concatenate([y for replica in steps[:4] for _, y in replica])
    assert len(first_epoch) == 32 and len(set(first_epoch.tolist())) == 32
    # The epoch's order without its last partial global batch.
    assert set(first_epoch.tolist()) == set(data.epoch_permutation(36, 2, 0)[:32].tolist())


def test_folder_shards_equal_the_array_slices(tmp_path):
    from tests.data.pipeline_test import write_png_folder

    images, labels = write_png_folder(str(tmp_path), counts=(5, 7), shape=(8, 8, 1))
    strategy = test_case.strategy(2)
    folder = per_replica_batches(strategy, data.distribute_two_view_dataset(
        strategy, str(tmp_path), 4, seed=1, labels=True, channels=1, augment=worker.flip))
    arrays = per_replica_batches(strategy, data.distribute_two_view_dataset(
        strategy, images, 4, seed=1, labels=labels, augment=worker.flip))
    assert len(folder) == 3
    for a, b in zip(folder, arrays):
        for (va, ya), (vb, yb) in zip(a, b):
            np.testing.assert_array_equal(va, vb)
            np.testing.assert_array_equal(ya, yb)


def test_rejects_batches_the_replicas_cannot_split():
    strategy = test_case.strategy(4)
    with pytest.raises(ValueError, match="`global_batch_size`=10 is not divisible by the 4"):
        data.distribute_two_view_dataset(strategy, IMAGES, 10)
    with pytest.raises(ValueError, match="`drop_remainder` must be True"):
        data.distribute_two_view_dataset(strategy, IMAGES, 8, drop_remainder=False)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['batch_size'\\]"):
        data.distribute_two_view_dataset(strategy, IMAGES, 8, batch_size=8)
    with pytest.raises(ValueError, match="`strategy` must be a tf.distribute.Strategy"):
        data.distribute_two_view_dataset("mirrored", IMAGES, 8)


@pytest.mark.slow
def test_two_workers_read_disjoint_shards_and_train_like_two_local_replicas(tmp_path):
    results = test_case.run_local_workers(WORKER, tmp_path, timeout=240)
    seen = [i for r in results for replica in r["ids"] for i in replica]
    steps = worker.NUM_EXAMPLES // worker.GLOBAL_BATCH
    assert sorted(seen) == list(range(steps * worker.GLOBAL_BATCH))
    # Worker w's one replica is replica w of the single-process run.
    ids, initial, weights = worker.run(test_case.strategy(2))
    assert [r["ids"][0] for r in results] == ids
    assert max(np.max(np.abs(a - b)) for a, b in zip(initial, weights)) > 1e-2
    for w_worker, w_local in zip(results[0]["weights"], weights):
        test_case.assert_all_close(np.array(w_worker), w_local, rtol=0, atol_scale=1e-5)
    for w_a, w_b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(w_a, w_b)


def per_pipeline_datasets(monkeypatch, strategy, **kwargs):
    """The datasets `distribute_two_view_dataset` builds for 2 input
    pipelines (2 workers of one replica each), in one process."""
    monkeypatch.setattr(strategy, "distribute_datasets_from_function", lambda fn: [
        fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=w,
                                      num_replicas_in_sync=2)) for w in range(2)])
    return data.distribute_two_view_dataset(strategy, **kwargs)


def test_each_worker_pipeline_reads_only_its_replicas_examples(monkeypatch):
    strategy = test_case.strategy(2)
    reference = [y.numpy() for _, y in data.two_view_dataset(
        IMAGES, 8, seed=2, labels=IDS, augment=worker.flip)]
    pipelines = per_pipeline_datasets(monkeypatch, strategy, source=IMAGES, global_batch_size=8,
                                      seed=2, labels=IDS, augment=worker.flip)
    for w, dataset in enumerate(pipelines):
        ids = [y.numpy() for _, y in dataset]
        assert len(ids) == 4
        for step, (local, expected) in enumerate(zip(ids, reference)):
            np.testing.assert_array_equal(local, expected[4 * w:4 * w + 4], err_msg=f"{step}")


def test_sequential_sources_shard_by_files_with_equal_steps(monkeypatch, tmp_path):
    tfrecords = pytest.importorskip("keras_contrast.data.tfrecords")
    tfrecords.write_tfrecords((IMAGES, IDS), str(tmp_path / "r"), num_shards=4)
    strategy = test_case.strategy(2)
    pipelines = per_pipeline_datasets(
        monkeypatch, strategy, source="tfrecord:" + str(tmp_path / "r-*.tfrecord"),
        global_batch_size=8, seed=1, labels=True, channels=1, augment=worker.flip)
    seen = [np.concatenate([y.numpy() for _, y in dataset]) for dataset in pipelines]
    # 36 records, 4 shards of 9: 2 workers x 18 -> 4 steps of 4 each.
    assert [len(s) for s in seen] == [16, 16]
    assert not set(seen[0]) & set(seen[1])
    # Shard i holds ids i, i + 4, ...: worker w reads shards w and w + 2.
    for w in range(2):
        assert set(seen[w] % 2) == {w}
