"""MoCo (queue): the queue loss against NumPy, the ring buffer against a
NumPy queue (1 and 2 replicas, with Shuffle BN), Shuffle BN on 4 replicas
against a per-replica reference, the compiled loss's settings (honoured or
rejected), the pretext accuracy against NumPy (4 uneven replicas, GradCache),
EMA, fit, round trip, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import distribute
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


def build(queue_size=12, norm=True, **kwargs):
    model = MoCo(tiny_backbone(norm=norm), projection_dims=(8, 6), queue_size=queue_size,
                 momentum=0.9, **kwargs)
    model.build((None, 2, 8, 8, 1))
    return model


@pytest.mark.parametrize("num_replicas,shuffle_bn", [
    (1, False), pytest.param(2, False, marks=pytest.mark.slow), (2, True)])
def test_ring_buffer_holds_the_latest_keys_in_global_order(num_replicas, shuffle_bn):
    with test_case.strategy(num_replicas).scope():
        # No BN: a key does not depend on how the batch splits over replicas
        # (with Shuffle BN, the keys must come back to their own rows).
        model = build(queue_size=12, norm=False, shuffle_bn=shuffle_bn)
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
    with pytest.raises(TypeError, match="`shuffle_bn`"):
        MoCo(tiny_backbone(), shuffle_bn="yes")
    with pytest.raises(TypeError, match="`shuffle_seed`"):
        MoCo(tiny_backbone(), shuffle_seed=1.5)
    with pytest.raises(TypeError, match="`momentum`"):
        MoCo(tiny_backbone(), momentum="0.9")


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


def query_embed(model, images):
    return model.projector(model.backbone(images, training=True), training=True).numpy()


def key_embed(model, images, training=True):
    return model.key_projector(model.key_backbone(images, training=training),
                               training=training).numpy()


def run_on_replicas(strategy, model, x, training):
    distributed = test_case.split_per_replica(strategy, x)
    outputs = strategy.run(lambda v: model(v, training=training), args=(distributed,))
    return np.concatenate([t.numpy() for t in strategy.experimental_local_results(outputs)])


def test_shuffle_bn_keys_equal_a_per_replica_reference_on_four_replicas():
    keras.utils.set_random_seed(0)  # the heads' initial weights
    strategy = test_case.strategy(4)
    x = two_views(16, seed=6)
    single = build(shuffle_bn=True, shuffle_seed=5)
    with strategy.scope():
        model = build(shuffle_bn=True, shuffle_seed=5)
    model.set_weights(single.get_weights())
    # Inference does not shuffle: moving statistics, per-sample keys (taken
    # first: training-mode calls below update the moving statistics).
    inference = key_embed(single, x[:, 1], training=False)
    test_case.assert_all_close(run_on_replicas(strategy, model, x, False)[:, 1], inference)
    # Replica r: queries from its own rows; keys from the rows the shuffle
    # (seed (5, step 0): the model has no optimizer yet) sends it, each key
    # returned to the row it was computed from.
    permutation = distribute.shuffle_permutation(tf.constant([5, 0], tf.int64), 4, 4).numpy()
    assert np.any(permutation.reshape(4, 4) // 4 != np.arange(4)[:, None])  # rows move
    expected = np.zeros((16, 2, 6), np.float32)
    unshuffled_keys = np.zeros((16, 6), np.float32)
    for r in range(4):
        rows = slice(4 * r, 4 * r + 4)
        expected[rows, 0] = query_embed(single, x[rows, 0])
        expected[permutation[rows], 1] = key_embed(single, x[permutation[rows], 1])
        unshuffled_keys[rows] = key_embed(single, x[rows, 1])
    # Without the shuffle the keys would differ (BN pools other samples).
    assert np.max(np.abs(unshuffled_keys - expected[:, 1])) > 1e-2
    actual = run_on_replicas(strategy, model, x, True)
    test_case.assert_all_close(actual, expected, rtol=1e-4)


def test_shuffle_bn_round_trips():
    model = build(shuffle_bn=True, shuffle_seed=7)
    config = model.get_config()
    assert config["shuffle_bn"] is True and config["shuffle_seed"] == 7
    assert test_case.serialization_round_trip(model).shuffle_bn is True
    restored = test_case.keras_file_round_trip(model)
    assert restored.shuffle_bn is True and restored.shuffle_seed == 7
    assert build().get_config()["shuffle_bn"] is False


def queue_reference(q, k, queue, temperature, decoupled=False, normalize=True):
    """Per-sample queue loss and pretext hits in NumPy float64."""
    q, k, queue = (np.asarray(t, np.float64) for t in (q, k, queue))
    if normalize:
        q, k, queue = (normalize_rows(t) for t in (q, k, queue))
    positive = np.sum(q * k, axis=1) / temperature
    negatives = q @ queue.T / temperature
    terms = negatives if decoupled else np.concatenate([positive[:, None], negatives], 1)
    top = terms.max(axis=1, keepdims=True)
    loss = np.log(np.sum(np.exp(terms - top), axis=1)) + top[:, 0] - positive
    hits = np.argmax(np.concatenate([positive[:, None], negatives], 1), axis=1) == 0
    return loss, hits.astype(np.float64)


def normalize_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class DCLSubclass(losses.DCL):
    pass


def loss_of(model, loss, y_pred, sample_weight=None, training=False):
    model.compile(optimizer="sgd", loss=loss)
    return float(model.compute_loss(y_pred=tf.constant(y_pred), sample_weight=sample_weight,
                                    training=training).numpy())


@pytest.mark.parametrize(
    "make_loss,decoupled,normalize",
    [(lambda: losses.NTXent(0.3), False, True),
     (lambda: losses.InfoNCE(0.3, negatives="cross"), False, True),
     (lambda: DCLSubclass(0.3), True, True),
     (lambda: losses.InfoNCE(0.3, normalize=False), False, False),
     (lambda: losses.DCL(0.3, normalize=False), True, False)],
    ids=["ntxent", "cross", "dcl_subclass", "infonce_raw", "dcl_raw"],
)
def test_accepted_losses_give_the_numpy_queue_loss(make_loss, decoupled, normalize):
    model = build(queue_size=7, norm=False)
    rng = np.random.default_rng(8)
    y_pred = rng.normal(size=(6, 2, 6)).astype("float32") * 0.5
    queue = model.queue.numpy()
    expected, _ = queue_reference(y_pred[:, 0], y_pred[:, 1], queue, 0.3, decoupled, normalize)
    test_case.assert_all_close(loss_of(model, make_loss(), y_pred), np.mean(expected))
    # Training enqueues the keys, L2-normalised only with `normalize`.
    loss_of(model, make_loss(), y_pred, training=True)
    keys = y_pred[:, 1] if not normalize else normalize_rows(y_pred[:, 1])
    test_case.assert_all_close(model.queue.numpy()[:6], keys)
    test_case.assert_all_close(model.queue.numpy()[6], queue[6])


def test_reduction_and_sample_weights_are_honoured():
    model = build(queue_size=5, norm=False)
    rng = np.random.default_rng(9)
    y_pred = rng.normal(size=(6, 2, 6)).astype("float32")
    weights = rng.uniform(0.5, 2.0, size=6).astype("float32")
    per_sample, _ = queue_reference(y_pred[:, 0], y_pred[:, 1], model.queue.numpy(), 0.2)
    cases = {
        "sum_over_batch_size": np.sum(weights * per_sample) / 6,
        "mean_with_sample_weight": np.sum(weights * per_sample) / np.sum(weights),
        "sum": np.sum(weights * per_sample),
    }
    for reduction, expected in cases.items():
        actual = loss_of(model, losses.InfoNCE(0.2, reduction=reduction), y_pred, weights)
        test_case.assert_all_close(actual, expected, msg=reduction)


@pytest.mark.parametrize(
    "loss,match",
    [(losses.InfoNCE(0.2, gather=False), "`gather`"),
     (losses.InfoNCE(0.2, tile_size=4), "`tile_size`"),
     (losses.DCL(0.2, reduction="none"), "`reduction`"),
     (losses.DCLW(0.2), "InfoNCE or DCL.*DCLW"),
     (losses.CLIPLoss(), "InfoNCE or DCL.*CLIPLoss")],
    ids=["gather", "tile_size", "reduction", "dclw", "clip"],
)
def test_rejects_loss_settings_the_queue_loss_cannot_honour(loss, match):
    model = build(norm=False)
    with pytest.raises(ValueError, match=match):
        loss_of(model, loss, np.ones((4, 2, 6), "float32"))


def similar_views(batch, seed):
    """Second views close to the first, so that positives often win."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=(batch, 8, 8, 1)).astype("float32")
    second = first + 0.8 * rng.normal(size=first.shape).astype("float32")
    return np.stack([first, second], axis=1)


