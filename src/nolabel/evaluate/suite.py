"""``nolabel eval all``: every protocol that applies, one report (``eval.json`` + ``eval.md``).

The protocols are those of the registry (:mod:`nolabel.evaluate.protocols`), in their
declared order. Which apply follows from what each declares it needs (labelled
``--train`` / ``--test``, a ViT, weights): one that does not apply, or that is named in
``skip``, is listed under ``skipped`` with the reason. Features are extracted once per
split (and cached on disk) and shared by every protocol.

Before the protocols start, each estimates its time from one measured fine-tuning step
and one measured forward pass (:mod:`nolabel.evaluate.estimate`); the estimate is
printed and kept in the report next to the time each protocol took.

``fast=True`` shortens every schedule (each protocol's ``fast`` options), for smoke tests
and CPU previews; the report records it. ``baselines=True`` runs the same protocols
again on the same data with a randomly initialised copy of the architecture
(``random:<model>``) and on raw pixels (``pixels``), at the same image size, where they
apply (not fine-tuning for pixels, not attention maps without a ViT, no t-SNE
figure): ``eval.json`` has them under ``baselines`` and ``eval.md`` shows them side by side.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

from nolabel.atomic import atomic_write
from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.protocols import get_protocol, protocol_names
from nolabel.evaluate.report import BASELINES, markdown

REPORT_JSON, REPORT_MD = "eval.json", "eval.md"


def why_not(ctx: EvalContext, name: str) -> str | None:
    """The reason protocol ``name`` does not apply here, or None (from its declaration)."""
    return get_protocol(name).why_not(ctx)


def merged(defaults: dict, given: dict) -> dict:
    """``given`` over ``defaults``, one level deep (``{"finetune_options": {...}}`` merge too)."""
    out = dict(defaults)
    for key, value in given.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def options_of(ctx: EvalContext, name: str, fast: bool = False, given: dict | None = None) -> dict:
    """The keyword options protocol ``name`` runs with: its ``fast`` ones under ``fast``, the
    given ones over them, and the context's seed for seeded protocols."""
    protocol = get_protocol(name)
    options = merged(protocol.fast if fast else {}, given or {})
    if protocol.seeded:
        options.setdefault("seed", ctx.seed)
    return options


def feature_summary(ctx: EvalContext) -> dict:
    """Extract (or load) the features of each given split: ``{role: {"n", "dim", "from_cache", ...}}``."""
    summary = {}
    for role in ("train", "test"):
        if ctx.specs[role] is not None:
            f0 = time.time()
            feats = ctx.features(role)
            summary[role] = {"n": int(feats.y.numel()), "dim": int(feats.x.shape[1]), "from_cache": feats.from_cache,
                             "cache_file": str(feats.path), "seconds": round(time.time() - f0, 2)}
    return summary


def plan(ctx: EvalContext, names, skip=(), fast: bool = False, options: dict | None = None) -> tuple[dict, dict]:
    """(``{name: options}`` of the protocols that apply, ``{name: reason}`` of the others)."""
    planned, skipped = {}, {}
    for name in names:
        reason = "--skip" if name in skip else why_not(ctx, name)
        if reason is not None:
            skipped[name] = reason
        else:
            planned[name] = options_of(ctx, name, fast, (options or {}).get(name, {}))
    return planned, skipped


