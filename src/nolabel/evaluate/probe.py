"""Linear probe and logistic regression protocols on frozen features (thesis 5.3.2, Table 5.5).

Learning rates (linear) and the L2 penalty (logistic) are chosen on a held-out,
stratified 10% of the training set (seeded; :func:`nolabel.evaluate.subsets.label_subset`),
never on the test set; the chosen classifier, trained on the other 90%, is scored on
the test set.

``augment=True`` trains the linear layers on views made on the fly (random-resized-crop,
scale (0.08, 1), and horizontal flip; thesis 5.3.2) of the training images, through the
frozen backbone: one forward pass per batch feeds one linear layer per learning rate of
the sweep, so the sweep costs one backbone pass. Validation and test use the cached
centre-crop features ("accuracy on a central crop").
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from nolabel.evaluate.cache import embed_normalized
from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.linear import _classifier, accuracy, linear_probe, logistic_regression
from nolabel.evaluate.subsets import label_subset
from nolabel.ops.schedules import cosine

LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
EPOCHS, AUGMENT_EPOCHS = 100, 10
L2S = (1e-5, 1e-4, 1e-3)
VAL_FRACTION = 0.1


@contextmanager
def one_thread():
    """Run small-matrix work (SGD on (256, D) batches, L-BFGS on cached features) on one CPU
    thread: a second thread only adds synchronisation, and on a shared 2-core machine the
    default was measured 4-20x slower (linear probe on demo: 424 s vs 7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def split_val(labels: torch.Tensor, fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): a stratified ``fraction`` of every class held out."""
    val = label_subset(labels, fraction, seed)
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    keep[val] = False
    if not bool(keep.any()):
        raise EvalError("the training set is too small to hold out a validation split")
    return keep.nonzero().flatten(), val


def linear_protocol(ctx: EvalContext, lrs: Sequence[float] = LRS, epochs: int = EPOCHS, augment: bool = False,
                    augment_epochs: int = AUGMENT_EPOCHS, batch_size: int = 256, seed: int = 0) -> dict:
    """Linear probe: ``{"top1", "top5", "lr", "selected_on": "val", "runs": [...], ...}``."""
    ctx.require_labels("linear", "train", "test")
    t0 = time.time()
    train, test = ctx.features("train", "linear"), ctx.features("test", "linear")
    tr, va = split_val(train.y, seed=seed)
    c = ctx.num_classes("train", "test")
    if augment:
        result = _augmented_probe(ctx, tr, va, lrs, augment_epochs, batch_size, seed, c)
    else:
        with one_thread():
            result = linear_probe(train.x[tr], train.y[tr], test.x, test.y, lrs, train.x[va], train.y[va],
                                  epochs=epochs, batch_size=batch_size, seed=seed, num_classes=c, device=ctx.device)
    best = result["best"]
    result.update(top1=best["top1"], top5=best["top5"], lr=best["lr"], augment=augment, n_val=int(va.numel()),
                  seconds=round(time.time() - t0, 2))
    return result


def _augmented_probe(ctx: EvalContext, tr: torch.Tensor, va: torch.Tensor, lrs: Sequence[float], epochs: int,
                     batch_size: int, seed: int, num_classes: int) -> dict:
    from nolabel.evaluate.finetune import train_views

    if ctx.model.network is None:
        raise EvalError("linear --augment passes views through the backbone, but pixels has no backbone; "
                        "drop --augment for raw pixels")
    if epochs < 1:
        raise EvalError(f"--augment-epochs {epochs}: must be at least 1")
    train, test = ctx.features("train"), ctx.features("test")
    data = ctx.dataset("train", "linear")
    views = train_views(ctx)
    gen = torch.Generator().manual_seed(seed)
    heads, opts = [], []
    for lr in lrs:
        head = _classifier(train.x[tr], num_classes, "standardize", torch.float32, ctx.device)
        with torch.no_grad():
            head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=gen) * 0.01)
            head.linear.bias.zero_()
        heads.append(head)
        opts.append(torch.optim.SGD(head.linear.parameters(), lr=float(lr), momentum=0.9))
    in_train = torch.zeros(len(data), dtype=torch.bool)
    in_train[tr] = True
    total = epochs * data.steps_per_epoch(batch_size, drop_last=False)  # batches seen (val items dropped)
    network = ctx.model.network.to(ctx.device).eval()
    bar = _bar(ctx, total, "linear (augmented)")
    step, losses = 0, [0.0] * len(lrs)
    torch.manual_seed(seed)  # the crop boxes and flips come from torch's default generator
    for epoch in range(epochs):
        for batch in data.batches(batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=False):
            keep = in_train[batch.index]
            if not bool(keep.any()):
                continue
            with torch.no_grad():
                x = views(batch.images[keep].to(ctx.device))[0]
                feats = embed_normalized(network, x, ctx.patch_tokens)  # (B, D)
            y = batch.labels[keep].to(ctx.device)
            for i, (head, opt) in enumerate(zip(heads, opts)):
                for group in opt.param_groups:
                    group["lr"] = cosine(step, total, float(lrs[i]), 0.0)
                loss = F.cross_entropy(head(feats), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses[i] += float(loss.detach()) * int(y.numel())
            step += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    runs = []
    for lr, head, loss_sum in zip(lrs, heads, losses):
        head.eval()
        v1, v5 = accuracy(head, train.x[va], train.y[va])
        t1, t5 = accuracy(head, test.x, test.y)
        runs.append({"lr": float(lr), "top1": t1, "top5": t5, "val_top1": v1, "val_top5": v5,
                     "train_loss": loss_sum / max(1, epochs * int(tr.numel()))})
    best = max(runs, key=lambda r: r["val_top1"])
    return {"runs": runs, "best": best, "selected_on": "val", "epochs": epochs, "batch_size": batch_size,
            "views": "random-resized-crop (0.08, 1) + horizontal flip", "normalize": "standardize", "seed": seed,
            "n_train": int(tr.numel()), "n_test": int(test.y.numel()), "feature_dim": int(train.x.shape[1]),
            "num_classes": num_classes}


def _bar(ctx: EvalContext, total: int, desc: str):
    if not ctx.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def logistic_protocol(ctx: EvalContext, l2s: Sequence[float] = L2S, max_iter: int = 100, seed: int = 0) -> dict:
    """Logistic regression (L-BFGS): L2 chosen on the held-out split, then refit on the
    whole training set and scored on the test set. ``{"top1", "top5", "l2", "sweep", ...}``."""
    ctx.require_labels("logistic", "train", "test")
    if not l2s:
        raise EvalError("--l2 needs at least one value")
    t0 = time.time()
    train, test = ctx.features("train", "logistic"), ctx.features("test", "logistic")
    c = ctx.num_classes("train", "test")
    tr, va = split_val(train.y, seed=seed)
    sweep = []
    with one_thread():
        for l2 in l2s:
            r = logistic_regression(train.x[tr], train.y[tr], train.x[va], train.y[va], float(l2),
                                    max_iter=max_iter, num_classes=c, device=ctx.device)
            sweep.append({"l2": float(l2), "val_top1": r["top1"], "val_top5": r["top5"]})
        best = max(sweep, key=lambda r: r["val_top1"])
        result = logistic_regression(train.x, train.y, test.x, test.y, best["l2"], max_iter=max_iter,
                                     num_classes=c, device=ctx.device)
    result.update(sweep=sweep, selected_on="val", seconds=round(time.time() - t0, 2))
    return result
