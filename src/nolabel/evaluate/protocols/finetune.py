"""``eval finetune``: fine-tune the whole backbone with a linear head (thesis Table 5.7);
the work and the default schedule (steps sized to the labelled images) are in
:mod:`nolabel.evaluate.finetune`. The fine-tuning options here are shared with ``eval fewshot``."""
from __future__ import annotations

from nolabel.evaluate.protocols import Protocol, pct, register


def add_finetune_options(p) -> None:
    """--steps, --finetune-batch-size, --lr, --layer-decay (eval finetune, fewshot and all)."""
    p.add_argument("--steps", type=int, default=None,
                   help="fine-tuning optimizer steps (default: 10 epochs of the labelled images, 10 to 40 steps)")
    p.add_argument("--finetune-batch-size", type=int, default=None, help="images per fine-tuning step (32)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning AdamW learning rate (5e-4)")
    p.add_argument("--layer-decay", type=float, default=None, help="ViT layer-wise lr decay, e.g. 0.65 (off)")


def finetune_kwargs(args) -> dict:
    """The fine-tuning options given on the command line, as keyword options."""
    pairs = {"steps": args.steps, "batch_size": args.finetune_batch_size, "lr": args.lr,
             "layer_decay": args.layer_decay}
    return {k: v for k, v in pairs.items() if v is not None}


def finetune_seconds(ctx, timer, n_labelled: int, options: dict) -> float:
    """Planned steps x one measured step, plus scoring the test set."""
    from nolabel.evaluate.finetune import BATCH_SIZE, planned_steps

    batch_size = options.get("batch_size") or BATCH_SIZE
    steps = options.get("steps") or planned_steps(n_labelled, batch_size)
    return steps * timer.finetune_step(batch_size) + timer.n_images("test") * timer.forward_per_image()


@register
class Finetune(Protocol):
    name, order, title = "finetune", 40, "fine-tuning"
    help = "fine-tune the whole backbone with a linear head (Table 5.7)"
    needs_weights = True
    fast = {"steps": 10}

    def add_options(self, p) -> None:
        add_finetune_options(p)
        p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.05)")

    def options(self, args) -> dict:
        return {**finetune_kwargs(args), **({"weight_decay": args.weight_decay} if args.weight_decay is not None else {})}

    def add_all_options(self, p) -> None:
        add_finetune_options(p)

    def all_options(self, args) -> dict:
        return finetune_kwargs(args)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.finetune import finetune_protocol
        return finetune_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        decay = f", layer decay {r['layer_decay']}" if r.get("layer_decay") else ""
        return [(f"{r['steps']} steps x {r['batch_size']} ({r['epochs']:g} epochs), lr {r['lr']:g}{decay}",
                 "top-1 / top-5", f"{pct(r['top1'])} / {pct(r['top5'])}")]

    def estimate(self, ctx, options: dict, timer) -> float | None:
        return finetune_seconds(ctx, timer, timer.n_images("train"), options)
