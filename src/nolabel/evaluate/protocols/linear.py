"""``eval linear``: a linear probe with a learning-rate sweep chosen on held-out training
images (thesis 5.3.2); the work is :func:`nolabel.evaluate.probe.linear_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import Protocol, given, pct, register


@register
class Linear(Protocol):
    name, order, title = "linear", 10, "linear probe"
    help = "linear probe with a learning-rate sweep (thesis 5.3.2)"
    fast = {"epochs": 20, "lrs": (0.03, 0.3), "augment_epochs": 1}

    def add_options(self, p) -> None:
        p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates to sweep")
        p.add_argument("--epochs", type=int, default=None, help="epochs on cached features (default 100)")
        p.add_argument("--augment", action="store_true", help="train on random-resized-crop + flip views on the fly")
        p.add_argument("--augment-epochs", type=int, default=None, help="epochs with --augment (default 10)")

    def options(self, args) -> dict:
        return given(lrs=tuple(args.lrs) if args.lrs else None, epochs=args.epochs, augment=args.augment,
                     augment_epochs=args.augment_epochs)

    def add_all_options(self, p) -> None:
        p.add_argument("--augment", action="store_true", help="linear probe on augmented views")

    def all_options(self, args) -> dict:
        return {"augment": True} if args.augment else {}

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.probe import linear_protocol
        return linear_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        how = "augmented views" if r.get("augment") else "cached features"
        sweep = ", ".join(f"{x['lr']:g}: {x['val_top1']:.1f}" for x in r["runs"])
        return [(f"{how}, {r['epochs']} epochs, lr {r['lr']:g} chosen on val", "top-1 / top-5",
                 f"{pct(r['top1'])} / {pct(r['top5'])}"), ("lr sweep", "val top-1 per lr", sweep)]

    def estimate(self, ctx, options: dict, timer) -> float | None:
        if not options.get("augment"):
            return None                      # SGD on cached features
        from nolabel.evaluate.probe import AUGMENT_EPOCHS
        return options.get("augment_epochs", AUGMENT_EPOCHS) * timer.n_images("train") * timer.forward_per_image()
