"""MoCo v3's symmetrised contrastive loss between queries and momentum keys
(docs/design.md §2.6)."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_embeddings
from keras_contrast.losses._checks import check_options
from keras_contrast.losses._checks import positive_tensor
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import per_sample_loss
from keras_contrast.losses.global_batch import GlobalBatch
from keras_contrast.losses.global_batch import compute_dtype
from keras_contrast.losses.global_batch import prepare_embeddings
from keras_contrast.losses.info_nce import info_nce_from_logits
from keras_contrast.losses.kernels import one_positive_terms

QUERY_1, QUERY_2, KEY_1, KEY_2 = 0, 1, 2, 3


@keras_contrast_export("keras_contrast.losses.mocov3_loss")
@per_sample_loss
def mocov3_loss(y_true, y_pred, temperature=0.2, gather=True, normalize=True, tile_size=None):
    """MoCo v3 loss per sample (Chen, Xie & He, 2021; docs/design.md §2.6).

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
        {options}.
    """
    del y_true
    name = "MoCoV3Loss"
    check_options(temperature, gather, normalize, tile_size)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 4, name, gather)
    dtype = compute_dtype(y_pred)
    z = prepare_embeddings(y_pred, normalize, name, dtype)
    tau = positive_tensor(temperature, "temperature", name, dtype)
    keys = (KEY_1, KEY_2)
    batch = GlobalBatch(z, None, gather, name, gathered_views=keys, stop_gradient_views=keys)
    total = 0.0
    for query, key in ((QUERY_1, KEY_2), (QUERY_2, KEY_1)):
        terms = one_positive_terms(
            batch.local[query],
            tf.stop_gradient(batch.local[key]),
            tf.stop_gradient(batch.views[key]),  # also without a gather
            tau,
            excluded_columns=[batch.rows()],
            tile_size=tile_size,
            candidate_gradient=False,
        )
        cross_entropy = info_nce_from_logits(terms.log_denominator, terms.positive_logit)
        total += cross_entropy * (2.0 * tau)
    return total


@keras_contrast_export("keras_contrast.losses.MoCoV3Loss")
class MoCoV3Loss(ContrastiveLoss):
    """MoCo v3's symmetrised query-key contrastive loss.

    `ctr(q1, k2) + ctr(q2, k1)` with `ctr(q, k) = CE(q·k_allᵀ/τ)·2τ`, keys
    stop-gradient and gathered across replicas, as in the paper's code
    (`mocov3_loss`, docs/design.md §2.6). `gather` gathers the keys and
    `normalize` applies to queries and keys.

    Args:
        temperature: float > 0 (paper: 0.2).
        {shared_args}

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

    def __init__(self, temperature=0.2, *, name="mocov3_loss", **kwargs):
        super().__init__(mocov3_loss, temperature, name=name, **kwargs)