def run_planned(ctx: EvalContext, planned: dict, section: dict, desc: str) -> None:
    """Run each planned protocol into ``section["protocols"]``; an EvalError goes to ``section["skipped"]``."""
    bar = None
    if ctx.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(planned), desc=desc, dynamic_ncols=True)
    for name, options in planned.items():
        if bar is not None:
            bar.set_postfix_str(name)
        try:
            section["protocols"][name] = get_protocol(name).run(ctx, **options)
        except EvalError as err:
            section["skipped"][name] = str(err)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def baseline_contexts(ctx: EvalContext) -> dict[str, EvalContext]:
    """``{"random": random:<model>, "pixels": pixels}`` on the same data at the same image
    size, each with its own output folder under ``<out>/baselines`` and the model's
    feature cache and few-label subsets; a baseline the model already is is left out."""
    specs = {}
    if ctx.model.network is not None and not ctx.model_spec.startswith("random:"):
        specs["random"] = f"random:{ctx.model_spec}"
    if ctx.arch != "pixels":
        specs["pixels"] = "pixels"
    return {key: EvalContext(spec, ctx.specs["train"], ctx.specs["test"], out=ctx.out / "baselines" / key,
                             cache_dir=ctx.cache_dir, use_cache=ctx.use_cache, subset_dir=ctx.subset_dir,
                             patch_tokens=ctx.patch_tokens if key != "pixels" else "none",
                             batch_size=ctx.batch_size, device=ctx.device, progress=ctx.progress, seed=ctx.seed,
                             image_size=ctx.image_size)
            for key, spec in specs.items()}


def run_all(ctx: EvalContext, skip=(), fast: bool = False, options: dict | None = None, baselines: bool = False,
            log: Callable[[str], None] | None = None) -> dict:
    """Run every applicable protocol (and, with ``baselines``, the baselines' columns);
    write ``eval.json`` and ``eval.md`` to ``ctx.out``; return the report. ``log`` gets the
    time estimate before the protocols start."""
    names = protocol_names()
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise EvalError(f"--skip {' '.join(unknown)}: unknown protocol; choose from {', '.join(names)}")
    t0 = time.time()
    report: dict = {"model": ctx.model_spec, "architecture": ctx.describe_model(), "train": ctx.specs["train"],
                    "test": ctx.specs["test"], "image_size": ctx.image_size, "patch_tokens": ctx.patch_tokens,
                    "fast": fast, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "features": feature_summary(ctx), "protocols": {}, "skipped": {}}
    planned, report["skipped"] = plan(ctx, names, skip, fast, options)
    columns = {}
    if baselines:
        report["baselines"] = {}
        for key, bctx in baseline_contexts(ctx).items():
            wanted = [n for n in planned if get_protocol(n).baseline]
            b_planned, b_skipped = plan(bctx, wanted, (), fast, options)
            columns[key] = (bctx, b_planned)
            report["baselines"][key] = {"model": bctx.model_spec, "architecture": bctx.describe_model(),
                                        "features": feature_summary(bctx), "protocols": {}, "skipped": b_skipped}
    report["estimates"] = _estimates(ctx, planned, columns, log)
    run_planned(ctx, planned, report, "eval all")
    for key, (bctx, b_planned) in columns.items():
        run_planned(bctx, b_planned, report["baselines"][key], f"eval all ({BASELINES[key]})")
    report["seconds"] = round(time.time() - t0, 2)
    write_report(ctx, report)
    return report


def _estimates(ctx: EvalContext, planned: dict, columns: dict, log) -> dict:
    """``{"model": {protocol: seconds or None}, <baseline>: {...}}``, logged in one line each."""
    from nolabel.evaluate.estimate import describe, estimate_seconds

    estimates = {"model": estimate_seconds(ctx, planned)}
    for key, (bctx, b_planned) in columns.items():
        estimates[key] = estimate_seconds(bctx, b_planned)
    if log is not None:
        for key, values in estimates.items():
            log(f"estimated time ({'the model' if key == 'model' else BASELINES[key]}): {describe(values)}")
    return {key: {n: None if s is None else round(s, 3) for n, s in values.items()} for key, values in estimates.items()}


def write_report(ctx: EvalContext, report: dict) -> None:
    text = json.dumps(report, indent=2, default=str)
    atomic_write(ctx.path(REPORT_JSON), lambda tmp: tmp.write_text(text + "\n"))
    md = markdown(report)
    atomic_write(ctx.path(REPORT_MD), lambda tmp: tmp.write_text(md))
