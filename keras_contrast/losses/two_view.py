"""What the two-view losses (InfoNCE, DCL, DCLW, CLIP) share: from
`(batch, 2, dim)` embeddings to each anchor's `AnchorTerms`, both views
anchoring in turn (view 0 → 1, view 1 → 0).

A loss describes itself with a `TwoViewPairs` and applies its formula to
the `TwoViewTerms` that `two_view_terms` returns.
"""

import dataclasses

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.losses._checks import check_embeddings
from keras_contrast.losses._checks import check_labels
from keras_contrast.losses._checks import check_options
from keras_contrast.losses._checks import positive_tensor
from keras_contrast.losses.global_batch import GlobalBatch
from keras_contrast.losses.global_batch import compute_dtype
from keras_contrast.losses.global_batch import prepare_embeddings
from keras_contrast.losses.kernels import class_terms
from keras_contrast.losses.kernels import one_positive_terms
from keras_contrast.losses.kernels import pair_columns
from keras_contrast.losses.kernels import pair_masks
from keras_contrast.losses.kernels import tiled_class_terms


@keras_contrast_export("keras_contrast.losses.TwoViewPairs")
@dataclasses.dataclass(frozen=True)
class TwoViewPairs:
    """The anchor/candidate structure of one two-view loss.

    Attributes:
        loss_name: str, how error messages name the loss.
        negatives: `"all"` (both views of every other sample) or
            `"cross"` (only the other view's rows).
        use_labels: bool. Class ids in `y_true` make every same-class
            embedding a positive; False ignores `y_true`.
        positives_in_denominator: bool. True (InfoNCE, CLIP) keeps the
            class-id positives in the log-sum-exp; False (DCL) leaves them
            out, so that an anchor of a one-class global batch has no
            negatives (`TwoViewTerms.has_negatives`).
    """

    loss_name: str
    negatives: str = "all"
    use_labels: bool = True
    positives_in_denominator: bool = True


@dataclasses.dataclass(frozen=True)
class TwoViewTerms:
    """Every local anchor's terms, per anchor view.

    Attributes:
        batch: the `GlobalBatch`.
        views: (`AnchorTerms` of view 0 → 1, of view 1 → 0).
        class_positives: bool. True: the positives are class ids' (mean
            positive logit, denominator as `TwoViewPairs` says); False:
            one positive each, left out of `log_denominator`.
        has_negatives: bool scalar tensor, or None when the positives stay
            in the denominator (it is then never empty).
    """

    batch: GlobalBatch
    views: tuple
    class_positives: bool
    has_negatives: tf.Tensor = None

    def mean_over_views(self, anchor_loss):
        """Each sample's mean of `anchor_loss(terms)` over its two anchors."""
        return (anchor_loss(self.views[0]) + anchor_loss(self.views[1])) / 2.0


@keras_contrast_export("keras_contrast.losses.two_view_terms")
def two_view_terms(pairs, y_true, y_pred, temperature, gather=True, normalize=True,
                   tile_size=None):
    """Checks the arguments, builds the global batch and runs the kernels.

    Args:
        pairs: the loss's `TwoViewPairs`.
        y_true: None, or integer class ids `(batch,)` (ignored unless
            `pairs.use_labels`).
        y_pred: `(batch, 2, dim)`.
        temperature: float or scalar tensor > 0.
        gather: bool. Score local anchors against the gathered global batch.
        normalize: bool. L2-normalise the embeddings.
        tile_size: None (dense logits) or int >= 1 (module `tiled`).

    Returns:
        `TwoViewTerms`, in float32 (float64, see `compute_dtype`).
    """
    name, negatives = pairs.loss_name, pairs.negatives
    check_options(temperature, gather, normalize, tile_size, negatives)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 2, name, gather)
    labels = check_labels(y_true, y_pred, name) if pairs.use_labels else None
    dtype = compute_dtype(y_pred)
    z = prepare_embeddings(y_pred, normalize, name, dtype)
    tau = positive_tensor(temperature, "temperature", name, dtype)
    batch = GlobalBatch(z, labels, gather, name)
    has_negatives = None
    if not pairs.positives_in_denominator:
        if labels is not None:
            # Every anchor has a negative iff the global batch holds 2 classes.
            has_negatives = tf.reduce_min(batch.labels) < tf.reduce_max(batch.labels)
        else:
            has_negatives = batch.size >= 2
    drop_positives = not pairs.positives_in_denominator
    if labels is not None and tile_size is not None:
        views = [tiled_class_terms(batch, view, negatives, tau, drop_positives, tile_size)
                 for view in (0, 1)]
    elif labels is not None:
        views = []
        for view in (0, 1):
            candidates, positive_mask, self_mask = pair_masks(batch, view, negatives)
            views.append(class_terms(batch.local[view], candidates, tau, positive_mask,
                                     self_mask, drop_positives, has_negatives))
    else:
        cross_logits = None
        if negatives == "cross" and not batch.gathered() and tile_size is None:
            # Without a gather the B→A logits are the transpose of the A→B ones.
            view_0_to_1 = tf.matmul(batch.local[0], batch.local[1], transpose_b=True) / tau
            cross_logits = (view_0_to_1, tf.transpose(view_0_to_1))
        views = []
        for view in (0, 1):
            candidates, excluded_columns = pair_columns(batch, view, negatives)
            views.append(one_positive_terms(
                batch.local[view], batch.local[1 - view], candidates, tau, excluded_columns,
                logits=cross_logits[view] if cross_logits else None, tile_size=tile_size))
    return TwoViewTerms(batch, tuple(views), labels is not None, has_negatives)
