"""MoCo (queue): the queue loss against NumPy, the ring buffer against a
NumPy queue (1 and 2 replicas), EMA, fit, round trip, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.losses.queue import queue_contrastive_loss
from keras_contrast.models import MoCo
from tests import test_case
from tests.models.common import tiny_backbone
from tests.models.common import two_views


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("decoupled", [False, True])
def test_queue_loss_equals_numpy(decoupled):
    rng = np.random.default_rng(0)
    q, k, queue = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    qn, kn, nn = normalize(q), normalize(k), normalize(queue)
    expected = []
    for i in range(5):
        positive = qn[i] @ kn[i] / 0.3
        negatives = nn @ qn[i] / 0.3
        terms = negatives if decoupled else np.append(negatives, positive)
        expected.append(np.log(np.sum(np.exp(terms))) - positive)
    actual = queue_contrastive_loss(q, k, queue, 0.3, decoupled=decoupled)
    test_case.assert_all_close(actual, expected)


def build(queue_size=12, norm=True):
    model = MoCo(tiny_backbone(norm=norm), projection_dims=(8, 6), queue_size=queue_size,
                 momentum=0.9)
    model.build((None, 2, 8, 8, 1))
    return model


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_ring_buffer_holds_the_latest_keys_in_global_order(num_replicas):
    with test_case.strategy(num_replicas).scope():
        # No BN: a key does not depend on how the batch splits over replicas.
        model = build(queue_size=12, norm=False)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.InfoNCE(0.2))
    x = two_views(40, seed=1)
    queue = model.queue.numpy().copy()
    pointer = 0
    # Learning rate 0: the EMA of identical weights leaves the keys as they are.
    for start in range(0, 40, 8):
        batch = x[start : start + 8]
        model.fit(batch, batch_size=8, shuffle=False, verbose=0)
        keys = normalize(model(batch, training=False).numpy()[:, 1])
        for key in keys:
            queue[pointer] = key
            pointer = (pointer + 1) % 12
    assert int(model.queue_pointer.numpy()) == pointer == 40 % 12
    test_case.assert_all_close(model.queue.numpy(), queue, rtol=1e-4)


def test_fit_updates_key_encoder_by_ema_and_round_trips():
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses.DCL(0.2))
    x = two_views(8, seed=2)
    kernel_key, kernel_query = model.key_backbone.weights[0], model.backbone.weights[0]
    before = kernel_key.numpy()
    model.fit(x, batch_size=8, shuffle=False, verbose=0)
    test_case.assert_all_close(kernel_key.numpy(), 0.9 * before + 0.1 * kernel_query.numpy())
    assert not {id(v) for v in model.key_backbone.weights} & {id(v) for v in model.trainable_weights}
    restored = test_case.keras_file_round_trip(model)
    test_case.assert_all_close(restored(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(restored.queue.numpy(), model.queue.numpy())


def test_fit_under_two_replicas_and_errors():
    with test_case.strategy(2).scope():
        model = build(queue_size=16)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.InfoNCE(0.2))
    history = model.fit(two_views(16, seed=3), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    bad = build()
    bad.compile(optimizer="sgd", loss=losses.DCLW())
    with pytest.raises(ValueError, match="InfoNCE or DCL"):
        bad.fit(two_views(8), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="queue_size"):
        MoCo(tiny_backbone(), queue_size=0)


def test_grad_cache_and_export(tmp_path):
    from keras_contrast.export import export_encoder
    from keras_contrast.training import GradCache

    model = build(queue_size=12)
    cached = GradCache(model, num_chunks=2)
    cached.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.InfoNCE(0.2))
    cached.fit(two_views(8, seed=4), batch_size=8, epochs=2, verbose=0)
    # Two steps of 8 keys, enqueued once per step (not once per chunk).
    assert int(model.queue_pointer.numpy()) == 16 % 12
    export_encoder(cached, tmp_path / "encoder", normalize=False)
    loaded = tf.saved_model.load(str(tmp_path / "encoder"))
    images = two_views(3, seed=5)[:, 0]
    test_case.assert_all_close(loaded.serve(tf.constant(images)).numpy(),
                               model.encoder(images, training=False).numpy())
