"""Decoupled Contrastive Learning losses: DCL and its weighted form DCLW."""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import check_bool
from keras_contrast.losses.contrastive_loss import check_negatives
from keras_contrast.losses.contrastive_loss import check_positive
from keras_contrast.losses.contrastive_loss import positive_tensor
from keras_contrast.losses.contrastive_loss import two_view_loss


def dcl(
    y_true, y_pred, temperature=0.1, negatives="all", gather=True, normalize=True,
    tile_size=None,
):
    """Decoupled contrastive loss per sample (Yeh et al., 2021, eq. 6).

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
        gather: bool. Score local anchors against the gathered global batch.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None or int >= 1, columns per tile of the tiled path.

    Returns:
        `(batch,)` float32 (float64 for float64 embeddings or under
        `floatx() == "float64"`): mean of each sample's two anchor losses.
    """
    return two_view_loss(
        y_true,
        y_pred,
        temperature,
        negatives,
        gather,
        normalize,
        "DCL",
        decoupled=True,
        tile_size=tile_size,
    )


def von_mises_fisher_weight(sigma=0.5, weight_stop_gradient=False):
    """DCLW's positive weight over the global batch (Yeh et al., 2021, eq. 8).

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
    """Weighted decoupled contrastive loss per sample (Yeh et al., 2021).

        L_i = -w_i <z_i^(1), z_i^(2)>/τ + log Σ_{l∈{1,2}, j≠i} exp(<z_i^(1), z_j^(l)>/τ)

    with the von Mises-Fisher weight `w_i = 2 - N·softmax_j(s_jj/σ)_i` taken
    over the global batch. `y_true` is ignored. A global batch of one sample
    (dynamic) has no negatives: its loss is 0 (see `dcl`).

    Args:
        y_true: ignored.
        y_pred: `(batch, 2, dim)`.
        temperature: float or scalar tensor > 0.
        sigma: float or scalar tensor > 0, the weight's scale σ.
        negatives: `"all"` or `"cross"`.
        gather: bool.
        normalize: bool.
        weight_stop_gradient: bool. False (the paper's reference code)
            back-propagates through w; True treats w as a constant (as
            lightly does).
        tile_size: None or int >= 1, columns per tile of the tiled path.

    Returns:
        `(batch,)` float32 (float64, as for `dcl`).
    """
    del y_true
    check_positive("sigma", sigma)
    return two_view_loss(
        None,
        y_pred,
        temperature,
        negatives,
        gather,
        normalize,
        "DCLW",
        use_labels=False,
        decoupled=True,
        positive_weight_fn=von_mises_fisher_weight(sigma, weight_stop_gradient),
        tile_size=tile_size,
    )


@keras_contrast_export("keras_contrast.losses.DCL")
class DCL(ContrastiveLoss):
    """Decoupled Contrastive Learning loss.

    Removes the positive pair from the InfoNCE denominator, which removes the
    negative-positive coupling that makes InfoNCE need large batches.

    No negatives: with class ids, a global batch of a single class leaves
    no negative in any anchor's denominator. Its loss is defined as 0 (per
    sample and reduced, with a zero gradient), where the formula would give
    -inf; with two classes or more every anchor has negatives.

    Args:
        temperature: float > 0. Softmax temperature τ.
        negatives: `"all"` (both views of every other sample, as SimCLR) or
            `"cross"` (only the other view, as CLIP).
        gather: bool. Gather embeddings from all replicas (with gradients) when
            called inside a distribution strategy.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; see README "Tiled losses").
        reduction: Keras reduction.
        name: str.

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

    def __init__(
        self,
        temperature=0.1,
        negatives="all",
        gather=True,
        normalize=True,
        tile_size=None,
        reduction="sum_over_batch_size",
        name="dcl",
        dtype=None,
    ):
        check_negatives(negatives)
        super().__init__(
            dcl,
            temperature=temperature,
            gather=gather,
            normalize=normalize,
            reduction=reduction,
            name=name,
            dtype=dtype,
            tile_size=tile_size,
            negatives=negatives,
        )

@keras_contrast_export("keras_contrast.losses.DCLW")
class DCLW(ContrastiveLoss):
    """Weighted Decoupled Contrastive Learning loss.

    DCL with the positive term weighted by the von Mises-Fisher weight
    `w_i = 2 - N·softmax_j(<z_j^(1), z_j^(2)>/σ)_i`, which up-weights hard
    positives; E[w] = 1 over the global batch (the softmax runs over the
    gathered batch under a strategy, so 4 replicas x 8 equal 1 device x 32).

    Args:
        temperature: float > 0. Softmax temperature τ.
        sigma: float > 0. Scale σ of the weight (paper: 0.5).
        negatives: `"all"` or `"cross"`.
        gather: bool. Gather embeddings across replicas.
        normalize: bool. L2-normalise the embeddings.
        weight_stop_gradient: bool. False (default, the paper's reference
            code) differentiates through the weight; True treats it as a
            constant, as lightly's implementation does.
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; see README "Tiled losses").
        reduction: Keras reduction.
        name: str.

    Call arguments:
        y_true: ignored.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.DCLW())

    Reference:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022.
    """

    def __init__(
        self,
        temperature=0.1,
        sigma=0.5,
        negatives="all",
        gather=True,
        normalize=True,
        weight_stop_gradient=False,
        tile_size=None,
        reduction="sum_over_batch_size",
        name="dclw",
        dtype=None,
    ):
        check_negatives(negatives)
        check_positive("sigma", sigma, allow_tensor=False)
        check_bool("weight_stop_gradient", weight_stop_gradient)
        super().__init__(
            dclw,
            temperature=temperature,
            gather=gather,
            normalize=normalize,
            reduction=reduction,
            name=name,
            dtype=dtype,
            tile_size=tile_size,
            sigma=sigma if isinstance(sigma, (int, float)) else float(sigma),
            negatives=negatives,
            weight_stop_gradient=bool(weight_stop_gradient),
        )
