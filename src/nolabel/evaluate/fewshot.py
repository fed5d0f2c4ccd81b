"""Few labels (thesis Tables 4.1 and 5.5): 1% and 10% of the training labels.

Each subset is stratified and seeded (:func:`nolabel.evaluate.subsets.label_subset`)
and written to ``<subset_dir>/<data>-<pct>pct-seed<seed>.json`` (default the context's
``subset_dir``, ``<out>/subsets``); a later run, of this model or of another one (the
baselines of ``eval all --baselines``), reads the same file back, and
:func:`nolabel.evaluate.subsets.load_subset` refuses it if the training labels differ. On each subset: weighted k-NN (k = min(20, subset size), T = 0.07), logistic
regression (L2 1e-4: a subset this small leaves nothing to tune it on) and, for models
with weights, fine-tuning (:mod:`nolabel.evaluate.finetune`'s schedule).
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.knn import knn_classify
from nolabel.evaluate.linear import logistic_regression
from nolabel.evaluate.probe import one_thread
from nolabel.evaluate.subsets import label_subset, load_subset, save_subset

FRACTIONS = (0.01, 0.1)    # thesis Tables 4.1 and 5.5: 1% and 10% of the labels

LOGISTIC_L2 = 1e-4


def subset_file(subset_dir: str | Path, train_spec: str, fraction: float, seed: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", train_spec).strip("_.")[-60:] or "data"
    return Path(subset_dir) / f"{slug}-{fraction * 100:g}pct-seed{seed}.json"


def subset_indices(labels, train_spec: str, fraction: float, seed: int, subset_dir: str | Path) -> tuple:
    """(indices, path, reused): the subset from its file when present, else drawn and written."""
    path = subset_file(subset_dir, train_spec, fraction, seed)
    if path.is_file():
        try:
            idx, _ = load_subset(path, labels)
        except ValueError as err:
            raise EvalError(f"{err}. Delete it, or give another --subsets folder") from None
        return idx, path, True
    idx = label_subset(labels, fraction, seed)
    save_subset(path, idx, labels, fraction=fraction, seed=seed, meta={"data": train_spec})
    return idx, path, False


def fewshot_protocol(ctx: EvalContext, fractions: Sequence[float] = FRACTIONS, seed: int = 0,
                     subset_dir: str | Path | None = None, finetune: bool = True, k: int = 20,
                     finetune_options: dict | None = None) -> dict:
    """``{"1%": {"n", "subset", "knn": {...}, "logistic": {...}, "finetune": {...}}, "10%": ...}``.
    ``fractions``: of the labelled training set."""
    ctx.require_labels("fewshot", "train", "test")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise EvalError(f"--fractions {list(fractions)}: give fractions in (0, 1], e.g. 0.01 0.1")
    t0 = time.time()
    train, test = ctx.features("train", "fewshot"), ctx.features("test", "fewshot")
    labels = train.y
    c = ctx.num_classes("train", "test")
    subset_dir = Path(subset_dir) if subset_dir is not None else ctx.subset_dir
    if subset_dir is None:
        raise EvalError("eval fewshot writes its subsets to a folder: give --out DIR or --subsets DIR")
    result: dict = {}
    for fraction in fractions:
        idx, path, reused = subset_indices(labels, ctx.spec("train", "fewshot"), fraction, seed, subset_dir)
        x, y = train.x[idx], labels[idx]
        entry: dict = {"fraction": fraction, "n": int(idx.numel()), "subset": str(path), "reused": reused}
        entry["knn"] = knn_classify(x, y, test.x, test.y, k=min(k, int(idx.numel())), temperature=0.07,
                                    num_classes=c)
        if int(y.unique().numel()) >= 2:
            with one_thread():
                entry["logistic"] = logistic_regression(x, y, test.x, test.y, LOGISTIC_L2, num_classes=c,
                                                        device=ctx.device)
        if finetune and ctx.model.network is not None:
            from nolabel.evaluate.finetune import finetune_protocol

            entry["finetune"] = finetune_protocol(ctx, idx, seed=seed, desc=f"fine-tune {fraction * 100:g}%",
                                                  **(finetune_options or {}))
        result[f"{fraction * 100:g}%"] = entry
    result["seconds"] = round(time.time() - t0, 2)
    return result
