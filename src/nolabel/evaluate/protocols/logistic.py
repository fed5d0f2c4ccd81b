"""``eval logistic``: L-BFGS logistic regression on cached features, L2 chosen on held-out
training images (thesis Table 5.5); the work is :func:`nolabel.evaluate.probe.logistic_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import Protocol, given, pct, register


@register
class Logistic(Protocol):
    name, order, title = "logistic", 20, "logistic regression"
    help = "logistic regression on cached features (thesis Table 5.5)"
    fast = {"l2s": (1e-4,)}

    def add_options(self, p) -> None:
        p.add_argument("--l2", type=float, nargs="+", default=None, help="L2 penalties to choose from on val")
        p.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations (default 100)")

    def options(self, args) -> dict:
        return given(l2s=tuple(args.l2) if args.l2 else None, max_iter=args.max_iter)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.probe import logistic_protocol
        return logistic_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        return [(f"L-BFGS, L2 {r['l2']:g} chosen on val", "top-1 / top-5", f"{pct(r['top1'])} / {pct(r['top5'])}")]
