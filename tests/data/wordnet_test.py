"""WordNet parsing on a hand-written file, the real files, and batches
without repeated words."""

import os

import pytest

from keras_contrast import data
from keras_contrast.data import wordnet

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUN = (
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 "
    "~ 01322604 n 0000 | a member of the genus Canis; \"the dog barked all night\"  \n"
    "09213565 17 n 01 bank 0 001 @ 09238143 n 0000 | sloping land (especially the slope "
    "beside a body of water)  \n"
)
ADJ = "00020103 00 s 02 outback(a) 0 remote 0 001 & 00019874 a 0000 | inaccessible and sparsely populated;  \n"


def test_parses_hand_written_files(tmp_path):
    (tmp_path / "data.noun").write_text(HEADER + NOUN)
    (tmp_path / "data.adj").write_text(HEADER + ADJ)
    nouns = wordnet.parse_wordnet_data(str(tmp_path / "data.noun"))
    assert nouns == [
        {"id": "noun:02084071", "words": ["dog", "domestic dog", "canis familiaris"],
         "gloss": "a member of the genus Canis"},
        {"id": "noun:09213565", "words": ["bank"],
         "gloss": "sloping land (especially the slope beside a body of water)"},
    ]
    adjectives = wordnet.parse_wordnet_data(str(tmp_path / "data.adj"))
    assert adjectives[0]["words"] == ["outback", "remote"]
    assert adjectives[0]["gloss"] == "inaccessible and sparsely populated"
    train, held = data.load_wordnet_pairs(str(tmp_path), pos=("noun", "adj"), held_out=0.34)
    assert len(train) == 2 and len(held) == 1
    assert "dog, domestic dog, canis familiaris" in {p["key"] for p in train + held}


def test_errors(tmp_path):
    (tmp_path / "data.noun").write_text("garbage line\n")
    with pytest.raises(ValueError, match="not a WordNet synset line"):
        wordnet.parse_wordnet_data(str(tmp_path / "data.noun"))
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        data.load_wordnet_pairs(str(tmp_path / "missing"))


def test_batches_have_no_repeated_words():
    pairs = [{"words": [w]} for w in ["bank", "bank", "river", "bank", "dog", "cat", "dog", "fish"]]
    batches = data.batches_without_repeated_words(pairs, 3, seed=1)
    assert batches
    for batch in batches:
        words = [pairs[i]["words"][0] for i in batch]
        assert len(set(words)) == len(words) == 3


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_real_wordnet_noun_synsets():
    nouns = wordnet.parse_wordnet_data("/usr/share/wordnet/data.noun")
    assert len(nouns) == 82115
    dog = next(s for s in nouns if s["id"] == "noun:02084071")
    assert dog["words"][:2] == ["dog", "domestic dog"]
    train, held = data.load_wordnet_pairs(pos=("noun",), held_out=0.1, max_pairs=5000)
    batches = data.batches_without_repeated_words(train, 256)
    assert len(batches) >= 15
    for batch in batches:
        words = [w for i in batch for w in train[i]["words"]]
        assert len(words) == len(set(words))


def test_hash_tokens_and_recall():
    import numpy as np

    ids = data.hash_tokens(["The dog, the DOG!", ""], vocabulary_size=100, sequence_length=4)
    assert ids.shape == (2, 4) and ids[0, 0] == ids[0, 2] and ids[0, 1] == ids[0, 3]
    assert ids[0].min() >= 1 and ids[0].max() < 100 and not ids[1].any()
    queries = np.eye(3)
    keys = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0.1]])
    recall = data.retrieval_recall(queries, keys, ks=(1, 2))
    assert recall == {1: 1 / 3, 2: 1.0}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"vocabulary_size": 0}, "`vocabulary_size` must be an int >= 2 .*got 0"),
        ({"vocabulary_size": -5}, "`vocabulary_size` must be an int >= 2"),
        ({"vocabulary_size": 1}, "`vocabulary_size` must be an int >= 2"),
        ({"vocabulary_size": True}, "`vocabulary_size` must be an int >= 2 .*got True"),
        ({"vocabulary_size": "100"}, "`vocabulary_size` must be an int >= 2"),
        ({"sequence_length": 0}, "`sequence_length` must be an int > 0"),
        ({"texts": "one string"}, "`texts` must be a list of strings"),
        ({"texts": ["fine", 3]}, "`texts` must hold strings only, got 3"),
    ],
)
def test_hash_tokens_rejects_bad_arguments_naming_them(kwargs, match):
    arguments = {"texts": ["a dog"], **kwargs}
    with pytest.raises(ValueError, match=match):
        data.hash_tokens(**arguments)


def test_retrieval_recall_and_pairs_reject_bad_arguments(tmp_path):
    import numpy as np

    with pytest.raises(ValueError, match="`queries` and `keys` must be 2-D arrays of the same"):
        data.retrieval_recall(np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match="`ks` must be ints > 0"):
        data.retrieval_recall(np.eye(3), np.eye(3), ks=(0,))
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(NOUN)
    with pytest.raises(ValueError, match="`held_out` must be a number in \\[0, 1\\), got '0.1'"):
        data.load_wordnet_pairs(str(tmp_path), held_out="0.1")
    with pytest.raises(ValueError, match="`max_pairs` must be an int > 0 or None, got True"):
        data.load_wordnet_pairs(str(tmp_path), max_pairs=True)
