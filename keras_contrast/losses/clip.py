"""CLIP-style symmetric two-tower contrastive loss."""

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import two_view_loss


def clip_loss(y_true, y_pred, temperature=0.07, gather=True, normalize=True, tile_size=None):
    """Symmetric cross-entropy of a two-tower model per sample (CLIP).

        L_i = ( CE_i(A·Bᵀ/τ) + CE_i(B·Aᵀ/τ) ) / 2

    where view 0 of `y_pred` is tower A and view 1 tower B, local rows are
    scored against the global (gathered) columns of the other tower, and
    the target of row i is its own pair. With ids in `y_true` (e.g. a word
    that appears twice in a batch), all pairs of the same id are positives,
    so duplicates are not treated as negatives. As in InfoNCE the positives
    stay in the denominator, so a batch of one id keeps a finite loss.

    Args:
        y_true: None, or integer pair/class ids `(batch,)`.
        y_pred: `(batch, 2, dim)`: `[tower A, tower B]`.
        temperature: float or scalar tensor > 0 (a learnable temperature's
            value is passed here).
        gather: bool.
        normalize: bool.
        tile_size: None or int >= 1, columns per tile of the tiled path.

    Returns:
        `(batch,)` float32 (float64 for float64 embeddings or under
        `floatx() == "float64"`).
    """
    return two_view_loss(
        y_true, y_pred, temperature, "cross", gather, normalize, "CLIPLoss",
        tile_size=tile_size,
    )


@keras_contrast_export("keras_contrast.losses.CLIPLoss")
class CLIPLoss(ContrastiveLoss):
    """CLIP's symmetric contrastive loss between two towers.

    `(CE(A·Bᵀ/τ) + CE(B·Aᵀ/τ)) / 2` with the batch's other pairs as
    negatives, gathered across replicas. A model that learns its temperature
    (`keras_contrast.layers.LearnableTemperature`) passes it at call time by
    overriding `compute_loss`:

        loss = self.loss(y, y_pred, sample_weight,
                         temperature=self.temperature_layer())

    Args:
        temperature: float > 0. Fixed temperature (CLIP's initial 0.07),
            used when none is passed at call time.
        gather: bool. Gather embeddings across replicas.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None (dense logits) or int >= 1: compute the log-sum-exp
            over tiles of that many columns with a recomputing custom
            gradient, never holding the `(batch, N)` logits (equal to the
            dense loss up to float rounding; see README "Tiled losses").
        reduction: Keras reduction.
        name: str.

    Call arguments:
        y_true: None, or ids `(batch,)`; equal ids are positives.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.
        temperature: optional scalar tensor overriding `temperature`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.CLIPLoss())

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural
        Language Supervision", 2021.
    """

    def __init__(
        self,
        temperature=0.07,
        gather=True,
        normalize=True,
        tile_size=None,
        reduction="sum_over_batch_size",
        name="clip_loss",
        dtype=None,
    ):
        super().__init__(
            clip_loss,
            temperature=temperature,
            gather=gather,
            normalize=normalize,
            reduction=reduction,
            name=name,
            dtype=dtype,
            tile_size=tile_size,
        )
