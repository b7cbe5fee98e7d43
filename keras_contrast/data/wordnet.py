"""WordNet gloss ↔ words pairs: a real two-tower retrieval dataset, offline
(Debian's `wordnet-base` package)."""

import os

import numpy as np

from keras_contrast.api_export import keras_contrast_export
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import is_number
from keras_contrast.checks import is_positive_int

DEFAULT_DIRECTORY = "/usr/share/wordnet"
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")


def _word(token):
    """`Canis_familiaris` → `canis familiaris`; drops adjective markers
    such as `(a)`, `(p)`, `(ip)`."""
    if token.endswith(")") and "(" in token:
        token = token[: token.rindex("(")]
    return token.replace("_", " ").lower()


def parse_wordnet_data(path):
    """Synsets of one WordNet 3.0 `data.<pos>` file.

    Each synset line reads `offset lex_filenum ss_type w_cnt (word lex_id)…
    p_cnt (pointer)… [frames] | gloss`, with `w_cnt` in hexadecimal; lines
    starting with two spaces are the licence header.

    Args:
        path: a `data.noun`/`data.verb`/`data.adj`/`data.adv` file.

    Returns:
        A list of dicts `{"id": "<pos>:<offset>", "words": [...], "gloss": str}`,
        the gloss without its quoted usage examples.
    """
    pos = os.path.basename(path).split(".")[-1]
    synsets = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if line.startswith("  ") or not line.strip():
                continue
            fields, _, gloss = line.partition(" | ")
            tokens = fields.split()
            try:
                count = int(tokens[3], 16)
                # Case variants ("Devi", "devi") become one word.
                words = list(dict.fromkeys(_word(tokens[4 + 2 * i]) for i in range(count)))
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{number}: not a WordNet synset line.") from None
            definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
            synsets.append({"id": f"{pos}:{tokens[0]}", "words": words, "gloss": definition})
    return synsets


@keras_contrast_export("keras_contrast.data.load_wordnet_pairs")
def load_wordnet_pairs(directory=DEFAULT_DIRECTORY, pos=PARTS_OF_SPEECH, held_out=0.1, seed=0,
                       max_pairs=None):
    """Gloss ↔ words pairs of WordNet, split by synset into train and
    held-out sets.

    Query (tower A) = the gloss, key (tower B) = the synset's words joined
    by ", " (e.g. "dog, domestic dog, canis familiaris").

    Args:
        directory: folder of the `data.*` files (Debian: `apt install
            wordnet-base`).
        pos: parts of speech to read.
        held_out: fraction of synsets held out.
        seed: split seed.
        max_pairs: keep at most this many pairs (after shuffling).

    Returns:
        `(train, held_out)`: lists of dicts `{"id", "words", "gloss", "key"}`.
    """
    files = [os.path.join(directory, f"data.{p}") for p in pos]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(
            f"WordNet data files not found: {missing}. Install them with "
            "`apt install wordnet-base` or pass `directory`."
        )
    if not (is_number(held_out) and 0.0 <= held_out < 1.0):
        raise ValueError(f"`held_out` must be a number in [0, 1), got {held_out!r}.")
    if max_pairs is not None:
        check_positive_int(max_pairs, "max_pairs", "an int > 0 or None")
    pairs = [dict(s, key=", ".join(s["words"])) for f in files for s in parse_wordnet_data(f)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order][:max_pairs]
    cut = int(round(len(pairs) * (1 - held_out)))
    return pairs[:cut], pairs[cut:]


@keras_contrast_export("keras_contrast.data.batches_without_repeated_words")
def batches_without_repeated_words(pairs, batch_size, seed=0):
    """Index batches in which no word appears in two synsets.

    A word shared by two synsets of one batch (e.g. "bank") would make the
    other synset a false negative for the contrastive loss; the greedy
    packer instead defers such a pair to a later batch. Pairs that fit no
    full batch are left out (`drop_remainder`).

    Args:
        pairs: list of dicts with `"words"`.
        batch_size: int > 0.
        seed: order seed.

    Returns:
        A list of int arrays of `batch_size` indices.
    """
    check_positive_int(batch_size, "batch_size")
    pending = list(np.random.default_rng(seed).permutation(len(pairs)))
    batches = []
    while len(pending) >= batch_size:
        batch, used, deferred = [], set(), []
        for index in pending:
            words = set(pairs[index]["words"])
            if len(batch) < batch_size and not words & used:
                batch.append(index)
                used |= words
            else:
                deferred.append(index)
        if len(batch) < batch_size:
            break
        batches.append(np.array(batch))
        pending = deferred
    return batches


def check_vocabulary_size(vocabulary_size):
    """`vocabulary_size` of hashed token ids: an int >= 2 (0 pads)."""
    if not (is_positive_int(vocabulary_size) and vocabulary_size >= 2):
        raise ValueError(
            "`vocabulary_size` must be an int >= 2 (id 0 is the padding, words take ids "
            f"1 .. vocabulary_size - 1), got {vocabulary_size!r}."
        )


# hash_tokens' defaults, also the dual-encoder presets' tokenizer (the CLI reads them).
VOCABULARY_SIZE = 32768
SEQUENCE_LENGTH = 32


@keras_contrast_export("keras_contrast.data.hash_tokens")
def hash_tokens(texts, vocabulary_size=VOCABULARY_SIZE, sequence_length=SEQUENCE_LENGTH):
    """Word-hashing tokenizer: lower-cased words (letters and digits) →
    ids in `[1, vocabulary_size)` by CRC-32, padded with 0 / truncated to
    `sequence_length`. No vocabulary file, nothing downloaded.

    Args:
        texts: a list of strings.
        vocabulary_size: int >= 2 (id 0 is the padding).
        sequence_length: int > 0, tokens per text.

    Returns:
        int32 array `(len(texts), sequence_length)`.
    """
    import re
    import zlib

    check_vocabulary_size(vocabulary_size)
    check_positive_int(sequence_length, "sequence_length")
    if isinstance(texts, (str, bytes)):
        raise ValueError(f"`texts` must be a list of strings, not one string: got {texts!r}.")
    texts = list(texts)
    wrong = next((t for t in texts if not isinstance(t, str)), None)
    if wrong is not None:
        raise ValueError(f"`texts` must hold strings only, got {wrong!r}.")

    ids = np.zeros((len(texts), sequence_length), np.int32)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())[:sequence_length]
        ids[row, : len(words)] = [
            1 + zlib.crc32(w.encode()) % (vocabulary_size - 1) for w in words
        ]
    return ids


@keras_contrast_export("keras_contrast.data.retrieval_recall")
def retrieval_recall(queries, keys, ks=(1, 5)):
    """Recall@k of retrieving key i for query i by cosine similarity.

    Args:
        queries: `(n, d)` embeddings.
        keys: `(n, d)` embeddings, row i the positive of query i.
        ks: the k values.

    Returns:
        `{k: recall}`.
    """
    queries, keys = np.asarray(queries), np.asarray(keys)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape != keys.shape or not len(queries):
        raise ValueError(
            "`queries` and `keys` must be 2-D arrays of the same shape (n >= 1 pairs, dim), "
            f"got {queries.shape} and {keys.shape}."
        )
    if not all(is_positive_int(value) for value in ks):
        raise ValueError(f"`ks` must be ints > 0, got {ks!r}.")
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    similarity = q @ k.T
    rank = (similarity > np.diag(similarity)[:, None]).sum(axis=1)
    return {int(value): float(np.mean(rank < value)) for value in ks}
