"""Evaluation that streams: the top-k merged over bank chunks against a
NumPy float64 weighted vote, ties to the lower bank index, datasets
encoded batch by batch (queries never all held), float16 banks, and the
bad input of datasets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_contrast import losses
from keras_contrast.callbacks import KNNMonitor
from keras_contrast.evaluation import extract_features
from keras_contrast.evaluation import knn as knn_module
from keras_contrast.evaluation import knn_accuracy
from keras_contrast.evaluation import knn_predict
from keras_contrast.evaluation import linear_probe
from keras_contrast.models import SimCLR
from tests.models.common import tiny_backbone
from tests.test_case import assert_all_close


def reference_scores(train, labels, test, k, temperature, num_classes, bank_dtype=None):
    """Weighted cosine k-NN votes in float64; among equal similarities the
    lower bank index first (a stable sort). `bank_dtype`: the normalised
    bank rounded to it first."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    if bank_dtype is not None:
        train = train.astype(bank_dtype).astype(np.float64)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    similarity = test @ train.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    scores = np.zeros((len(test), num_classes))
    for i, neighbours in enumerate(order):
        np.add.at(scores[i], labels[neighbours], np.exp(similarity[i, neighbours] / temperature))
    return scores


def reference_accuracy(train, labels, test, test_labels, k, temperature=0.1, bank_dtype=None):
    scores = reference_scores(train, labels, test, k, temperature, int(labels.max()) + 1,
                              bank_dtype)
    return float(np.mean(np.argmax(scores, axis=1) == test_labels))


def random_split(seed, n=50, m=13, d=6, classes=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n),
            rng.normal(size=(m, d)).astype("float32"))


@pytest.mark.parametrize("bank_chunk_size", [1, 3, 7, 50, 64, None])
@pytest.mark.parametrize("k", [1, 7, 20, 80])
def test_top_k_merged_over_bank_chunks_equals_float64_vote(bank_chunk_size, k):
    # 50 bank rows: chunks of 1, of 3 and 7 (not dividing 50), the whole
    # bank and more; k below, above a chunk and above the bank (capped).
    train, labels, test = random_split(0)
    expected = reference_scores(train, labels, test, min(k, 50), 0.1, 4)
    actual = knn_predict(train, labels, test, k=k, temperature=0.1, chunk_size=5,
                         bank_chunk_size=bank_chunk_size)
    assert_all_close(actual, expected)
    np.testing.assert_array_equal(np.argmax(actual, axis=1), np.argmax(expected, axis=1))


def test_chunked_scores_equal_unchunked_on_random_data():
    train, labels, test = random_split(1, n=300, m=40, d=16, classes=6)
    whole = knn_predict(train, labels, test, k=25)
    expected = reference_scores(train, labels, test, 25, 0.1, 6)
    for bank_chunk_size in (1, 16, 37, 299):
        chunked = knn_predict(train, labels, test, k=25, bank_chunk_size=bank_chunk_size)
        # The same neighbours; the similarities differ at most by the
        # float32 rounding of the matrix product (its shape changes).
        assert_all_close(chunked, whole)
        np.testing.assert_array_equal(np.argmax(chunked, axis=1), np.argmax(whole, axis=1))
    assert_all_close(whole, expected)


def test_ties_go_to_the_lower_bank_index_whatever_the_chunking():
    # Bank row i is the axis e_(i mod 4): the rows of one axis tie exactly
    # (one nonzero product each) and carry different labels, so which
    # tied rows fill the last places of the top 8 changes the votes.
    rows, dim = 23, 4
    train = np.eye(dim, dtype="float32")[np.arange(rows) % dim]
    labels = np.arange(rows) % 5
    test = np.random.default_rng(2).normal(size=(9, dim)).astype("float32")
    expected = reference_scores(train, labels, test, 8, 0.5, 5)
    # The opposite rule (higher index first) gives other votes: the data
    # decides between the two.
    reverse = reference_scores(train[::-1], labels[::-1], test, 8, 0.5, 5)
    assert np.max(np.abs(reverse - expected)) > 0.1
    whole = knn_predict(train, labels, test, k=8, temperature=0.5)
    assert_all_close(whole, expected)
    for bank_chunk_size in (1, 2, 5, 6, 22):
        chunked = knn_predict(train, labels, test, k=8, temperature=0.5,
                              bank_chunk_size=bank_chunk_size)
        np.testing.assert_array_equal(chunked, whole)


