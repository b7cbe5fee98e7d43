"""CLIP-style symmetric two-tower contrastive loss (docs/design.md §2.5)."""

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import per_sample_loss
from keras_contrast.losses.info_nce import info_nce_of_terms
from keras_contrast.losses.two_view import TwoViewPairs
from keras_contrast.losses.two_view import two_view_terms

_PAIRS = TwoViewPairs("CLIPLoss", negatives="cross")


@keras_contrast_export("keras_contrast.losses.clip_loss")
@per_sample_loss
def clip_loss(y_true, y_pred, temperature=0.07, gather=True, normalize=True, tile_size=None):
    """Symmetric cross-entropy of a two-tower model per sample (CLIP;
    docs/design.md §2.5).

        L_i = ( CE_i(A·Bᵀ/τ) + CE_i(B·Aᵀ/τ) ) / 2

    where view 0 of `y_pred` is tower A and view 1 tower B, local rows are
    scored against the global (gathered) columns of the other tower, and
    the target of row i is its own pair: InfoNCE with `negatives="cross"`.
    With ids in `y_true` (e.g. a word that appears twice in a batch), all
    pairs of the same id are positives, so duplicates are not treated as
    negatives. As in InfoNCE the positives stay in the denominator, so a
    batch of one id keeps a finite loss.

    Args:
        y_true: None, or integer pair/class ids `(batch,)`.
        y_pred: `(batch, 2, dim)`: `[tower A, tower B]`.
        temperature: float or scalar tensor > 0 (a learnable temperature's
            value is passed here).
        {options}.
    """
    terms = two_view_terms(_PAIRS, y_true, y_pred, temperature, gather, normalize, tile_size)
    return info_nce_of_terms(terms)


@keras_contrast_export("keras_contrast.losses.CLIPLoss")
class CLIPLoss(ContrastiveLoss):
    """CLIP's symmetric contrastive loss between two towers.

    `(CE(A·Bᵀ/τ) + CE(B·Aᵀ/τ)) / 2` with the batch's other pairs as
    negatives, gathered across replicas (`clip_loss`, docs/design.md
    §2.5). A model that learns its temperature
    (`keras_contrast.layers.LearnableTemperature`) passes it at call time by
    overriding `compute_loss`:

        loss = self.loss(y, y_pred, sample_weight,
                         temperature=self.temperature_layer())

    Args:
        temperature: float > 0. Fixed temperature (CLIP's initial 0.07),
            used when none is passed at call time.
        {shared_args}

    Call arguments:
        y_true: None, or ids `(batch,)`; equal ids are positives.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`.
        temperature: optional scalar tensor overriding `temperature`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.CLIPLoss())

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural
        Language Supervision", ICML 2021.
    """

    def __init__(self, temperature=0.07, *, name="clip_loss", **kwargs):
        super().__init__(clip_loss, temperature, name=name, **kwargs)
