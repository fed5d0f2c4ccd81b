"""``eval retrieval``: test images query the training set by cosine similarity; mAP and
recall@k (thesis 5.5.1); the work is :func:`nolabel.evaluate.retrieval.retrieval_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import Protocol, frac, given, register


@register
class Retrieval(Protocol):
    name, order, title = "retrieval", 60, "retrieval"
    help = "test images query the training set: mAP, recall@k (5.5.1)"
    fast = {"max_queries": 500}

    def add_options(self, p) -> None:
        p.add_argument("--ks", type=int, nargs="+", default=None, help="recall@k for these k (default 1 5 10)")
        p.add_argument("--max-queries", type=int, default=None, help="sample this many queries")

    def options(self, args) -> dict:
        return given(ks=tuple(args.ks) if args.ks else None, max_queries=args.max_queries)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.retrieval import retrieval_protocol
        return retrieval_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        recalls = [k for k in r if k.startswith("recall@")]
        return [(f"{r['n_scored']} test queries, {r['n_db']} train images", "mAP", frac(r["map"])),
                ("", " / ".join(recalls), " / ".join(frac(r[k]) for k in recalls))]
