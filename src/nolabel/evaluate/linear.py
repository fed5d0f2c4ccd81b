"""Linear classifiers on cached frozen features (thesis 5.3.2 and Table 5.5).

* :func:`train_linear` / :func:`linear_probe`: the linear protocol of thesis 5.3.2
  (SGD with momentum 0.9, cosine learning rate, frozen features) adapted to features
  computed once without augmentation, as Table 5.5 does; "both evaluations are
  sensitive to hyperparameters [...] when varying the learning rate", hence a sweep.
* :func:`fit_logistic` / :func:`logistic_regression`: multinomial logistic regression
  solved full-batch with L-BFGS, the fast variant of Table 5.5 (which used the cyanure
  solver), written in torch.

Features are (N, D) float tensors and labels (N,) int64 class indices in ``[0, C)``.
Before the linear layer, features are ``"standardize"``-d (per dimension, with the
training set's mean and standard deviation), ``"l2"``-normalised, or used as they
are (``"none"``); the statistics travel inside the returned :class:`LinearClassifier`,
which therefore takes raw features. Accuracies are percents (0-100) like
:func:`nolabel.evaluate.knn.knn_classify`, with ties going to the lower class index.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nolabel.ops.schedules import cosine

NORMALIZATIONS = ("standardize", "l2", "none")


class LinearClassifier(nn.Module):
    """``logits (B, C) = linear(normalise(x (B, D)))``; ``mean``/``std`` are the
    training features' statistics (used by ``"standardize"`` only)."""

    def __init__(self, dim: int, num_classes: int, normalize: str = "standardize",
                 mean: Tensor | None = None, std: Tensor | None = None) -> None:
        super().__init__()
        _check_normalize(normalize)
        self.normalize = normalize
        self.linear = nn.Linear(dim, num_classes)
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.detach().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.detach().clone())

    def prepare(self, x: Tensor) -> Tensor:
        """(B, D) raw features -> (B, D) normalised features, in the layer's dtype."""
        x = x.to(self.linear.weight)
        if self.normalize == "standardize":
            return (x - self.mean) / self.std
        if self.normalize == "l2":
            return F.normalize(x, dim=1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.prepare(x))


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {normalize!r}")


def _features(x: Tensor, name: str, dim: int | None = None) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (n, dim) tensor, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has feature dim {x.shape[1]}, but the training features have {dim}")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must hold finite floating-point values")
    return x


def _targets(y: Tensor, n: int, name: str) -> Tensor:
    y = torch.as_tensor(y).detach()
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got {y.dtype}")
    if bool((y < 0).any()):
        raise ValueError(f"{name} contains negative labels (-1 = unlabelled): a linear probe needs every label")
    return y.long()


def _classes(num_classes: int | None, *labels: Tensor) -> int:
    top = max(int(y.max()) for y in labels) + 1
    if num_classes is not None and top > num_classes:
        raise ValueError(f"labels go up to {top - 1} but num_classes={num_classes}")
    return top if num_classes is None else int(num_classes)