def dense_encoder(input_dim, output_dim, seed):
    return keras.Sequential([
        keras.Input((input_dim,)),
        keras.layers.Dense(output_dim, kernel_initializer=keras.initializers.GlorotNormal(seed),
                           bias_initializer=keras.initializers.RandomNormal(seed=seed + 1)),
    ])


def dense_features(encoder, x):
    """The Dense encoder's features in float64 NumPy (the reference)."""
    kernel, bias = (np.asarray(w, np.float64) for w in encoder.layers[-1].get_weights())
    return np.asarray(x, np.float64) @ kernel + bias


def clustered(seed, n, m, d=5, classes=3, spread=1.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    y, yt = rng.integers(0, classes, n), rng.integers(0, classes, m)
    x = (centers[y] + spread * rng.normal(size=(n, d))).astype("float32")
    xt = (centers[yt] + spread * rng.normal(size=(m, d))).astype("float32")
    return x, y, xt, yt


@pytest.mark.parametrize("train_batch,test_batch,bank_chunk_size,chunk_size",
                         [(7, 11, 13, 40), (64, 200, None, 1024), (50, 3, 256, 2)])
def test_knn_accuracy_of_datasets_equals_float64_reference(train_batch, test_batch,
                                                           bank_chunk_size, chunk_size):
    x, y, xt, yt = clustered(3, 240, 120)
    encoder = dense_encoder(5, 4, seed=0)
    expected = reference_accuracy(dense_features(encoder, x), y, dense_features(encoder, xt),
                                  yt, k=15)
    assert 0.4 < expected < 0.95  # neither chance nor trivial: errors would show
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(train_batch)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(test_batch)
    accuracy = knn_accuracy(encoder, train, test, k=15, bank_chunk_size=bank_chunk_size,
                            chunk_size=chunk_size)
    assert accuracy == expected
    # Arrays streamed through bank chunks, and a dataset test split
    # against an array bank.
    assert knn_accuracy(encoder, (x, y), (xt, yt), k=15, bank_chunk_size=7) == expected
    assert knn_accuracy(encoder, (x, y), test, k=15) == expected


def test_float16_bank_equals_reference_on_the_rounded_bank():
    x, y, xt, yt = clustered(4, 300, 150, d=8, spread=2.0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(32)
    expected = reference_accuracy(x, y, xt, yt, k=10, bank_dtype=np.float16)
    assert 0.4 < expected < 0.95
    assert knn_accuracy(None, train, test, k=10, bank_dtype="float16",
                        bank_chunk_size=64) == expected
    assert knn_accuracy(None, (x, y), (xt, yt), k=10, bank_dtype=np.float16) == expected


def test_bank_is_kept_in_chunks_of_its_dtype_and_queries_stream(monkeypatch):
    # Spies on the scoring: the bank chunks have at most bank_chunk_size
    # rows of bank_dtype, each query chunk at most chunk_size rows, and the
    # test split is read as the queries are scored, not all beforehand.
    x, y, xt, yt = clustered(5, 100, 60)
    produced = []

    def test_batches():
        for start in range(0, 60, 8):
            produced.append(start)
            yield xt[start : start + 8], yt[start : start + 8]

    test = tf.data.Dataset.from_generator(test_batches, output_signature=(
        tf.TensorSpec((None, 5), tf.float32), tf.TensorSpec((None,), tf.int64)))
    options = tf.data.Options()  # no read-ahead: the reads follow the scoring
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    test = test.with_options(options)
    calls = []
    votes = knn_module._votes

    def spy(queries, bank_chunks, k, temperature, num_classes):
        calls.append((int(queries.shape[0]), [(int(f.shape[0]), f.dtype) for f, _ in bank_chunks],
                      len(produced)))
        return votes(queries, bank_chunks, k, temperature, num_classes)

    monkeypatch.setattr(knn_module, "_votes", spy)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(9)
    accuracy = knn_accuracy(None, train, test, k=5, bank_dtype="float16", bank_chunk_size=30,
                            chunk_size=16)
    assert accuracy == reference_accuracy(x, y, xt, yt, k=5, bank_dtype=np.float16)
    assert [rows for rows, _, _ in calls] == [16, 16, 16, 12]
    assert calls[0][1] == [(30, tf.float16)] * 3 + [(10, tf.float16)]
    # Query chunk j (two batches of 8 rows) is scored once batches
    # 1..2(j+1) have been read, not after all 8.
    for j, (_, _, seen) in enumerate(calls[:3]):
        assert 2 * (j + 1) <= seen <= 2 * (j + 1) + 1


def test_extract_features_of_datasets_equals_reference():
    x = np.random.default_rng(6).normal(size=(37, 5)).astype("float32")
    encoder = dense_encoder(5, 3, seed=1)
    expected = dense_features(encoder, x)
    for dataset in (tf.data.Dataset.from_tensor_slices(x).batch(8),
                    tf.data.Dataset.from_tensor_slices((x, np.zeros(37, int))).batch(10)):
        features = extract_features(encoder, dataset)
        assert features.dtype == np.float32 and features.shape == (37, 3)
        assert_all_close(features, expected)
    half = extract_features(encoder, x, batch_size=4, feature_dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, expected, rtol=1e-3, atol=1e-3)
    raw = extract_features(None, tf.data.Dataset.from_tensor_slices(x.reshape(37, 5, 1)).batch(6))
    np.testing.assert_array_equal(raw, x)


def test_linear_probe_streams_the_test_split_like_the_classifier_says():
    # The accuracy reported on a test dataset equals the returned
    # classifier's accuracy on features standardised in float64 NumPy.
    x, y, xt, yt = clustered(7, 300, 140, d=6, classes=3, spread=0.8)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(25)
    accuracy, classifier = linear_probe(None, train, test, epochs=3, learning_rate=0.1,
                                        batch_size=32)
    x64 = x.astype(np.float64)
    mean, std = x64.mean(axis=0), x64.std(axis=0) + 1e-6
    kernel, bias = (np.asarray(w, np.float64) for w in classifier.layers[-1].get_weights())
    logits = ((xt - mean) / std) @ kernel + bias
    assert accuracy == float(np.mean(np.argmax(logits, axis=1) == yt))
    assert 0.5 < accuracy


def test_linear_probe_float16_features_reach_full_accuracy_on_separable_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    x = (rng.normal(size=(200, 3)) + 6 * y[:, None]).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:150], y[:150])).batch(40)
    test = tf.data.Dataset.from_tensor_slices((x[150:], y[150:])).batch(40)
    accuracy, classifier = linear_probe(None, train, test, epochs=20, feature_dtype="float16")
    assert accuracy == 1.0 and classifier.layers[-1].units == 2


