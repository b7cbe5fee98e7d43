"""SigLIP's sigmoid pairwise loss between two towers (docs/design.md §2.11).

Every (i, j) pair of tower A's row i and tower B's row j is an independent
binary decision with logit `ℓ_ij = <x_i, y_j>/τ + b`: no normalisation over
the batch. Under a strategy each replica scores its local rows of A against
the gathered rows of B (with gradients), so the N² pairs of the global
batch are each covered once, on the replica that holds row i.
"""

import tensorflow as tf

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import is_number
from keras_contrast.losses._checks import check_bias
from keras_contrast.losses._checks import check_embeddings
from keras_contrast.losses._checks import check_labels
from keras_contrast.losses._checks import check_options
from keras_contrast.losses._checks import finite_tensor
from keras_contrast.losses._checks import positive_tensor
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.contrastive_loss import per_sample_loss
from keras_contrast.losses.global_batch import GlobalBatch
from keras_contrast.losses.global_batch import compute_dtype
from keras_contrast.losses.global_batch import prepare_embeddings
from keras_contrast.losses.tiled import padded_tiles

_NAME = "SigLIPLoss"


def _pair_mask(row_ids, column_ids):
    """bool `(b, M)`: row i and column j are a pair (equal ids), z_ij = +1."""
    return tf.equal(row_ids[:, None], column_ids[None, :])


def _signed(pairs, logits):
    """`z_ij ℓ_ij`, selected from the pair mask (no float sign matrix)."""
    return tf.where(pairs, logits, -logits)


@keras_contrast_export("keras_contrast.losses.tiled_sigmoid_pair_sum")
def tiled_sigmoid_pair_sum(anchors, candidates, temperature, bias, row_ids, column_ids,
                           tile_size):
    """`Σ_j softplus(-z_ij (<a_i, c_j>/τ + b))` for every anchor row, over
    tiles of `tile_size` columns, in memory O(b · tile_size).

    The backward pass recomputes each tile's logits. With d_ij =
    ∂softplus(-z ℓ)/∂ℓ = -z_ij σ(-z_ij ℓ_ij) and upstream gradient g_i,

        ∂/∂a_i = Σ_j g_i d_ij c_j / τ,   ∂/∂c_j = Σ_i g_i d_ij a_i / τ,
        ∂/∂τ = -Σ_ij g_i d_ij (ℓ_ij - b) / τ,   ∂/∂b = Σ_ij g_i d_ij.

    Args:
        anchors: `(b, dim)` float32 or float64.
        candidates: `(M, dim)`, same dtype.
        temperature: scalar tensor > 0, same dtype.
        bias: scalar tensor, same dtype.
        row_ids: int32 `(b,)`; column_ids: int32 `(M,)`. Equal ids are
            pairs (z = +1).
        tile_size: int >= 1, columns per tile (the last may be smaller).

    Returns:
        `(b,)`.
    """
    dtype = anchors.dtype
    num_columns = tf.shape(candidates)[0]
    dim = candidates.shape[-1]
    zero = tf.zeros([], dtype)

    @tf.custom_gradient
    def pair_sum(a, c, tau, b):
        # Tiles of the static size tile_size (XLA), the padding masked.
        num_tiles, padded, ids = padded_tiles(c, tile_size, column_ids)

        def tile(j):
            start = j * tile_size
            columns = tf.slice(padded, [start, 0], [tile_size, -1])
            logits = tf.matmul(a, columns, transpose_b=True) / tau + b
            pairs = _pair_mask(row_ids, tf.slice(ids, [start], [tile_size]))
            real = (start + tf.range(tile_size) < num_columns)[None, :]
            return columns, logits, pairs, real

        def forward(j, total):
            _, logits, pairs, real = tile(j)
            terms = tf.where(real, tf.nn.softplus(-_signed(pairs, logits)), zero)
            return j + 1, total + tf.reduce_sum(terms, axis=1)

        _, result = tf.while_loop(
            lambda j, _: j < num_tiles, forward,
            (tf.constant(0), tf.zeros([tf.shape(a)[0]], dtype)), parallel_iterations=1)

        def gradient(upstream):
            def backward(j, grad_a, grad_tau, grad_b, grad_c):
                columns, logits, pairs, real = tile(j)
                # d_ij = -z_ij σ(-z_ij ℓ_ij), times g_i.
                weighted = tf.where(real, upstream[:, None] * -_signed(
                    pairs, tf.sigmoid(-_signed(pairs, logits))), zero)
                grad_a += tf.matmul(weighted, columns) / tau
                grad_tau -= tf.reduce_sum(weighted * (logits - b)) / tau
                grad_b += tf.reduce_sum(weighted)
                grad_c = grad_c.write(j, tf.matmul(weighted, a, transpose_a=True) / tau)
                return j + 1, grad_a, grad_tau, grad_b, grad_c

            columns_gradient = tf.TensorArray(dtype, size=num_tiles,
                                              element_shape=tf.TensorShape([tile_size, dim]))
            _, grad_a, grad_tau, grad_b, columns_gradient = tf.while_loop(
                lambda j, *_: j < num_tiles, backward,
                (tf.constant(0), tf.zeros_like(a), zero, zero, columns_gradient),
                parallel_iterations=1)
            return grad_a, columns_gradient.concat()[:num_columns], grad_tau, grad_b

        return result, gradient

    return pair_sum(anchors, candidates, temperature, bias)


