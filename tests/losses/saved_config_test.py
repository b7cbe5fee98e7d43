"""Configs written by the losses before their restructuring (issue 16,
captured from that code with `keras.saving.serialize_keras_object`) still
load: to the same class, the same config and the loss the NumPy reference
computes."""

import json

import keras
import numpy as np
import pytest

from keras_contrast import losses
from tests import test_case
from tests.losses import reference

SAVED = json.loads("""[
 {"module": "keras_contrast.losses.info_nce", "class_name": "InfoNCE",
  "config": {"name": "info_nce", "reduction": "sum", "temperature": 0.2, "gather": true,
             "normalize": true, "tile_size": 4, "negatives": "cross"},
  "registered_name": "keras_contrast>InfoNCE"},
 {"module": "keras_contrast.losses.info_nce", "class_name": "NTXent",
  "config": {"name": "nt_xent", "reduction": "sum_over_batch_size", "temperature": 0.3,
             "gather": true, "normalize": true, "tile_size": null, "negatives": "all"},
  "registered_name": "keras_contrast>NTXent"},
 {"module": "keras_contrast.losses.dcl", "class_name": "DCL",
  "config": {"name": "dcl", "reduction": "sum_over_batch_size", "temperature": 0.1,
             "gather": false, "normalize": true, "tile_size": null, "negatives": "all"},
  "registered_name": "keras_contrast>DCL"},
 {"module": "keras_contrast.losses.dcl", "class_name": "DCLW",
  "config": {"name": "dclw", "reduction": "sum_over_batch_size", "temperature": 0.2,
             "gather": true, "normalize": false, "tile_size": null, "sigma": 0.7,
             "negatives": "all", "weight_stop_gradient": true},
  "registered_name": "keras_contrast>DCLW"},
 {"module": "keras_contrast.losses.clip", "class_name": "CLIPLoss",
  "config": {"name": "clip_loss", "reduction": "sum_over_batch_size", "temperature": 0.05,
             "gather": true, "normalize": true, "tile_size": 8},
  "registered_name": "keras_contrast>CLIPLoss"},
 {"module": "keras_contrast.losses.mocov3", "class_name": "MoCoV3Loss",
  "config": {"name": "mocov3_loss", "reduction": "none", "temperature": 0.25,
             "gather": true, "normalize": true, "tile_size": null},
  "registered_name": "keras_contrast>MoCoV3Loss"}
]""")

# The NumPy reference of each saved loss, reduced as its config says.
REFERENCES = {
    "InfoNCE": (2, lambda y: np.sum(reference.two_view(y, 0.2, "cross", "infonce"))),
    "NTXent": (2, lambda y: np.mean(reference.two_view(y, 0.3, "all", "infonce"))),
    "DCL": (2, lambda y: np.mean(reference.two_view(y, 0.1, "all", "dcl"))),
    "DCLW": (2, lambda y: np.mean(reference.two_view(
        y, 0.2, "all", "dclw", sigma=0.7, normalize_embeddings=False))),
    "CLIPLoss": (2, lambda y: np.mean(reference.clip(y, 0.05))),
    "MoCoV3Loss": (4, lambda y: reference.mocov3(y, 0.25)),
}


@pytest.mark.parametrize("saved", SAVED, ids=lambda saved: saved["class_name"])
def test_saved_config_loads_to_the_same_loss(saved):
    loss = keras.saving.deserialize_keras_object(saved)
    assert type(loss) is getattr(losses, saved["class_name"])
    assert loss.get_config() == saved["config"]
    views, expected = REFERENCES[saved["class_name"]]
    y = np.random.default_rng(5).normal(size=(6, views, 4)).astype("float32")
    test_case.assert_all_close(loss(None, y).numpy(), expected(y))


@pytest.mark.parametrize("make", [losses.InfoNCE, losses.NTXent, losses.DCL, losses.DCLW,
                                  losses.CLIPLoss, losses.SigLIPLoss, losses.MoCoV3Loss])
def test_every_loss_documents_the_shared_arguments(make):
    doc = make.__doc__ if make is not losses.NTXent else losses.InfoNCE.__doc__
    assert "{shared_args}" not in doc
    for argument in ("gather:", "normalize:", "tile_size:", "reduction:", "name:", "dtype:"):
        assert doc.count(argument) == 1, argument


@pytest.mark.parametrize("make", [losses.InfoNCE, losses.DCL, losses.DCLW, losses.CLIPLoss,
                                  losses.SigLIPLoss, losses.MoCoV3Loss])
def test_misspelt_constructor_argument_is_a_type_error(make):
    with pytest.raises(TypeError, match="tile_sise"):
        make(tile_sise=4)


@pytest.mark.parametrize("function", [losses.info_nce, losses.dcl, losses.dclw,
                                      losses.clip_loss, losses.siglip_loss, losses.mocov3_loss])
def test_every_loss_function_documents_the_shared_options(function):
    doc = function.__doc__
    assert "{options}" not in doc
    for argument in ("gather:", "normalize:", "tile_size:", "Returns:"):
        assert doc.count(argument) == 1, argument
