"""The ``nolabel eval <protocol>`` and ``nolabel eval all`` subcommands, built from the
protocol registry (:mod:`nolabel.evaluate.protocols`): every protocol gets the common
options below and declares its own.

Each writes ``<out>/<protocol>.json`` and prints its results; ``all`` writes ``eval.json``,
``eval.md`` and ``eval.html``. Features are cached under ``<out>/cache`` unless ``--cache DIR`` (e.g.
one folder shared by several --out) or ``--no-cache`` is given. A protocol that declares
``writes_without_out = False`` (k-NN) writes nothing unless ``--out`` or ``--json`` is given.

Nothing here imports torch at the top: the parsers are built for ``nolabel --help``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from nolabel.evaluate.protocols import UNUSED, get_protocol, protocol_names, protocols
from nolabel.names import PATCH_POOLS

MODEL_HELP = "run folder, exported backbone, random:<backbone>, random:<run> or pixels"
ALL_HELP = "run every protocol that applies; write eval.json, eval.md and eval.html"


def _common(p, data: dict[str, str], writes: bool = True) -> None:
    p.add_argument("model", help=MODEL_HELP)
    for role, what in (("train", "training data spec"), ("test", "test data spec")):
        unused = data.get(role) == UNUSED
        p.add_argument(f"--{role}", required=not unused, help=what + (" (not used by this protocol)" if unused else ""))
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<model>)" if writes else
                   "output folder for the result and the feature cache (default: none, nothing is written)")
    p.add_argument("--cache", default=None, help="feature cache folder (default <out>/cache)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    p.add_argument("--patch-tokens", choices=PATCH_POOLS, default="none",
                   help="ViT features: [CLS] alone (none), or with average / GeM pooled patch tokens (5.5.1)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass for features")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: the GPU if there is one)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, subsets, k-means and fine-tuning")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")


def add_parsers(esub) -> None:
    """Add ``all`` and every registered protocol to the ``eval`` subparsers."""
    p = esub.add_parser("all", help=ALL_HELP, allow_abbrev=False)
    p.set_defaults(eval_protocol="all")
    _common(p, {})
    names = protocol_names()
    p.add_argument("--skip", nargs="+", default=[], metavar="PROTOCOL", help=f"any of: {', '.join(names)}")
    p.add_argument("--fast", action="store_true", help="short schedules everywhere (a preview)")
    p.add_argument("--baselines", action="store_true",
                   help="also run the protocols on a random initialisation of the model and on raw pixels")
    for protocol in protocols():
        protocol.add_all_options(p)
    for protocol in protocols():
        sp = esub.add_parser(protocol.name, help=protocol.help, allow_abbrev=False)
        sp.set_defaults(eval_protocol=protocol.name)
        _common(sp, protocol.data, protocol.writes_without_out)
        protocol.add_options(sp)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/")).strip("_.")[-60:] or "model"


def _write_json(data: dict, *targets: Path) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def run(args) -> int:
    """Run ``nolabel eval <protocol>`` or ``nolabel eval all`` from parsed arguments."""
    from nolabel.evaluate.context import EvalContext

    name = args.eval_protocol
    writes = name == "all" or get_protocol(name).writes_without_out
    out = Path(args.out) if args.out else (Path("runs/eval") / _slug(args.model) if writes else None)
    ctx = EvalContext(args.model, getattr(args, "train", None), getattr(args, "test", None), out=out,
                      cache_dir=args.cache, patch_tokens=args.patch_tokens, batch_size=args.batch_size,
                      device=args.device, use_cache=not args.no_cache, seed=args.seed)
    if name == "all":
        return _run_all(ctx, args)
    from nolabel.evaluate.suite import options_of

    protocol = get_protocol(name)
    result = protocol.run(ctx, **options_of(ctx, name, given=protocol.options(args)))
    result = {"model": args.model, "train": getattr(args, "train", None), "test": getattr(args, "test", None),
              "image_size": ctx.image_size, "patch_tokens": ctx.patch_tokens, **result}
    targets = ([ctx.path(f"{name}.json")] if ctx.out is not None else []) + ([Path(args.json)] if args.json else [])
    _write_json(result, *targets)
    for line in protocol.summary(result, args.model):
        print(line)
    if ctx.out is not None:
        print(f"result: {ctx.path(name + '.json')}")
    return 0


def _run_all(ctx, args) -> int:
    from nolabel.evaluate.report import BASELINES, baseline_cells
    from nolabel.evaluate.suite import REPORT_JSON, REPORT_MD, run_all

    options = {p.name: p.all_options(args) for p in protocols()}
    report = run_all(ctx, skip=args.skip, fast=args.fast, options=options, baselines=args.baselines, log=print)
    from nolabel.report import write_eval_html
    page = write_eval_html(ctx.out)                  # eval.html beside eval.md: one page, opens offline
    keys = [k for k in BASELINES if k in report.get("baselines", {})]
    for name, result in report["protocols"].items():
        protocol = get_protocol(name)
        rows = protocol.rows(result)
        for (setting, metric, value), others in zip(rows, baseline_cells(report, name, len(rows))):
            beside = "; ".join(f"{BASELINES[k]}: {v}" for k, v in zip(keys, others) if v)
            print(f"{protocol.title:<22} {metric}: {value}" + (f"  ({setting})" if setting else "")
                  + (f"  [{beside}]" if beside else ""))
    for name, why in report["skipped"].items():
        print(f"{get_protocol(name).title:<22} skipped: {why}")
    if args.json:
        _write_json(report, Path(args.json))
    print(f"report: {ctx.out / REPORT_MD}, {page.name} and {REPORT_JSON} ({report['seconds']:.0f} s)")
    return 0
