"""Weighted k-NN classification of frozen features (thesis 5.3.2; Wu et al., 2018).

The classifier itself lives in :mod:`nolabel.ops.knn` (pure functions on feature
tensors), so that the training loop's k-NN curves (:mod:`nolabel.knn_monitor`) use it
without importing the evaluation layer; the protocol (``eval knn``) is declared in
:mod:`nolabel.evaluate.protocols.knn`. :func:`knn_protocol` runs it from specs, for
code that compares models (``nolabel demo``, benchmarks).
"""
from __future__ import annotations

from nolabel.ops.knn import KNN_PROTOCOLS, knn_classify, knn_scores


def knn_protocol(model_spec: str, train_spec: str, test_spec: str, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 256, device: str = "auto", progress: bool = True) -> dict:
    """Weighted k-NN top-1/top-5 of a model spec's frozen features on two labelled data
    specs (thesis 5.3.2), nothing cached or written: the result dict of :func:`knn_classify`
    plus ``model``, ``image_size``, ``feature_dim`` and ``seconds``."""
    from nolabel.evaluate.context import EvalContext
    from nolabel.evaluate.protocols import get_protocol

    ctx = EvalContext(model_spec, train_spec, test_spec, out=None, batch_size=batch_size, device=device,
                      progress=progress)
    result = get_protocol("knn").run(ctx, k=k, temperature=temperature)
    return {"model": model_spec, "image_size": ctx.image_size, **result}


__all__ = ["KNN_PROTOCOLS", "knn_classify", "knn_protocol", "knn_scores"]