def test_knn_monitor_streams_datasets():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(16, 2, 8, 8, 1)).astype("float32")
    images, labels = rng.normal(size=(40, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 40)
    model = SimCLR(tiny_backbone(), projection_dims=(8, 4))
    model.compile(optimizer="sgd", loss=losses.InfoNCE(0.2))
    bank = tf.data.Dataset.from_tensor_slices((images[:28], labels[:28])).batch(5)
    val = tf.data.Dataset.from_tensor_slices((images[28:], labels[28:])).batch(4)
    monitor = KNNMonitor(bank, val, k=3, bank_chunk_size=4, bank_dtype="float32")
    history = model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[monitor])
    features = model.encoder(images, training=False).numpy()
    expected = reference_accuracy(features[:28], labels[:28], features[28:], labels[28:], k=3)
    assert monitor.history == [(0, expected)]
    assert history.history["knn_accuracy"] == [expected]


def dataset_of(x, y=None, batch=2):
    parts = x if y is None else (x, y)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch)


def generated(batches, x_shape=(None, 2)):
    """A dataset of the given (x, y) batches, of unknown cardinality."""
    def generator():
        yield from batches

    return tf.data.Dataset.from_generator(generator, output_signature=(
        tf.TensorSpec(x_shape, tf.float32), tf.TensorSpec((None,), tf.int64)))


