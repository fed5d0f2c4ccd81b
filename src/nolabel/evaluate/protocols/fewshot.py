"""``eval fewshot``: 1% and 10% of the training labels (thesis Tables 4.1, 5.5): k-NN,
logistic regression and fine-tuning on each stratified subset; the work is
:func:`nolabel.evaluate.fewshot.fewshot_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import Protocol, given, pct, register
from nolabel.evaluate.protocols.finetune import add_finetune_options, finetune_kwargs, finetune_seconds



@register
class Fewshot(Protocol):
    name, order, title = "fewshot", 30, "few labels"
    help = "1%% and 10%% of the labels: k-NN, logistic regression, fine-tuning (Tables 4.1, 5.5)"
    fast = {"finetune_options": {"steps": 5}}

    def add_options(self, p) -> None:
        p.add_argument("--fractions", type=float, nargs="+", default=None,
                       help="fractions of the training labels (default 0.01 0.1)")
        p.add_argument("--subsets", default=None, help="folder of the subset files (default <out>/subsets)")
        p.add_argument("--no-finetune", action="store_true", help="k-NN and logistic regression only")
        add_finetune_options(p)

    def options(self, args) -> dict:
        return given(fractions=tuple(args.fractions) if args.fractions else None, subset_dir=args.subsets,
                     finetune=not args.no_finetune, finetune_options=finetune_kwargs(args))

    def add_all_options(self, p) -> None:   # the fine-tuning options come with eval finetune's
        p.add_argument("--subsets", default=None, help="folder of the few-label subset files (default <out>/subsets)")

    def all_options(self, args) -> dict:
        ft = finetune_kwargs(args)
        return {**({"finetune_options": ft} if ft else {}), **({"subset_dir": args.subsets} if args.subsets else {})}

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.fewshot import fewshot_protocol
        return fewshot_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        out = []
        for key, e in r.items():
            if not isinstance(e, dict):
                continue
            cells = [f"k-NN {pct(e['knn']['top1'])}"]
            if "logistic" in e:
                cells.append(f"logistic {pct(e['logistic']['top1'])}")
            if "finetune" in e:
                cells.append(f"fine-tune {pct(e['finetune']['top1'])}")
            out.append((f"{key} of labels ({e['n']} images)", "top-1", ", ".join(cells)))
        return out

    def estimate(self, ctx, options: dict, timer) -> float | None:
        if not options.get("finetune", True) or ctx.model.network is None:
            return None
        from nolabel.evaluate.fewshot import FRACTIONS
        n_train, n_classes = timer.n_images("train"), ctx.num_classes("train", "test")
        return sum(finetune_seconds(ctx, timer, max(n_classes, round(f * n_train)), options.get("finetune_options", {}))
                   for f in options.get("fractions", FRACTIONS))
