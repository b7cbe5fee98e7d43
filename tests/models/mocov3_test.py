"""MoCoV3: key encoder kept out of the optimizer but in training-mode BN,
EMA with the cosine momentum from optimizer.iterations (NumPy reference),
GradCache, 2 replicas, resume and round trip."""

import keras
import numpy as np
import pytest

from keras_contrast import losses
from keras_contrast.models.mocov3 import MoCoV3
from keras_contrast.training import GradCache
from keras_contrast.training import cosine_momentum
from tests import test_case
from tests.models.common import tiny_backbone
from tests.models.common import two_views


def build(total_steps=4, norm="batch"):
    model = MoCoV3(tiny_backbone(), (8, 8, 6), (8, 6), momentum=0.9, total_steps=total_steps,
                   projection_norm=norm)
    model.build((None, 2, 8, 8, 1))
    return model


def compiled(model, learning_rate=0.5):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=losses.MoCoV3Loss(0.2))
    return model


def pairs(model):
    return model.momentum_pairs()


def test_key_encoder_starts_as_copy_and_is_not_trainable():
    model = build()
    key_ids = {id(v) for v in model.key_backbone.weights + model.key_projector.weights}
    assert key_ids and not key_ids & {id(v) for v in model.trainable_weights}
    for k, q in pairs(model):
        np.testing.assert_array_equal(k.numpy(), q.numpy())
    # The key BN layers stay trainable (so they run on batch statistics).
    key_bn = [l for l in model.key_backbone.layers if "batch_normalization" in l.name][0]
    assert key_bn.trainable
    x = two_views(6)
    keys_train = model(x, training=True)[:, 2:].numpy()
    keys_infer = model(x, training=False)[:, 2:].numpy()
    assert np.max(np.abs(keys_train - keys_infer)) > 1e-3


def ema_reference(model, x, steps, learning_rate=0.5, cached=None):
    """Runs `steps` single-batch steps and checks every EMA against NumPy."""
    trainer = cached or model
    keys = [k.numpy() for k, _ in pairs(model)]
    for step in range(steps):
        trainer.fit(x, batch_size=len(x), shuffle=False, verbose=0)
        m = 1.0 - 0.1 * (np.cos(np.pi * step / model.total_steps) + 1) / 2
        queries = [q.numpy() for _, q in pairs(model)]
        keys = [m * k + (1 - m) * q for k, q in zip(keys, queries)]
        for (variable, _), expected in zip(pairs(model), keys):
            test_case.assert_all_close(variable.numpy(), expected, rtol=1e-5)
    return keys


def test_ema_follows_the_cosine_schedule():
    model = compiled(build())
    ema_reference(model, two_views(8, seed=1), steps=3)
    assert model.optimizer.iterations.numpy() == 3
    np.testing.assert_allclose(model.current_momentum().numpy(),
                               cosine_momentum(2, 4, 0.9).numpy())


def test_ema_once_per_step_through_grad_cache():
    model = build()
    cached = compiled(GradCache(model, num_chunks=2))
    ema_reference(model, two_views(8, seed=2), steps=2, cached=cached)


# slow: ~25 s; MoCoV3 under 2 replicas is tested by tests/training/loss_assembly_test.py.
@pytest.mark.slow
def test_fit_under_two_replicas_with_sync_heads():
    with test_case.strategy(2).scope():
        model = compiled(build(norm="sync"))
    history = model.fit(two_views(16, seed=3), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for k, q in pairs(model):
        assert k.shape == q.shape


def test_resume_continues_the_schedule_and_round_trips():
    x = two_views(8, seed=4)
    model = compiled(build())
    model.fit(x, batch_size=8, shuffle=False, epochs=2, verbose=0)
    restored = test_case.keras_file_round_trip(model)
    assert restored.optimizer.iterations.numpy() == 2
    test_case.assert_all_close(restored(x, training=False), model(x, training=False))
    for (k1, _), (k2, _) in zip(pairs(model), pairs(restored)):
        np.testing.assert_array_equal(k1.numpy(), k2.numpy())
    keys = [k.numpy() for k, _ in pairs(restored)]
    restored.fit(x, batch_size=8, shuffle=False, verbose=0)
    m = cosine_momentum(2, 4, 0.9).numpy()  # the third update uses step 2
    for (k, q), before in zip(pairs(restored), keys):
        test_case.assert_all_close(k.numpy(), m * before + (1 - m) * q.numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"momentum": 1.5}, "momentum"), ({"total_steps": 0}, "total_steps"),
     ({"prediction_dims": (8, 5)}, "prediction_dims")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoCoV3(tiny_backbone(), (8, 8, 6), **{"prediction_dims": (8, 6), **kwargs})
