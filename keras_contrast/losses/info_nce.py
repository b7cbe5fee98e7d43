"""InfoNCE / NT-Xent (SimCLR), with optional supervised positives
(docs/design.md §2.1, §2.2)."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_negatives
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import per_sample_loss
from keras_contrast.losses.two_view import TwoViewPairs
from keras_contrast.losses.two_view import two_view_terms


def info_nce_from_logits(log_negatives, positive_logit):
    """InfoNCE of anchors with one positive each, from the log-sum-exp of
    their negatives `lse⁻` and their positive's logit `s⁺`:

        -s⁺ + log(e^{s⁺} + e^{lse⁻}) = softplus(lse⁻ - s⁺)

    The softplus form is exact near a loss of 0, where the plain difference
    of two ≈1/τ terms cancels in float32. 0 for an anchor without negatives
    (`lse⁻ = -inf`).
    """
    return tf.nn.softplus(log_negatives - positive_logit)


def info_nce_of_terms(terms):
    """Per-sample InfoNCE from `two_view_terms` of a loss whose positives
    stay in the denominator: the mean of each sample's two anchor losses."""

    def anchor_loss(view):
        if terms.class_positives:  # The kernels' denominator holds the positives.
            return view.log_denominator - view.positive_logit
        return info_nce_from_logits(view.log_denominator, view.positive_logit)

    return terms.mean_over_views(anchor_loss)


@keras_contrast_export("keras_contrast.losses.info_nce")
@per_sample_loss
def info_nce(
    y_true, y_pred, temperature=0.1, negatives="all", gather=True, normalize=True,
    tile_size=None,
):
    """InfoNCE (NT-Xent) loss per sample (Chen et al., 2020, eq. 1;
    docs/design.md §2.1).

    For anchor z_i^(1) with positive z_i^(2) and logits s = <·,·>/τ:

        L_i = -s(z_i^(1), z_i^(2)) + log Σ_{k ≠ anchor} exp(s(z_i^(1), c_k))

    where the candidates c_k are both views of every sample
    (`negatives="all"`, the 2N-1 others of SimCLR) or only the other view
    (`negatives="cross"`). With class ids in `y_true`, every same-class
    embedding is a positive and the positive term is their mean
    (supervised contrastive, Khosla et al. 2020, L_out; docs/design.md
    §2.2). The positives stay in the denominator, so the loss stays
    defined when an anchor has no negative (a global batch of one class):
    then it only pulls the positives together.

    Args:
        y_true: None, or integer class ids `(batch,)`.
        y_pred: `(batch, 2, dim)` embeddings of the two views.
        temperature: float or scalar tensor > 0.
        negatives: `"all"` or `"cross"`.
        {options}: the mean of each sample's two anchor losses.
    """
    terms = two_view_terms(TwoViewPairs("InfoNCE", negatives), y_true, y_pred,
                           temperature, gather, normalize, tile_size)
    return info_nce_of_terms(terms)


@keras_contrast_export("keras_contrast.losses.InfoNCE")
class InfoNCE(ContrastiveLoss):
    """InfoNCE / NT-Xent contrastive loss (SimCLR).

    Each sample's two views are a positive pair; every other embedding of
    the (global, gathered) batch is a negative. Under a `tf.distribute`
    strategy the loss and its gradients equal the single-device loss on
    the global batch. The formula: `info_nce`, docs/design.md §2.1.

    Args:
        temperature: float > 0. Softmax temperature τ.
        negatives: `"all"` (both views of every other sample, SimCLR's
            2N-2 negatives) or `"cross"` (only the other view, as CLIP).
        {shared_args}

    Call arguments:
        y_true: None (self-supervised), or integer class ids `(batch,)`
            which make every same-class embedding a positive (supervised
            contrastive). Labels passed to `fit` reach the loss, so pass
            none for self-supervised training.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.InfoNCE(0.1))
    >>> model.fit(x_views, epochs=10)  # no labels needed

    Reference:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.
    """

    def __init__(self, temperature=0.1, negatives="all", *, name="info_nce", **kwargs):
        check_negatives(negatives)
        super().__init__(info_nce, temperature, dict(negatives=negatives), name=name,
                         **kwargs)


@keras_contrast_export("keras_contrast.losses.NTXent")
class NTXent(InfoNCE):
    """NT-Xent, SimCLR's name for `InfoNCE(negatives="all")`.

    Same arguments as `InfoNCE`.
    """

    def __init__(self, temperature=0.1, *, name="nt_xent", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)
