"""SimCLR: the stacked-view forward pass, Shuffle BN across 4 replicas (and
its per-step permutation under GradCache), fit under 2 replicas and through
GradCache, export and round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import distribute
from keras_contrast import losses
from keras_contrast.models.simclr import SimCLR
from keras_contrast.models.simclr import step_seed
from keras_contrast.training import GradCache
from tests import test_case
from tests.models.common import StepGradientRecorder
from tests.models.common import tiny_backbone
from tests.models.common import two_views


def build(shuffle_bn=False, seed=0):
    model = SimCLR(tiny_backbone(seed=seed), projection_dims=(8, 6), shuffle_bn=shuffle_bn,
                   shuffle_seed=3)
    model.build((None, 2, 8, 8, 1))
    return model


def embed(model, images, training):
    return model.projector(model.backbone(images, training=training), training=training)


def test_both_views_form_one_batch_norm_batch():
    model = build()
    x = two_views(6)
    # Training mode: statistics over all 12 images at once.
    flat = embed(model, x.reshape(12, 8, 8, 1), training=True).numpy().reshape(6, 2, 6)
    reference = build()
    reference.set_weights(model.get_weights())
    test_case.assert_all_close(reference(x, training=True), flat)
    # Separate views would be normalised differently: the test can fail.
    separate = embed(build(), x[:, 0], training=True).numpy()
    assert np.max(np.abs(separate - flat[:, 0])) > 1e-3
    inference = np.stack([embed(model, x[:, v], False) for v in range(2)], axis=1)
    test_case.assert_all_close(model(x, training=False), inference)


def run_on_replicas(strategy, model, x, training):
    distributed = test_case.split_per_replica(strategy, x)
    outputs = strategy.run(lambda v: model(v, training=training), args=(distributed,))
    return np.concatenate([t.numpy() for t in strategy.experimental_local_results(outputs)])


def test_shuffle_bn_normalises_the_second_view_with_other_replicas_samples():
    strategy = test_case.strategy(4)
    x = two_views(16, seed=1)
    single = build(shuffle_bn=True)
    with strategy.scope():
        model = build(shuffle_bn=True)
    model.set_weights(single.get_weights())
    # Inference: the permutation is undone exactly.
    inference = np.stack([embed(single, x[:, v], False) for v in range(2)], axis=1)
    test_case.assert_all_close(run_on_replicas(strategy, model, x, False), inference)
    # Training: replica r normalises view 1 of its own samples, and view 2
    # of the rows the shuffle (seed (3, step 0)) sends it.
    permutation = distribute.shuffle_permutation(tf.constant([3, 0], tf.int64), 4, 4).numpy()
    assert np.any(permutation.reshape(4, 4) // 4 != np.arange(4)[:, None])  # rows move
    expected = np.zeros((16, 2, 6), np.float32)
    shuffled = x[permutation, 1]
    for r in range(4):
        rows = slice(4 * r, 4 * r + 4)
        expected[rows, 0] = embed(single, x[rows, 0], True)
        expected[permutation[rows], 1] = embed(single, shuffled[rows], True)
    actual = run_on_replicas(strategy, model, x, True)
    test_case.assert_all_close(actual, expected, rtol=1e-4)


@pytest.mark.parametrize("shuffle_bn", [False, True])
def test_fit_under_two_replicas_export_and_round_trip(shuffle_bn, tmp_path):
    x = two_views(16, seed=2)
    with test_case.strategy(2).scope():
        model = build(shuffle_bn=shuffle_bn)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.DCLW(0.2))
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    restored = test_case.keras_file_round_trip(model)
    assert isinstance(restored, SimCLR) and restored.shuffle_bn is shuffle_bn
    # Outside the strategy, per-replica moving statistics read as their mean
    # (inside `predict` under the strategy each replica would use its own).
    test_case.assert_all_close(restored(x, training=False), model(x, training=False))
    model.encoder.export(str(tmp_path / "encoder"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "encoder"))
    test_case.assert_all_close(
        loaded.serve(tf.constant(x[:, 0])).numpy(), model.encoder(x[:, 0], training=False)
    )


def test_grad_cache_step_equals_chunked_reference():
    # Chunks of 4 samples: per-chunk BN (8 images per BN batch).
    x = two_views(8, seed=3)
    model = build()
    reference = build()
    reference.set_weights(model.get_weights())
    loss = losses.InfoNCE(0.2)
    with tf.GradientTape() as tape:
        outputs = [reference(chunk, training=True) for chunk in np.split(x, 2)]
        value = loss(None, tf.concat(outputs, axis=0))
    expected = tape.gradient(value, reference.trainable_weights)
    cached = GradCache(model, num_chunks=2)
    cached.compile(optimizer=test_case.GradientRecorder(), loss=losses.InfoNCE(0.2))
    cached.fit(x, batch_size=8, shuffle=False, verbose=0)
    # The chunked step sums each gradient in another order than the tape
    # (float32, oneDNN kernels that differ between CPUs): entries near zero
    # differ by a few 1e-6 of the largest gradient, hence atol_scale=1e-5.
    for actual, gradient in zip(cached.optimizer.gradients(), expected):
        test_case.assert_all_close(actual, gradient.numpy(), rtol=1e-4, atol_scale=1e-5)


def test_rejects_bad_views():
    with pytest.raises(ValueError, match="views"):
        build()(np.zeros((2, 3, 8, 8, 1), "float32"))


def pooled_sets(seed, num_replicas, local_batch):
    """The rows each replica normalises together under the seed's shuffle."""
    permutation = distribute.shuffle_permutation(
        tf.constant(seed, tf.int64), num_replicas, local_batch).numpy()
    return permutation, [frozenset(permutation[r * local_batch:(r + 1) * local_batch])
                         for r in range(num_replicas)]