def layer_norm_moco(queue_size=16):
    keras.utils.set_random_seed(0)  # the heads' initial weights
    backbone = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(8, kernel_initializer=keras.initializers.GlorotUniform(0)),
        keras.layers.LayerNormalization(),
    ])
    model = MoCo(backbone, projection_dims=(8, 6), queue_size=queue_size, momentum=0.9)
    model.build((None, 2, 8, 8, 1))
    return model


class BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def test_pretext_accuracy_is_the_global_fraction_on_four_uneven_replicas():
    # Two steps: 8 samples (2 per replica), then 11 (tf.data: 3 + 3 + 3 + 2).
    # (Keras builds its compiled state on the first batch, which it cannot
    # do on an uneven one.)
    x = similar_views(19, seed=10)
    single = layer_norm_moco()
    outputs = single(x, training=True).numpy()
    queue = single.queue.numpy()
    _, first = queue_reference(outputs[:8, 0], outputs[:8, 1], queue, 0.2)
    queue[:8] = normalize_rows(outputs[:8, 1])  # enqueued by the first step
    _, second = queue_reference(outputs[8:, 0], outputs[8:, 1], queue, 0.2)
    epoch = np.concatenate([first, second]).mean()
    # Keras logs the mean over replicas of each replica's running value:
    # from per-replica counts that would be off.
    naive = np.mean([(first[2 * r:2 * r + 2].sum() + second[rows].sum()) / (2 + len(second[rows]))
                     for r, rows in enumerate((slice(0, 3), slice(3, 6), slice(6, 9),
                                               slice(9, 11)))])
    assert 0 < epoch < 1 and abs(naive - epoch) > 1e-3
    with test_case.strategy(4).scope():
        model = layer_norm_moco()
        model.set_weights(single.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.InfoNCE(0.2))
    dataset = tf.data.Dataset.from_tensors((x[:8],)).concatenate(
        tf.data.Dataset.from_tensors((x[8:],)))
    logs = BatchLogs()
    history = model.fit(dataset, shuffle=False, verbose=0, callbacks=[logs])
    np.testing.assert_allclose(logs.logs[0]["pretext_accuracy"], first.mean(), rtol=1e-6)
    np.testing.assert_allclose(logs.logs[1]["pretext_accuracy"], epoch, rtol=1e-6)
    np.testing.assert_allclose(history.history["pretext_accuracy"][0], epoch, rtol=1e-6)


def test_pretext_accuracy_is_logged_through_grad_cache_and_evaluate():
    from keras_contrast.training import GradCache

    x = similar_views(8, seed=11)
    model = layer_norm_moco()
    outputs = model(x, training=True).numpy()
    _, hits = queue_reference(outputs[:, 0], outputs[:, 1], model.queue.numpy(), 0.2)
    assert 0 < hits.mean() < 1
    evaluated = model  # before any enqueue: the same queue
    evaluated.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.InfoNCE(0.2))
    inference = evaluated(x, training=False).numpy()
    _, inference_hits = queue_reference(inference[:, 0], inference[:, 1],
                                        model.queue.numpy(), 0.2)
    result = evaluated.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["pretext_accuracy"], inference_hits.mean(), rtol=1e-6)
    cached = GradCache(model, num_chunks=2)
    cached.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.InfoNCE(0.2))
    history = cached.fit(x, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["pretext_accuracy"][0], hits.mean(), rtol=1e-6)
