"""t-SNE of class means (thesis 5.5.1, "Class Representation", Fig. 5.2).

Each class is the average feature of its test images; the means are reduced to 30
dimensions with PCA and embedded in 2-D by scikit-learn's t-SNE with perplexity 20,
learning rate 200 and 5000 iterations, as in the thesis. t-SNE needs the perplexity
below the number of points, so with fewer than 21 classes it is lowered to
``(classes - 1) / 3`` (at least 1; sklearn's own guidance); PCA keeps at most
``classes`` dimensions. The values used are reported.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from nolabel.evaluate.context import EvalContext, EvalError

PCA_DIM, PERPLEXITY, LEARNING_RATE, ITERATIONS = 30, 20.0, 200.0, 5000


def class_means(feats: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(classes present (C,), mean feature of each (C, D) float64)."""
    x, y = feats.double().numpy(), labels.numpy()
    present = np.unique(y[y >= 0])
    return present, np.stack([x[y == c].mean(0) for c in present])


def tsne_of_means(means: np.ndarray, pca_dim: int = PCA_DIM, perplexity: float = PERPLEXITY,
                  iterations: int = ITERATIONS, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(C, D) means -> ((C, 2) embedding, the settings used)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    c = means.shape[0]
    if c < 3:
        raise EvalError(f"t-SNE of class means needs at least 3 classes, got {c}")
    dim = min(pca_dim, c, means.shape[1])
    reduced = PCA(n_components=dim, random_state=seed).fit_transform(means)
    perp = perplexity if perplexity < c else max(1.0, (c - 1) / 3)
    # exact gradients for the usual few hundred classes: Barnes-Hut's OpenMP loop was measured
    # ~100x slower per iteration (18 ms vs 0.07 ms on 10 points) once torch is loaded
    method = "exact" if c <= 500 else "barnes_hut"
    embedding = TSNE(n_components=2, perplexity=perp, learning_rate=LEARNING_RATE, max_iter=iterations,
                     init="pca", random_state=seed, method=method).fit_transform(reduced)
    return embedding, {"pca_dim": dim, "perplexity": perp, "learning_rate": LEARNING_RATE, "iterations": iterations,
                       "method": method}


def tsne_protocol(ctx: EvalContext, role: str = "test", iterations: int = ITERATIONS, seed: int = 0) -> dict:
    """PNG of the class-mean t-SNE: ``{"png", "classes", "pca_dim", "perplexity", ...}``."""
    ctx.require_labels("tsne", role)
    t0 = time.time()
    feats = ctx.features(role, "tsne")
    present, means = class_means(feats.x, feats.y)
    embedding, settings = tsne_of_means(means, iterations=iterations, seed=seed)
    names = [feats.classes[c] if feats.classes and c < len(feats.classes) else str(c) for c in present]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(embedding[:, 0], embedding[:, 1], s=18)
    if len(names) <= 200:
        for (u, v), name in zip(embedding, names):
            ax.annotate(name, (u, v), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set(title=f"t-SNE of class means ({ctx.model_spec})", xticks=[], yticks=[])
    fig.tight_layout()
    path = ctx.path("tsne.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"png": str(path), "classes": len(present), **settings, "seconds": round(time.time() - t0, 2)}
