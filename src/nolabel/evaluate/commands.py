"""The ``nolabel eval <protocol>`` and ``nolabel eval all`` subcommands (``eval knn`` lives in
``nolabel.cli``). Each writes ``<out>/<protocol>.json`` and prints its results; ``all``
writes ``eval.json`` and ``eval.md``. Features are cached under ``<out>/cache`` unless
``--cache DIR`` (e.g. one folder shared by several --out) or ``--no-cache`` is given.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from nolabel.names import EVAL_PROTOCOLS as PROTOCOLS, PATCH_POOLS   # no torch: `nolabel --help` stays fast

MODEL_HELP = "run folder, exported backbone, random:<backbone>, random:<run> or pixels"
HELP = {"linear": "linear probe with a learning-rate sweep (thesis 5.3.2)",
        "logistic": "logistic regression on cached features (thesis Table 5.5)",
        "fewshot": "1%% and 10%% of the labels: k-NN, logistic regression, fine-tuning (Tables 4.1, 5.5)",
        "finetune": "fine-tune the whole backbone with a linear head (Table 5.7)",
        "clustering": "k-means NMI/AMI/ARI/purity and a cluster image grid (thesis 3.2.2)",
        "retrieval": "test images query the training set: mAP, recall@k (5.5.1)",
        "copydetect": "copy detection of distorted test images among distractors (5.5.1)",
        "attention": "ViT [CLS] attention maps, 60%%-mass masks and their Jaccard (5.5.2)",
        "tsne": "t-SNE of class means (5.5.1, Fig. 5.2)",
        "all": "run every protocol that applies; write eval.json and eval.md"}
# (train, test) options of each protocol: "required" or "optional" (accepted, unused: these read the test set)
DATA = {"clustering": ("optional", "required"), "attention": ("optional", "required"), "tsne": ("optional", "required")}


def _common(p, name: str) -> None:
    p.add_argument("model", help=MODEL_HELP)
    train, test = DATA.get(name, ("required", "required"))
    p.add_argument("--train", required=train == "required",
                   help="training data spec" + (" (not used by this protocol)" if train == "optional" else ""))
    p.add_argument("--test", required=test == "required", help="test data spec")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<model>)")
    p.add_argument("--cache", default=None, help="feature cache folder (default <out>/cache)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")
    p.add_argument("--patch-tokens", choices=PATCH_POOLS, default="none",
                   help="ViT features: [CLS] alone (none), or with average / GeM pooled patch tokens (5.5.1)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass for features")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result to this JSON file")


def _finetune_options(p, steps_default: int | None) -> None:
    p.add_argument("--steps", type=int, default=steps_default, help="fine-tuning optimizer steps (default 40)")
    p.add_argument("--finetune-batch-size", type=int, default=None, help="images per fine-tuning step (32)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning AdamW learning rate (5e-4)")
    p.add_argument("--layer-decay", type=float, default=None, help="ViT layer-wise lr decay, e.g. 0.65 (off)")


def add_parsers(esub) -> None:
    """Add every protocol subcommand but ``knn`` to the ``eval`` subparsers."""
    parsers = {}
    for name in ("all",) + tuple(n for n in PROTOCOLS if n != "knn"):
        parsers[name] = p = esub.add_parser(name, help=HELP[name], allow_abbrev=False)
        p.set_defaults(eval_protocol=name)  # `eval knn --protocol` reuses the subcommand's dest
        _common(p, name)
    p = parsers["linear"]
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates to sweep")
    p.add_argument("--epochs", type=int, default=100, help="epochs on cached features")
    p.add_argument("--augment", action="store_true", help="train on random-resized-crop + flip views on the fly")
    p.add_argument("--augment-epochs", type=int, default=10, help="epochs with --augment")
    p = parsers["logistic"]
    p.add_argument("--l2", type=float, nargs="+", default=None, help="L2 penalties to choose from on val")
    p.add_argument("--max-iter", type=int, default=100)
    p = parsers["fewshot"]
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--subsets", default=None, help="folder of the subset files (default <out>/subsets)")
    p.add_argument("--no-finetune", action="store_true", help="k-NN and logistic regression only")
    _finetune_options(p, None)
    _finetune_options(parsers["finetune"], None)
    parsers["finetune"].add_argument("--weight-decay", type=float, default=0.05)
    parsers["clustering"].add_argument("--multiples", type=int, nargs="+", default=[1, 10],
                                       help="k = multiple x number of classes")
    parsers["clustering"].add_argument("--no-grid", action="store_true", help="skip the PNG of cluster images")
    parsers["retrieval"].add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    parsers["retrieval"].add_argument("--max-queries", type=int, default=None, help="sample this many queries")
    p = parsers["copydetect"]
    p.add_argument("--originals", type=int, default=100, help="test images to copy")
    p.add_argument("--copies", type=int, default=2, help="distorted copies per original")
    p.add_argument("--distractors", type=int, default=10000, help="training images hiding the originals")
    p.add_argument("--whiten", type=int, default=20000, help="other training images to learn whitening on")
    p.add_argument("--no-whiten", action="store_true")
    p = parsers["attention"]
    p.add_argument("--max-images", type=int, default=500, help="images scored for Jaccard")
    p.add_argument("--show", type=int, default=6, help="images drawn in attention.png")
    p.add_argument("--mass", type=float, default=0.6, help="attention mass kept by the masks")
    parsers["tsne"].add_argument("--iterations", type=int, default=5000)
    p = parsers["all"]
    p.add_argument("--skip", nargs="+", default=[], metavar="PROTOCOL", help=f"any of: {', '.join(PROTOCOLS)}")
    p.add_argument("--fast", action="store_true", help="short schedules everywhere (a preview)")
    p.add_argument("--augment", action="store_true", help="linear probe on augmented views")
    p.add_argument("--subsets", default=None, help="folder of the few-label subset files (default <out>/subsets)")
    _finetune_options(p, None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/")).strip("_.")[-60:] or "model"


def _finetune_kwargs(args) -> dict:
    pairs = {"steps": args.steps, "batch_size": args.finetune_batch_size, "lr": args.lr,
             "layer_decay": args.layer_decay}
    return {k: v for k, v in pairs.items() if v is not None}


def _options(args) -> dict:
    """Keyword options of the protocol function, from the parsed arguments."""
    name = args.eval_protocol
    seed = {"seed": args.seed}
    if name == "linear":
        lrs = {"lrs": tuple(args.lrs)} if args.lrs else {}
        return {**lrs, "epochs": args.epochs, "augment": args.augment, "augment_epochs": args.augment_epochs, **seed}
    if name == "logistic":
        return {**({"l2s": tuple(args.l2)} if args.l2 else {}), "max_iter": args.max_iter, **seed}
    if name == "fewshot":
        return {"fractions": tuple(args.fractions), "subset_dir": args.subsets, "finetune": not args.no_finetune,
                "finetune_options": _finetune_kwargs(args), **seed}
    if name == "finetune":
        return {**_finetune_kwargs(args), "weight_decay": args.weight_decay, **seed}
    if name == "clustering":
        return {"multiples": tuple(args.multiples), "grid": not args.no_grid, **seed}
    if name == "retrieval":
        return {"ks": tuple(args.ks), "max_queries": args.max_queries, **seed}
    if name == "copydetect":
        return {"n_originals": args.originals, "copies": args.copies, "n_distractors": args.distractors,
                "n_whiten": args.whiten, "whiten": not args.no_whiten, **seed}
    if name == "attention":
        return {"max_images": args.max_images, "n_show": args.show, "mass": args.mass}
    if name == "tsne":
        return {"iterations": args.iterations, **seed}
    raise ValueError(name)


def _all_options(args) -> dict:
    """Per-protocol options of ``eval all`` (only those given; --fast fills the rest)."""
    ft = _finetune_kwargs(args)
    opts: dict = {"linear": {"augment": True} if args.augment else {}, "finetune": dict(ft)}
    fewshot = {"finetune_options": {**({"steps": 5} if args.fast else {}), **ft}} if ft or args.fast else {}
    opts["fewshot"] = {**fewshot, **({"subset_dir": args.subsets} if args.subsets else {})}
    for name in PROTOCOLS:
        opts.setdefault(name, {})["seed"] = args.seed
    for name in ("knn", "attention"):
        opts[name].pop("seed")
    return opts


def run(args) -> int:
    """Run ``nolabel eval <protocol>`` (not knn) from parsed arguments."""
    from nolabel.evaluate.context import EvalContext
    from nolabel.evaluate.report import TITLES, rows
    from nolabel.evaluate.suite import run_all, runner

    out = Path(args.out) if args.out else Path("runs/eval") / _slug(args.model)
    ctx = EvalContext(args.model, getattr(args, "train", None), getattr(args, "test", None), out=out,
                      cache_dir=args.cache, patch_tokens=args.patch_tokens, batch_size=args.batch_size,
                      device=args.device, use_cache=not args.no_cache, seed=args.seed)
    name = args.eval_protocol
    if name == "all":
        report = run_all(ctx, skip=args.skip, fast=args.fast, options=_all_options(args))
        for name, result in report["protocols"].items():
            for setting, metric, value in rows(name, result):
                print(f"{TITLES[name]:<22} {metric}: {value}" + (f"  ({setting})" if setting else ""))
        for name, why in report["skipped"].items():
            print(f"{TITLES[name]:<22} skipped: {why}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"report: {ctx.out / 'eval.md'} and {ctx.out / 'eval.json'} ({report['seconds']:.0f} s)")
        return 0
    result = runner(name)(ctx, **_options(args))
    result = {"model": args.model, "train": getattr(args, "train", None), "test": getattr(args, "test", None),
              "image_size": ctx.image_size, "patch_tokens": ctx.patch_tokens, **result}
    text = json.dumps(result, indent=2, default=str)
    for target in [ctx.path(f"{name}.json")] + ([Path(args.json)] if args.json else []):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    for setting, metric, value in rows(name, result):
        print(f"{TITLES[name]} ({args.model}) {metric}: {value}" + (f"  [{setting}]" if setting else ""))
    print(f"result: {ctx.path(name + '.json')}")
    return 0