@keras_contrast_export("keras_contrast.losses.siglip_loss")
@per_sample_loss
def siglip_loss(y_true, y_pred, temperature=0.1, bias=-10.0, gather=True, normalize=True,
                tile_size=None):
    """SigLIP's sigmoid loss per sample (Zhai et al., ICCV 2023;
    docs/design.md §2.11).

        L_i = Σ_j softplus(-z_ij (<x_i, y_j>/τ + b)) = -Σ_j log σ(z_ij ℓ_ij)

    with x = view 0 (tower A), y = view 1 (tower B), j over the global
    batch, z_ij = +1 for a pair and -1 otherwise. The mean of `L_i` over
    the global batch N is SigLIP's loss `-(1/N) Σ_ij log σ(z_ij ℓ_ij)`.
    Pairs are the diagonal, or, with ids in `y_true`, every (i, j) of
    equal ids (a word that appears twice is not its own negative).

    Args:
        y_true: None, or integer pair ids `(batch,)`.
        y_pred: `(batch, 2, dim)`: `[tower A, tower B]`.
        temperature: float or scalar tensor > 0; 1/τ is SigLIP's logit
            scale t (initialised at 10, τ = 0.1).
        bias: float or scalar tensor, the logit bias b (initialised at -10).
        {options}: each row of tower A's sum over the global batch.
    """
    check_options(temperature, gather, normalize, tile_size)
    check_bias(bias)
    y_pred = tf.convert_to_tensor(y_pred)
    check_embeddings(y_pred, 2, _NAME, gather)
    labels = check_labels(y_true, y_pred, _NAME)
    dtype = compute_dtype(y_pred)
    z = prepare_embeddings(y_pred, normalize, _NAME, dtype)
    tau = positive_tensor(temperature, "temperature", _NAME, dtype)
    b = finite_tensor(bias, "bias", _NAME, dtype)
    # Only tower B is gathered: each pair is scored once, by row i's replica.
    batch = GlobalBatch(z, labels, gather, _NAME, gathered_views=(1,))
    anchors, candidates = batch.local[0], batch.views[1]
    if labels is None:
        row_ids, column_ids = batch.rows(), tf.range(batch.size)
    else:
        row_ids, column_ids = batch.local_labels, batch.labels
    if tile_size is not None:
        return tiled_sigmoid_pair_sum(anchors, candidates, tau, b, row_ids, column_ids,
                                      tile_size)
    logits = tf.matmul(anchors, candidates, transpose_b=True) / tau + b
    return tf.reduce_sum(tf.nn.softplus(-_signed(_pair_mask(row_ids, column_ids), logits)),
                         axis=1)


@keras_contrast_export("keras_contrast.losses.SigLIPLoss")
class SigLIPLoss(ContrastiveLoss):
    """SigLIP's sigmoid pairwise loss between two towers.

    Each (i, j) pair of the global batch is a binary decision on the logit
    `<x_i, y_j>/τ + b` (positive for a pair, negative otherwise), with no
    softmax over the batch (`siglip_loss`, docs/design.md §2.11). Exact
    across replicas: local rows of tower A are scored against the gathered
    tower B. A model that learns τ and b (`DualEncoder(learnable_bias=True)`)
    passes them at call time:

        loss = self.loss(y, y_pred, sample_weight,
                         temperature=tau_layer(), bias=self.logit_bias)

    Args:
        temperature: float > 0, used when none is passed at call time
            (SigLIP's initial 0.1, a logit scale of 10).
        bias: float, the logit bias used when none is passed at call time
            (SigLIP's initial -10, which keeps the N² - N negatives' initial
            loss small).
        {shared_args}

    Call arguments:
        y_true: None, or pair ids `(batch,)`; equal ids are pairs.
        y_pred: `(batch, 2, dim)`.
        sample_weight: optional `(batch,)`, weighting tower A's rows.
        temperature: optional scalar tensor overriding `temperature`.
        bias: optional scalar tensor overriding `bias`.

    Example:
    >>> model.compile(optimizer="adamw", loss=keras_contrast.losses.SigLIPLoss())

    Reference:
        Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image
        Pre-Training", ICCV 2023.
    """

    call_overrides = ("bias",)

    def __init__(self, temperature=0.1, bias=-10.0, *, name="siglip_loss", **kwargs):
        check_bias(bias)
        if not is_number(bias):
            raise TypeError(
                f"`bias` of SigLIPLoss(...) is saved in its config: pass a number, got "
                f"{bias!r}; pass a tensor at call time (`loss(y, y_pred, bias=...)`).")
        super().__init__(siglip_loss, temperature, {"bias": float(bias)}, name=name, **kwargs)