def nothing(*parts):
    """A `filter` predicate that drops everything (an empty dataset of
    unknown cardinality)."""
    return tf.constant(False)


GOOD = (np.ones((4, 2), "float32"), np.array([0, 1, 0, 1]))


@pytest.mark.parametrize(
    "train,test,match",
    [
        (dataset_of(GOOD[0], GOOD[1]).take(0), GOOD, "`train` is an empty dataset"),
        (GOOD, dataset_of(GOOD[0], GOOD[1]).filter(nothing),
         "`test` is an empty dataset"),
        (tf.data.Dataset.from_tensor_slices(GOOD), GOOD,
         r"`train` yields single samples .* batch it, e.g. `train.batch\(256\)`"),
        (dataset_of({"image": GOOD[0], "label": GOOD[1]}), GOOD,
         r"`train` must be a dataset of \(x, y\) batches"),
        (GOOD, dataset_of(GOOD[0]), r"`test` must be a dataset of \(x, y\) batches"),
        (GOOD, dataset_of((GOOD[0], GOOD[1], GOOD[1])), r"`test` must be a dataset of \(x, y\)"),
        (dataset_of(GOOD[0], GOOD[1]).repeat(), GOOD, "`train` is an infinite dataset"),
        (GOOD, generated([(np.ones((4, 2)), np.zeros(3, int))]),
         "the labels of `test`: 3 labels for 4 samples"),
        (generated([(np.ones((2, 2)), np.array([0, -1]))]), GOOD,
         "the labels of `train` must be class ids >= 0"),
        (dataset_of(GOOD[0], np.array([0.5, 1, 0, 1])), GOOD,
         "the labels of `train` must be integer class ids"),
        (GOOD, dataset_of(np.ones((4, 3), "float32"), GOOD[1]),
         "features of `test` have dimension 3 but the bank's 2"),
        (generated([(np.ones((2, 2)), np.zeros(2, int)), (np.ones((2, 3)), np.zeros(2, int))],
                   x_shape=(None, None)), GOOD, "change dimension from 2 to 3"),
    ],
)
def test_knn_accuracy_rejects_bad_datasets_naming_the_argument(train, test, match):
    with pytest.raises(ValueError, match=match):
        knn_accuracy(None, train, test, k=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bank_dtype": "float64"}, "`bank_dtype` must be 'float32' or 'float16', got 'float64'"),
        ({"bank_dtype": None}, "`bank_dtype` must be 'float32' or 'float16'"),
        ({"bank_chunk_size": 0}, "`bank_chunk_size` must be an int > 0 or None, got 0"),
        ({"bank_chunk_size": True}, "`bank_chunk_size` must be an int > 0 or None"),
        ({"chunk_size": 2.0}, "`chunk_size` must be an int > 0"),
    ],
)
def test_streaming_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_accuracy(None, GOOD, GOOD, k=1, **kwargs)
    if "chunk_size" not in kwargs:
        with pytest.raises(ValueError, match=match):
            KNNMonitor(GOOD, GOOD, **kwargs)


def test_monitor_linear_probe_and_extract_features_reject_bad_datasets():
    with pytest.raises(ValueError, match="`val_data` yields single samples"):
        KNNMonitor(GOOD, tf.data.Dataset.from_tensor_slices(GOOD))
    with pytest.raises(ValueError, match="`train_data` is an infinite dataset"):
        KNNMonitor(dataset_of(*GOOD).repeat(), GOOD)
    with pytest.raises(ValueError, match="`test` is an empty dataset"):
        linear_probe(None, GOOD, dataset_of(*GOOD).take(0), epochs=1)
    with pytest.raises(ValueError, match="`feature_dtype` must be 'float32' or 'float16'"):
        linear_probe(None, GOOD, GOOD, epochs=1, feature_dtype="int8")
    with pytest.raises(ValueError, match="`x` is an empty dataset"):
        extract_features(None, dataset_of(GOOD[0]).filter(nothing))
    with pytest.raises(ValueError, match="`x` is an infinite dataset"):
        extract_features(None, dataset_of(GOOD[0]).repeat())
    with pytest.raises(ValueError, match="`x` must be a dataset of input batches"):
        extract_features(None, dataset_of({"image": GOOD[0]}))
