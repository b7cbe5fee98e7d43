"""Contrastive losses: `(batch, views, dim)` embeddings in, `(batch,)` out.

Each loss's module holds its math (`info_nce`, `dcl`, `clip`, `siglip`,
`mocov3`, `queue`); what they share, read top-down: `contrastive_loss` (the base
class: shared arguments, `__call__`, config), `two_view` (a two-view
loss's description and its terms), `global_batch` (normalisation, the
gathered batch, the reductions), `kernels` and `tiled` (the per-anchor
log-sum-exps and positive logits, dense and tiled), `_checks` (argument
checks).
"""

from keras_contrast.losses.clip import CLIPLoss
from keras_contrast.losses.clip import clip_loss
from keras_contrast.losses.contrastive_loss import ContrastiveLoss
from keras_contrast.losses.dcl import DCL
from keras_contrast.losses.dcl import DCLW
from keras_contrast.losses.dcl import dcl
from keras_contrast.losses.dcl import dclw
from keras_contrast.losses.global_batch import GlobalBatch
from keras_contrast.losses.global_batch import l2_normalize
from keras_contrast.losses.global_batch import reduce_contrastive
from keras_contrast.losses.info_nce import InfoNCE
from keras_contrast.losses.info_nce import NTXent
from keras_contrast.losses.info_nce import info_nce
from keras_contrast.losses.kernels import class_terms
from keras_contrast.losses.kernels import one_positive_terms
from keras_contrast.losses.mocov3 import MoCoV3Loss
from keras_contrast.losses.mocov3 import mocov3_loss
from keras_contrast.losses.queue import queue_contrastive_loss
from keras_contrast.losses.siglip import SigLIPLoss
from keras_contrast.losses.siglip import siglip_loss
from keras_contrast.losses.siglip import tiled_sigmoid_pair_sum
from keras_contrast.losses.tiled import tiled_logsumexp
from keras_contrast.losses.two_view import TwoViewPairs
from keras_contrast.losses.two_view import two_view_terms

__all__ = [
    "CLIPLoss",
    "ContrastiveLoss",
    "DCL",
    "DCLW",
    "GlobalBatch",
    "InfoNCE",
    "MoCoV3Loss",
    "NTXent",
    "SigLIPLoss",
    "TwoViewPairs",
    "class_terms",
    "clip_loss",
    "dcl",
    "dclw",
    "info_nce",
    "l2_normalize",
    "mocov3_loss",
    "one_positive_terms",
    "queue_contrastive_loss",
    "reduce_contrastive",
    "siglip_loss",
    "tiled_logsumexp",
    "tiled_sigmoid_pair_sum",
    "two_view_terms",
]