def _statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std (D,) of the training features; constant dims get std 1."""
    x = x.double()
    mean, std = x.mean(0), x.std(0, correction=0)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))  # float64; the module casts them


def _classifier(x: Tensor, num_classes: int, normalize: str, dtype: torch.dtype, device) -> LinearClassifier:
    mean, std = _statistics(x) if normalize == "standardize" else (None, None)
    return LinearClassifier(x.shape[1], num_classes, normalize, mean, std).to(device=device, dtype=dtype)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, chunk_size: int = 8192) -> tuple[float, float]:
    """(top-1, top-5) percent of ``model(x)`` against y (N,); a sample counts for top-5
    when fewer than 5 classes outscore it (ties going to the lower class index)."""
    device = next(model.parameters()).device
    hits1 = hits5 = 0
    for start in range(0, x.shape[0], chunk_size):
        logits = model(x[start : start + chunk_size].to(device)).float()  # (m, C)
        t = y[start : start + chunk_size].to(device).view(-1, 1)
        s_t = logits.gather(1, t)
        classes = torch.arange(logits.shape[1], device=device).view(1, -1)
        rank = (logits > s_t).sum(1) + ((logits == s_t) & (classes < t)).sum(1)
        hits1 += int((rank == 0).sum())
        hits5 += int((rank < 5).sum())
    return 100.0 * hits1 / x.shape[0], 100.0 * hits5 / x.shape[0]


def train_linear(train_x: Tensor, train_y: Tensor, val_x: Tensor | None = None, val_y: Tensor | None = None, *,
                 epochs: int = 100, lr: float = 0.1, weight_decay: float = 0.0, batch_size: int = 256,
                 seed: int = 0, normalize: str = "standardize", momentum: float = 0.9,
                 num_classes: int | None = None, device: str | torch.device = "cpu",
                 ) -> tuple[LinearClassifier, dict]:
    """Train a linear classifier on frozen features with SGD (thesis 5.3.2 linear protocol).

    Args:
        train_x: (N, D) float features; train_y: (N,) int64 labels in ``[0, C)``.
        val_x, val_y: optional (M, D) / (M,) set scored after every epoch.
        epochs: passes over the shuffled training set (last batch kept, possibly smaller).
        lr: initial learning rate, cosine-decayed to 0 over all steps, per step.
        weight_decay: L2 penalty on the weight matrix only (not the bias).
        batch_size, momentum: SGD with momentum 0.9 as in the thesis' protocols.
        seed: seeds the initialisation (weights N(0, 0.01), bias 0) and the shuffling;
            the same seed gives the same classifier.
        normalize: ``"standardize"`` (default), ``"l2"`` or ``"none"`` (module docstring).
        num_classes: C; default ``max(label) + 1`` over train and val labels.

    Returns:
        ``(classifier, history)``: the :class:`LinearClassifier` (on ``device``, eval
        mode; ``classifier.linear`` is the trained ``nn.Linear``) and a dict of per-epoch
        lists ``epoch``, ``lr`` (at the epoch's first step), ``train_loss`` (mean
        cross-entropy over the epoch), and with a validation set ``val_top1``/``val_top5``.
    """
    _check_normalize(normalize)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not lr > 0 or weight_decay < 0 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {lr}, {weight_decay}, {momentum}")
    x = _features(train_x, "train_x").cpu()
    y = _targets(train_y, x.shape[0], "train_y").cpu()
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    labels = [y]
    if val_x is not None:
        val_x = _features(val_x, "val_x", x.shape[1])
        val_y = _targets(val_y, val_x.shape[0], "val_y")
        labels.append(val_y)
    c = _classes(num_classes, *labels)
    generator = torch.Generator().manual_seed(int(seed))
    model = _classifier(x, c, normalize, torch.float32, "cpu")
    with torch.no_grad():
        model.linear.weight.copy_(torch.randn(model.linear.weight.shape, generator=generator) * 0.01)
        model.linear.bias.zero_()
    model.to(device)
    inputs = model.prepare(x.to(device))  # normalise once: (N, D)
    targets = y.to(device)
    params = [{"params": [model.linear.weight], "weight_decay": weight_decay},
              {"params": [model.linear.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    history: dict[str, list] = {"epoch": [], "lr": [], "train_loss": []}
    if val_x is not None:
        history.update(val_top1=[], val_top5=[])
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator).to(device)
        history["lr"].append(cosine(epoch * steps_per_epoch, total, lr, 0.0))
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = cosine(step, total, lr, 0.0)
            batch = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model.linear(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * batch.shape[0]
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss_sum / x.shape[0])
        if val_x is not None:
            top1, top5 = accuracy(model, val_x, val_y)
            history["val_top1"].append(top1)
            history["val_top5"].append(top5)
    return model.eval(), history


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 lrs: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0), val_x: Tensor | None = None,
                 val_y: Tensor | None = None, *, epochs: int = 100, weight_decay: float = 0.0,
                 batch_size: int = 256, seed: int = 0, normalize: str = "standardize",
                 num_classes: int | None = None, device: str | torch.device = "cpu") -> dict:
    """Learning-rate sweep of :func:`train_linear`, scored on a test set.

    One classifier per learning rate, all with the same seed. The best run is chosen
    by validation top-1 when ``val_x``/``val_y`` are given (``selected_on: "val"``),
    otherwise by test top-1 (``selected_on: "test"``: optimistic, as the customary
    "best of the sweep" numbers are); ties go to the earlier lr in ``lrs``.

    Returns:
        ``{"runs": [{"lr", "top1", "top5", "train_loss"[, "val_top1", "val_top5"]}, ...],
        "best": <one of runs>, "selected_on", "epochs", "batch_size", "weight_decay",
        "normalize", "seed", "n_train", "n_test", "feature_dim", "num_classes", "seconds"}``.
    """
    t0 = time.time()
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    x = _features(train_x, "train_x")
    y = _targets(train_y, x.shape[0], "train_y")
    tx = _features(test_x, "test_x", x.shape[1])
    ty = _targets(test_y, tx.shape[0], "test_y")
    extra = [] if val_y is None else [_targets(val_y, len(val_y), "val_y")]
    c = _classes(num_classes, y, ty, *extra)
    runs = []
    for lr in lrs:
        model, history = train_linear(x, y, val_x, val_y, epochs=epochs, lr=float(lr), weight_decay=weight_decay,
                                      batch_size=batch_size, seed=seed, normalize=normalize, num_classes=c,
                                      device=device)
        top1, top5 = accuracy(model, tx, ty)
        run = {"lr": float(lr), "top1": top1, "top5": top5, "train_loss": history["train_loss"][-1]}
        if val_x is not None:
            run.update(val_top1=history["val_top1"][-1], val_top5=history["val_top5"][-1])
        runs.append(run)
    key = "val_top1" if val_x is not None else "top1"
    best = max(runs, key=lambda r: r[key])  # max keeps the first of equal runs
    return {"runs": runs, "best": best, "selected_on": "val" if val_x is not None else "test", "epochs": epochs,
            "batch_size": batch_size, "weight_decay": weight_decay, "normalize": normalize, "seed": seed,
            "n_train": x.shape[0], "n_test": tx.shape[0], "feature_dim": x.shape[1], "num_classes": c,
            "seconds": round(time.time() - t0, 2)}


def fit_logistic(train_x: Tensor, train_y: Tensor, l2: float = 1e-4, *, max_iter: int = 100,
                 normalize: str = "standardize", num_classes: int | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 ) -> tuple[LinearClassifier, dict]:
    """Multinomial logistic regression, full batch, L-BFGS with strong-Wolfe line search.

    Minimises ``mean_n CE(W z_n + b, y_n) + (l2 / 2) ||W||_F^2`` over W (C, D) and b (C,),
    with z the normalised features (the bias is not penalised). This is the objective
    of cyanure (thesis Table 5.5) and of scikit-learn's ``LogisticRegression(C=1 / (l2 N))``.
    Starts from zero, so it needs no seed and is deterministic. ``max_iter`` bounds the
    L-BFGS iterations (each may evaluate the loss several times).

    Returns:
        ``(classifier, info)`` with ``info = {"loss", "n_iter", "n_evals"}``.
    """
    _check_normalize(normalize)
    if l2 < 0 or max_iter < 1:
        raise ValueError(f"need l2 >= 0 and max_iter >= 1; got l2={l2}, max_iter={max_iter}")
    x = _features(train_x, "train_x").cpu()
    y = _targets(train_y, x.shape[0], "train_y")
    model = _classifier(x, _classes(num_classes, y), normalize, dtype, device)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        inputs = model.prepare(x.to(device))  # (N, D)
    targets = y.to(device)
    weight, bias = model.linear.weight, model.linear.bias
    eps = torch.finfo(dtype).eps  # stop at the dtype's resolution, not at an arbitrary level
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, history_size=20,
                                  tolerance_grad=100 * eps, tolerance_change=4 * eps, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(F.linear(inputs, weight, bias), targets) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    state = optimizer.state[weight]
    with torch.no_grad():
        loss = F.cross_entropy(F.linear(inputs, weight, bias), targets) + 0.5 * l2 * weight.square().sum()
    return model.eval(), {"loss": float(loss), "n_iter": int(state["n_iter"]), "n_evals": int(state["func_evals"])}


def logistic_regression(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, l2: float = 1e-4, *,
                        max_iter: int = 100, normalize: str = "standardize", num_classes: int | None = None,
                        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> dict:
    """Top-1 / top-5 (percent) of :func:`fit_logistic` on a test set (thesis Table 5.5).

    Returns ``{"top1", "top5", "l2", "loss", "n_iter", "n_evals", "normalize", "n_train",
    "n_test", "feature_dim", "num_classes", "seconds"}``. Choose ``l2`` on held-out data.
    """
    t0 = time.time()
    x = _features(train_x, "train_x")
    y = _targets(train_y, x.shape[0], "train_y")
    tx = _features(test_x, "test_x", x.shape[1])
    ty = _targets(test_y, tx.shape[0], "test_y")
    c = _classes(num_classes, y, ty)
    model, info = fit_logistic(x, y, l2, max_iter=max_iter, normalize=normalize, num_classes=c, dtype=dtype,
                               device=device)
    top1, top5 = accuracy(model, tx, ty)
    return {"top1": top1, "top5": top5, "l2": float(l2), **info, "normalize": normalize, "n_train": x.shape[0],
            "n_test": tx.shape[0], "feature_dim": x.shape[1], "num_classes": c, "seconds": round(time.time() - t0, 2)}
