"""Every shipped preset loads its trained weights and reproduces its card's
numbers on the data shipped for tests; all weights together stay <= 20 MB."""

import json
import os

import numpy as np
import pytest

from keras_contrast import evaluation
from keras_contrast.models import from_preset
from keras_contrast.models import list_presets
from keras_contrast.models import preset_files
from tests import test_case

SHIPPED = preset_files.shipped_presets()
WEIGHT_BUDGET = 20 * 10**6


HELD_OUT = os.path.join(test_case.ROOT, "tests", "data", "wordnet_held_out.json")


def held_out_pairs():
    """The held-out WordNet pairs of the dual presets' split, shipped for
    tests (tools/write_wordnet_held_out.py) so no WordNet install is needed."""
    with open(HELD_OUT) as handle:
        return json.load(handle)


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="needs WordNet (apt install wordnet-base)")
def test_the_shipped_held_out_pairs_are_the_split_of_the_cli():
    from keras_contrast.cli._datasets import wordnet_split

    shipped = held_out_pairs()
    _, held_out = wordnet_split(shipped["train_size"], shipped["seed"])
    assert shipped["pairs"] == [{"gloss": p["gloss"], "key": p["key"]} for p in held_out]
    assert "Princeton University" in shipped["licence"]


def metadata(name):
    with open(os.path.join(SHIPPED[name], preset_files.METADATA_FILE)) as handle:
        return json.load(handle)


def test_weights_fit_the_budget():
    sizes = {name: os.path.getsize(os.path.join(folder, preset_files.WEIGHTS_FILE))
             for name, folder in SHIPPED.items()}
    assert sum(sizes.values()) <= WEIGHT_BUDGET, sizes
    for name in SHIPPED:
        assert list_presets()[name]["weights"] is True


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_numbers_are_reproduced(name):
    stored = metadata(name)
    card = open(os.path.join(SHIPPED[name], preset_files.CARD_FILE)).read()
    assert stored["licence"] in card
    model = from_preset(name)
    if stored["task"] == "image":
        subset = np.load(os.path.join(test_case.ROOT, "tests", "data",
                                      "fashion_mnist_subset.npz"))
        bank = (subset["x_train"][..., None] / 255.0, subset["y_train"])
        test = (subset["x_test"][..., None] / 255.0, subset["y_test"])
        knn = evaluation.knn_accuracy(model.encoder, bank, test, k=200)
        expected = stored["subset_metrics"]["knn_accuracy"]
        assert abs(knn - expected) <= 0.005, (knn, expected)
        assert f"{100 * expected:.2f} %" in card
        assert f"{100 * stored['metrics']['knn_accuracy']:.2f} %" in card
    else:
        from keras_contrast.cli._dual import tower_vocabulary
        from keras_contrast.data import hash_tokens
        from keras_contrast.data import retrieval_recall

        shipped = held_out_pairs()
        assert stored["split"] == {"seed": shipped["seed"], "train_size": shipped["train_size"]}
        held_out = shipped["pairs"]
        vocabulary = tower_vocabulary(model)
        queries = hash_tokens([p["gloss"] for p in held_out], vocabulary)
        keys = hash_tokens([p["key"] for p in held_out], vocabulary)
        recall = retrieval_recall(np.asarray(model.encode_a(queries)),
                                  np.asarray(model.encode_b(keys)))
        for k in (1, 5):
            expected = stored["metrics"][f"recall_at_{k}"]
            assert abs(recall[k] - expected) <= 0.005, (k, recall[k], expected)
            assert f"{100 * expected:.2f} %" in card
