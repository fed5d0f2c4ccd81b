"""``nolabel eval all``: every protocol that applies, one report (``eval.json`` + ``eval.md``).

Which protocols apply: the supervised ones (k-NN, linear, logistic, few labels,
fine-tuning, clustering, retrieval, t-SNE) need labels; fine-tuning needs weights (not
``pixels``); attention needs a ViT (its Jaccard needs object masks, which ``demo`` has);
copy detection needs only images. A protocol that does not apply, or that is named in
``skip``, is listed under ``skipped`` with the reason. Features are extracted once per
split (and cached on disk) and shared by every protocol.

``fast=True`` shortens every schedule (:data:`FAST`), for smoke tests and CPU previews;
the report records it.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from nolabel.checkpoint import atomic_write
from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.knn import knn_classify
from nolabel.names import EVAL_PROTOCOLS

PROTOCOLS = EVAL_PROTOCOLS   # defined without torch for the CLI's help (nolabel.names)
SUPERVISED = {"knn": ("train", "test"), "linear": ("train", "test"), "logistic": ("train", "test"),
              "fewshot": ("train", "test"), "finetune": ("train", "test"), "clustering": ("test",),
              "retrieval": ("train", "test"), "tsne": ("test",)}
FAST = {"linear": {"epochs": 20, "lrs": (0.03, 0.3), "augment_epochs": 1}, "logistic": {"l2s": (1e-4,)},
        "fewshot": {"finetune_options": {"steps": 5}}, "finetune": {"steps": 10},
        "retrieval": {"max_queries": 500}, "attention": {"max_images": 100}, "tsne": {"iterations": 500},
        "copydetect": {"n_originals": 30, "copies": 1, "n_distractors": 2000, "n_whiten": 2000}}
REPORT_JSON, REPORT_MD = "eval.json", "eval.md"


def knn_from_cache(ctx: EvalContext, k: int = 20, temperature: float = 0.07) -> dict:
    """Weighted k-NN (thesis 5.3.2) on the cached features."""
    ctx.require_labels("knn", "train", "test")
    t0 = time.time()
    train, test = ctx.features("train", "knn"), ctx.features("test", "knn")
    c = max(len(train.classes or []), int(train.y.max()) + 1, int(test.y.max()) + 1)
    result = knn_classify(train.x, train.y, test.x, test.y, k=k, temperature=temperature, num_classes=c)
    result["seconds"] = round(time.time() - t0, 2)
    return result


def runner(name: str):
    """The protocol function ``f(ctx, **options) -> dict`` of a protocol name."""
    if name == "knn":
        return knn_from_cache
    if name in ("linear", "logistic"):
        from nolabel.evaluate import probe
        return probe.linear_protocol if name == "linear" else probe.logistic_protocol
    module = {"fewshot": "fewshot", "finetune": "finetune", "clustering": "clustering", "retrieval": "retrieval",
              "copydetect": "copydetect", "attention": "attention", "tsne": "tsne"}[name]
    import importlib
    return getattr(importlib.import_module(f"nolabel.evaluate.{module}"), f"{name}_protocol")


def why_not(ctx: EvalContext, name: str) -> str | None:
    """The reason protocol ``name`` does not apply here, or None."""
    for role in SUPERVISED.get(name, ()):
        if ctx.specs[role] is None:
            return f"needs --{role}"
        if not ctx.has_labels(role):
            return f"needs labels; --{role} {ctx.specs[role]} has none"
    if name == "finetune" and ctx.model.network is None:
        return "raw pixels have no weights to fine-tune"
    if name == "attention" and ctx.arch != "vit":
        return f"needs a ViT; {ctx.model_spec} is {ctx.describe_model()}"
    if name == "copydetect" and (ctx.specs["train"] is None or ctx.specs["test"] is None):
        return "needs --train (distractors) and --test (originals)"
    return None


def run_all(ctx: EvalContext, skip=(), fast: bool = False, options: dict | None = None) -> dict:
    """Run every applicable protocol; write ``eval.json`` and ``eval.md`` to ``ctx.out``; return the report."""
    unknown = sorted(set(skip) - set(PROTOCOLS))
    if unknown:
        raise EvalError(f"--skip {' '.join(unknown)}: unknown protocol; choose from {', '.join(PROTOCOLS)}")
    t0 = time.time()
    report: dict = {"model": ctx.model_spec, "architecture": ctx.describe_model(), "train": ctx.specs["train"],
                    "test": ctx.specs["test"], "image_size": ctx.image_size, "patch_tokens": ctx.patch_tokens,
                    "fast": fast, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "features": {}, "protocols": {}, "skipped": {}}
    for role in ("train", "test"):
        if ctx.specs[role] is not None:
            f0 = time.time()
            feats = ctx.features(role)
            report["features"][role] = {"n": int(feats.y.numel()), "dim": int(feats.x.shape[1]),
                                        "from_cache": feats.from_cache, "cache_file": str(feats.path),
                                        "seconds": round(time.time() - f0, 2)}
    todo = [n for n in PROTOCOLS if n not in skip]
    report["skipped"].update({n: "--skip" for n in PROTOCOLS if n in skip})
    bar = None
    if ctx.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="eval all", dynamic_ncols=True)
    for name in todo:
        if bar is not None:
            bar.set_postfix_str(name)
        reason = why_not(ctx, name)
        if reason is not None:
            report["skipped"][name] = reason
        else:
            opts = {**(FAST.get(name, {}) if fast else {}), **((options or {}).get(name, {}))}
            try:
                report["protocols"][name] = runner(name)(ctx, **opts)
            except EvalError as err:
                report["skipped"][name] = str(err)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    report["seconds"] = round(time.time() - t0, 2)
    write_report(ctx, report)
    return report


def write_report(ctx: EvalContext, report: dict) -> None:
    from nolabel.evaluate.report import markdown

    text = json.dumps(report, indent=2, default=str)
    atomic_write(ctx.path(REPORT_JSON), lambda tmp: tmp.write_text(text + "\n"))
    md = markdown(report)
    atomic_write(ctx.path(REPORT_MD), lambda tmp: tmp.write_text(md))
