"""Weighted k-NN classification of frozen features (thesis 5.3.2; Wu et al., 2018).

The classifier itself lives in :mod:`nolabel.ops.knn` (pure functions on feature
tensors), so that the training loop's k-NN curves (:mod:`nolabel.knn_monitor`) use it
without importing the evaluation layer; this module keeps the evaluation-side name.
"""
from __future__ import annotations

from nolabel.ops.knn import KNN_PROTOCOLS, knn_classify, knn_scores

__all__ = ["KNN_PROTOCOLS", "knn_classify", "knn_scores"]