def test_shuffle_bn_under_grad_cache_follows_the_training_step():
    # GradCache never compiles a SimCLR (which keeps Keras' compute_loss), so
    # the permutation must follow the GradCache's optimizer: one new
    # permutation per step, the unwrapped model's at the same step.
    keras.utils.set_random_seed(0)  # the heads' initial weights
    strategy = test_case.strategy(2)
    x = two_views(16, seed=4)
    steps = 3
    # The premise: steps 0, 1, 2 pool different samples in BN.
    pools = [pooled_sets([3, step], 2, 8)[1] for step in range(steps)]
    assert len({tuple(sorted(tuple(sorted(s)) for s in p)) for p in pools}) == steps
    single = build(shuffle_bn=True)
    with strategy.scope():
        wrapped, plain = build(shuffle_bn=True), build(shuffle_bn=True)
        wrapped.set_weights(single.get_weights())
        plain.set_weights(single.get_weights())
        cached = GradCache(wrapped, num_chunks=1)  # one chunk: the plain step
        cached.compile(optimizer=StepGradientRecorder(steps), loss=losses.InfoNCE(0.2))
        plain.compile(optimizer=StepGradientRecorder(steps), loss=losses.InfoNCE(0.2))
    for trainer in (cached, plain):
        # Learning rate 0: only the permutation changes from step to step.
        trainer.fit(x, batch_size=16, epochs=steps, shuffle=False, verbose=0)
    np.testing.assert_array_equal(step_seed(wrapped, 3).numpy(), [3, steps])
    for step in range(steps):
        for actual, expected in zip(cached.optimizer.gradients(step),
                                    plain.optimizer.gradients(step)):
            test_case.assert_all_close(actual, expected, rtol=1e-4, atol_scale=1e-5)
    first_layer = [cached.optimizer.gradients(step)[0] for step in range(steps)]
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert np.max(np.abs(first_layer[a] - first_layer[b])) > 1e-3 * np.max(
            np.abs(first_layer[a]))
    # After 3 steps the wrapped model shuffles with the seed (3, 3).
    permutation, _ = pooled_sets([3, steps], 2, 8)
    expected = np.zeros((16, 2, 6), np.float32)
    shuffled = x[permutation, 1]
    for r in range(2):
        rows = slice(8 * r, 8 * r + 8)
        expected[rows, 0] = embed(single, x[rows, 0], True)
        expected[permutation[rows], 1] = embed(single, shuffled[rows], True)
    test_case.assert_all_close(run_on_replicas(strategy, wrapped, x, True), expected, rtol=1e-4)
