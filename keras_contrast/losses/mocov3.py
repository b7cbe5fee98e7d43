"""MoCo v3's symmetrised contrastive loss between queries and momentum keys."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import GlobalBatch
from keras_contrast.losses.contrastive_loss import check_bool
from keras_contrast.losses.contrastive_loss import check_embeddings
from keras_contrast.losses.contrastive_loss import check_positive
from keras_contrast.losses.contrastive_loss import compute_dtype
from keras_contrast.losses.contrastive_loss import pair_contrast
from keras_contrast.losses.contrastive_loss import prepare_embeddings
from keras_contrast.losses.contrastive_loss import temperature_tensor

QUERY_1, QUERY_2, KEY_1, KEY_2 = 0, 1, 2, 3


def mocov3_loss(y_true, y_pred, temperature=0.2, gather=True, normalize=True, tile_size=None):
    """MoCo v3 loss per sample (Chen, Xie & He, 2021).

        ctr(q, k) = CE(q · k_allᵀ / τ, labels = own row) · 2τ
        L_i = ctr_i(q1, k2) + ctr_i(q2, k1)

    Keys are stop-gradient (they come from the momentum encoder) and are
    gathered across replicas; queries stay local. The positive key stays in
    the denominator, so the loss is defined (0) even for a global batch of
    one sample.

    Args:
        y_true: ignored.
        y_pred: `(batch, 4, dim)` = `[q1, q2, k1, k2]`.
        temperature: float or scalar tensor > 0.
        gather: bool.
        normalize: bool.
        tile_size: None or int >= 1, columns per tile of the tiled path.

    Returns:
        `(batch,)` float32 (float64 for float64 embeddings or under
        `floatx() == "float64"`).
    """
    del y_true
    check_positive("temperature", temperature)
    check_bool("gather", gather)
    check_bool("normalize", normalize)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 4, "MoCoV3Loss", gather)
    dtype = compute_dtype(y_pred)
    z = prepare_embeddings(y_pred, normalize, "MoCoV3Loss", dtype)
    tau = temperature_tensor(temperature, "MoCoV3Loss", dtype)
    batch = GlobalBatch(
        z,
        None,
        gather,
        "MoCoV3Loss",
        gathered_views=(KEY_1, KEY_2),
        stop_gradient_views=(KEY_1, KEY_2),
    )
    total = 0.0
    for query, key in ((QUERY_1, KEY_2), (QUERY_2, KEY_1)):
        cross_entropy = pair_contrast(
            batch.local[query],
            tf.stop_gradient(batch.local[key]),
            tf.stop_gradient(batch.views[key]),  # also without a gather
            tau,
            excluded_columns=[batch.rows()],
            tile_size=tile_size,
            candidate_gradient=False,
        )
        total += cross_entropy * (2.0 * tau)
    return total


@keras_contrast_export("keras_contrast.losses.MoCoV3Loss")
class MoCoV3Loss(ContrastiveLoss):
    """MoCo v3's symmetrised query-key contrastive loss.

    `ctr(q1, k2) + ctr(q2, k1)` with `ctr(q, k) = CE(q·k_allᵀ/τ)·2τ`, keys
    stop-gradient and gathered across replicas, as in the paper's code.

    Args:
        temperature: float > 0 (paper: 0.2).
        gather: bool. Gather keys across replicas.
        normalize: bool. L2-normalise queries and keys.
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; see README "Tiled losses").
        reduction: Keras reduction.
        name: str.

    Call arguments:
        y_true: ignored.
        y_pred: `(batch, 4, dim)` = `[q1, q2, k1, k2]`.
        sample_weight: optional `(batch,)`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.MoCoV3Loss())

    Reference:
        Chen, Xie & He, "An Empirical Study of Training Self-Supervised
        Vision Transformers", ICCV 2021.
    """

    num_views = 4

    def __init__(
        self,
        temperature=0.2,
        gather=True,
        normalize=True,
        tile_size=None,
        reduction="sum_over_batch_size",
        name="mocov3_loss",
        dtype=None,
    ):
        super().__init__(
            mocov3_loss,
            temperature=temperature,
            gather=gather,
            normalize=normalize,
            reduction=reduction,
            name=name,
            dtype=dtype,
            tile_size=tile_size,
        )
