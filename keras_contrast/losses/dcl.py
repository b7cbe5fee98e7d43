"""Decoupled Contrastive Learning losses: DCL and its weighted form DCLW
(docs/design.md §2.3, §2.4)."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_bool
from keras_contrast.losses._checks import check_negatives
from keras_contrast.losses._checks import check_positive
from keras_contrast.losses._checks import configured_number
from keras_contrast.losses._checks import positive_tensor
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import per_sample_loss
from keras_contrast.losses.two_view import TwoViewPairs
from keras_contrast.losses.two_view import two_view_terms


def dcl_from_logits(log_negatives, positive_logit, positive_weight=None):
    """DCL of anchors from the log-sum-exp of their negatives `lse⁻` and
    their positive's (or positives' mean) logit `s⁺`: `lse⁻ - w·s⁺`, with
    `w` = 1 (DCL) or DCLW's `positive_weight`. The positive is not in the
    denominator: that removes InfoNCE's negative-positive coupling."""
    if positive_weight is not None:
        positive_logit = positive_weight * positive_logit
    return log_negatives - positive_logit


def _decoupled_loss(terms, positive_weight=None):
    """Per-sample DCL(W) from `two_view_terms`: the mean of the two anchor
    losses, and 0 (with a zero gradient) where no anchor has a negative:
    -inf (an empty log-sum-exp) becomes 0; the tiled and masked kernels
    give that branch a zero, finite gradient."""
    values = terms.mean_over_views(
        lambda view: dcl_from_logits(view.log_denominator, view.positive_logit,
                                     positive_weight))
    return tf.where(terms.has_negatives, values, tf.zeros_like(values))


@keras_contrast_export("keras_contrast.losses.dcl")
@per_sample_loss
def dcl(
    y_true, y_pred, temperature=0.1, negatives="all", gather=True, normalize=True,
    tile_size=None,
):
    """Decoupled contrastive loss per sample: the DCL loss after
    Proposition 1 of Yeh et al., ECCV 2022 (arXiv 2110.06848);
    docs/design.md §2.3.

        L_i = -<z_i^(1), z_i^(2)>/τ + log Σ_{l∈{1,2}, j≠i} exp(<z_i^(1), z_j^(l)>/τ)

    The positive is removed from the denominator, which removes InfoNCE's
    negative-positive coupling multiplier. With class ids in `y_true`, every
    same-class embedding is a positive and all of them leave the
    denominator.

    An anchor without negatives has an empty denominator (log 0 = -inf).
    That happens only when the global batch holds a single class (class ids
    in `y_true`) or a single sample (a dynamic batch of one; a static one is
    rejected), and then for every anchor at once: its loss is defined as 0,
    with a zero gradient, so such a batch leaves the weights unchanged
    instead of making the loss -inf.

    Args:
        y_true: None, or integer class ids `(batch,)`.
        y_pred: `(batch, 2, dim)`.
        temperature: float or scalar tensor > 0.
        negatives: `"all"` or `"cross"`.
        {options}: the mean of each sample's two anchor losses.
    """
    pairs = TwoViewPairs("DCL", negatives, positives_in_denominator=False)
    terms = two_view_terms(pairs, y_true, y_pred, temperature, gather, normalize, tile_size)
    return _decoupled_loss(terms)


def von_mises_fisher_weight(sigma=0.5, weight_stop_gradient=False):
    """DCLW's positive weight over the global batch: the DCLW weight after
    Proposition 1 of Yeh et al., ECCV 2022 (arXiv 2110.06848);
    docs/design.md §2.4.

        w_i = 2 - N · softmax_j(<z_j^(1), z_j^(2)> / σ)_i,   E[w] = 1.

    Returns a function of a `GlobalBatch` giving the local samples' `(b,)`
    weights; the softmax runs over the gathered global batch. `sigma` is a
    number or a scalar tensor > 0.
    """
    check_positive("sigma", sigma)
    weight_stop_gradient = check_bool("weight_stop_gradient", weight_stop_gradient)

    def weight(batch):
        similarity = tf.reduce_sum(batch.views[0] * batch.views[1], axis=1)
        size = tf.cast(batch.size, similarity.dtype)
        scale = positive_tensor(sigma, "sigma", "DCLW", similarity.dtype)
        weights = 2.0 - size * tf.nn.softmax(similarity / scale)
        weights = tf.gather(weights, batch.rows())
        return tf.stop_gradient(weights) if weight_stop_gradient else weights

    return weight


