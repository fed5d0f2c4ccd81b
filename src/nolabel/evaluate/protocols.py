"""Evaluation protocols run end to end from specs: model, training set, test set."""
from __future__ import annotations

import time

import torch

from nolabel.data import open_images
from nolabel.evaluate.features import extract_features
from nolabel.evaluate.models import load_model_for_data
from nolabel.ops.knn import KNN_PROTOCOLS, knn_classify  # noqa: F401 (KNN_PROTOCOLS: the CLI's import)


def _device(device: str) -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device))


def knn_protocol(model_spec: str, train_spec: str, test_spec: str, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 256, device: str = "auto", progress: bool = True) -> dict:
    """Weighted k-NN top-1/top-5 of frozen features (thesis 5.3.2). Returns the
    result dict of :func:`knn_classify` plus ``model``, ``image_size`` and seconds."""
    t0 = time.time()
    dev = _device(device)
    model, size = load_model_for_data(model_spec, train_spec)
    train = open_images(train_spec, image_size=size, progress=progress)
    test = open_images(test_spec, image_size=size, progress=progress)
    if not train.has_labels or not test.has_labels:
        bad = train_spec if not train.has_labels else test_spec
        raise ValueError(f"k-NN needs labelled data, but {bad} has no labels (use a root/<class>/<image> folder)")
    train_x, train_y = extract_features(model, train, batch_size, dev, progress, "train features")
    test_x, test_y = extract_features(model, test, batch_size, dev, progress, "test features")
    result = knn_classify(train_x, train_y, test_x, test_y, k=k, temperature=temperature,
                          num_classes=len(train.classes) if train.classes else None)
    result.update({"model": model_spec, "image_size": size, "feature_dim": int(train_x.shape[1]),
                   "seconds": round(time.time() - t0, 2)})
    return result
