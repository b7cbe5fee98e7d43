"""Linear probe: separable features, and digits against scikit-learn."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from keras_contrast.evaluation import linear_probe


def test_digits_close_to_sklearn_logistic_regression():
    x, y = load_digits(return_X_y=True)
    x = x.astype("float32")
    split = 1200
    scaler = StandardScaler().fit(x[:split])
    reference = LogisticRegression(max_iter=2000).fit(scaler.transform(x[:split]), y[:split])
    expected = reference.score(scaler.transform(x[split:]), y[split:])
    accuracy, classifier = linear_probe(None, (x[:split], y[:split]), (x[split:], y[split:]),
                                        epochs=60, batch_size=128)
    assert expected > 0.9
    assert abs(accuracy - expected) < 0.03
    assert classifier.layers[-1].units == 10


def test_separable_features_reach_full_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    x = (rng.normal(size=(200, 3)) + 6 * y[:, None]).astype("float32")
    accuracy, _ = linear_probe(None, (x[:150], y[:150]), (x[150:], y[150:]), epochs=20)
    assert accuracy == 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"train": (np.ones((6, 2)), np.zeros(5, int))},
         "the labels of `train`: 5 labels for 6 samples"),
        ({"test": (np.ones((3, 2)), np.zeros(4, int))},
         "the labels of `test`: 4 labels for 3 samples"),
        ({"learning_rate": True}, "`learning_rate` must be a number > 0, got True"),
        ({"learning_rate": "0.01"}, "`learning_rate` must be a number > 0"),
        ({"weight_decay": -1.0}, "`weight_decay` must be a number >= 0"),
        ({"batch_size": 0}, "`batch_size` must be an int > 0"),
        ({"epochs": True}, "`epochs` must be an int > 0"),
        ({"seed": "0"}, "`seed` must be an int"),
    ],
)
def test_rejects_bad_arguments_naming_them(kwargs, match):
    arguments = {"encoder": None, "train": (np.ones((6, 2)), np.arange(6) % 2),
                 "test": (np.ones((3, 2)), np.arange(3) % 2), "epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        linear_probe(**arguments)