@keras_contrast_export("keras_contrast.losses.dclw")
@per_sample_loss
def dclw(
    y_true,
    y_pred,
    temperature=0.1,
    sigma=0.5,
    negatives="all",
    gather=True,
    normalize=True,
    weight_stop_gradient=False,
    tile_size=None,
):
    """Weighted decoupled contrastive loss per sample: the DCL loss with the
    DCLW weight after Proposition 1 of Yeh et al., ECCV 2022 (arXiv
    2110.06848); docs/design.md §2.4.

        L_i = -w_i <z_i^(1), z_i^(2)>/τ + log Σ_{l∈{1,2}, j≠i} exp(<z_i^(1), z_j^(l)>/τ)

    with the von Mises-Fisher weight `w_i = 2 - N·softmax_j(s_jj/σ)_i` taken
    over the global batch (`von_mises_fisher_weight`). `y_true` is ignored.
    A global batch of one sample (dynamic) has no negatives: its loss is 0
    (see `dcl`).

    Args:
        y_true: ignored.
        y_pred: `(batch, 2, dim)`.
        temperature: float or scalar tensor > 0.
        sigma: float or scalar tensor > 0, the weight's scale σ.
        negatives: `"all"` or `"cross"`.
        weight_stop_gradient: bool. False (the paper's reference code)
            back-propagates through w; True treats w as a constant (as
            lightly does).
        {options}.
    """
    del y_true
    weight = von_mises_fisher_weight(sigma, weight_stop_gradient)
    pairs = TwoViewPairs("DCLW", negatives, use_labels=False, positives_in_denominator=False)
    terms = two_view_terms(pairs, None, y_pred, temperature, gather, normalize, tile_size)
    return _decoupled_loss(terms, weight(terms.batch))


@keras_contrast_export("keras_contrast.losses.DCL")
class DCL(ContrastiveLoss):
    """Decoupled Contrastive Learning loss.

    Removes the positive pair from the InfoNCE denominator, which removes the
    negative-positive coupling that makes InfoNCE need large batches. The
    formula: `dcl`, docs/design.md §2.3.

    No negatives: with class ids, a global batch of a single class leaves
    no negative in any anchor's denominator. Its loss is defined as 0 (per
    sample and reduced, with a zero gradient), where the formula would give
    -inf; with two classes or more every anchor has negatives.

    Args:
        temperature: float > 0. Softmax temperature τ.
        negatives: `"all"` (both views of every other sample, as SimCLR) or
            `"cross"` (only the other view, as CLIP).
        {shared_args}

    Call arguments:
        y_true: None, or integer class ids `(batch,)` (same-class embeddings
            are positives and leave the denominator).
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.DCL(0.1))

    Reference:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022
        (arXiv 2110.06848).
    """

    def __init__(self, temperature=0.1, negatives="all", *, name="dcl", **kwargs):
        check_negatives(negatives)
        super().__init__(dcl, temperature, dict(negatives=negatives), name=name, **kwargs)


@keras_contrast_export("keras_contrast.losses.DCLW")
class DCLW(ContrastiveLoss):
    """Weighted Decoupled Contrastive Learning loss.

    DCL with the positive term weighted by the von Mises-Fisher weight
    `w_i = 2 - N·softmax_j(<z_j^(1), z_j^(2)>/σ)_i`, which up-weights hard
    positives; E[w] = 1 over the global batch (the softmax runs over the
    gathered batch under a strategy, so 4 replicas x 8 equal 1 device x 32).
    The formula: `dclw`, docs/design.md §2.4.

    Args:
        temperature: float > 0. Softmax temperature τ.
        sigma: float > 0. Scale σ of the weight (paper: 0.5).
        negatives: `"all"` or `"cross"`.
        weight_stop_gradient: bool. False (default, the paper's reference
            code) differentiates through the weight; True treats it as a
            constant, as lightly's implementation does.
        {shared_args}

    Call arguments:
        y_true: ignored.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.DCLW())

    Reference:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022
        (arXiv 2110.06848).
    """

    def __init__(self, temperature=0.1, sigma=0.5, negatives="all",
                 *, weight_stop_gradient=False, name="dclw", **kwargs):
        check_negatives(negatives)
        sigma = configured_number("sigma", sigma)
        weight_stop_gradient = check_bool("weight_stop_gradient", weight_stop_gradient)
        options = dict(sigma=sigma, negatives=negatives,
                       weight_stop_gradient=weight_stop_gradient)
        super().__init__(dclw, temperature, options, name=name, **kwargs)
