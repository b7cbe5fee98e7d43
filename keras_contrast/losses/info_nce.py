"""InfoNCE / NT-Xent (SimCLR), with optional supervised positives."""

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import check_negatives
from keras_contrast.losses.contrastive_loss import two_view_loss


def info_nce(
    y_true, y_pred, temperature=0.1, negatives="all", gather=True, normalize=True,
    tile_size=None,
):
    """InfoNCE (NT-Xent) loss per sample (Chen et al., 2020; DCL eq. 1).

    For anchor z_i^(1) with positive z_i^(2) and logits s = <·,·>/τ:

        L_i = -s(z_i^(1), z_i^(2)) + log Σ_{k ≠ anchor} exp(s(z_i^(1), c_k))

    where the candidates c_k are both views of every sample
    (`negatives="all"`, the 2N-1 others of SimCLR) or only the other view
    (`negatives="cross"`). With class ids in `y_true`, every same-class
    embedding is a positive and the positive term is their mean
    (supervised contrastive, Khosla et al. 2020, L_out). The positives stay
    in the denominator, so the loss stays defined when an anchor has no
    negative (a global batch of one class): then it only pulls the
    positives together.

    Args:
        y_true: None, or integer class ids `(batch,)`.
        y_pred: `(batch, 2, dim)` embeddings of the two views.
        temperature: float or scalar tensor > 0.
        negatives: `"all"` or `"cross"`.
        gather: bool. Score local anchors against the gathered global batch.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None or int >= 1, columns per tile of the tiled path.

    Returns:
        `(batch,)` float32 (float64 for float64 embeddings or under
        `floatx() == "float64"`): the mean of each sample's two anchor
        losses.
    """
    return two_view_loss(
        y_true, y_pred, temperature, negatives, gather, normalize, "InfoNCE",
        tile_size=tile_size,
    )


@keras_contrast_export("keras_contrast.losses.InfoNCE")
class InfoNCE(ContrastiveLoss):
    """InfoNCE / NT-Xent contrastive loss (SimCLR).

    Each sample's two views are a positive pair; every other embedding of
    the (global, gathered) batch is a negative. Under a `tf.distribute`
    strategy the loss and its gradients equal the single-device loss on
    the global batch.

    Args:
        temperature: float > 0. Softmax temperature τ.
        negatives: `"all"` (both views of every other sample, SimCLR's
            2N-2 negatives) or `"cross"` (only the other view, as CLIP).
        gather: bool. Gather embeddings from all replicas (with gradients)
            when called inside a distribution strategy.
        normalize: bool. L2-normalise the embeddings (cosine similarity).
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; see README "Tiled losses").
        reduction: Keras reduction, default `"sum_over_batch_size"`.
        name: str.

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
        Representations", 2020.
    """

    def __init__(
        self,
        temperature=0.1,
        negatives="all",
        gather=True,
        normalize=True,
        tile_size=None,
        reduction="sum_over_batch_size",
        name="info_nce",
        dtype=None,
    ):
        check_negatives(negatives)
        super().__init__(
            info_nce,
            temperature=temperature,
            gather=gather,
            normalize=normalize,
            reduction=reduction,
            name=name,
            dtype=dtype,
            tile_size=tile_size,
            negatives=negatives,
        )

@keras_contrast_export("keras_contrast.losses.NTXent")
class NTXent(InfoNCE):
    """NT-Xent, SimCLR's name for `InfoNCE(negatives="all")`.

    Same arguments as `InfoNCE`.
    """

    def __init__(self, temperature=0.1, name="nt_xent", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)
