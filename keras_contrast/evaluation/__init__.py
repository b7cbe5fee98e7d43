"""Evaluation of learned representations: weighted k-NN and linear probe."""

from keras_contrast.evaluation.knn import extract_features
from keras_contrast.evaluation.knn import knn_accuracy
from keras_contrast.evaluation.knn import knn_predict
from keras_contrast.evaluation.linear_probe import linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "linear_probe"]
