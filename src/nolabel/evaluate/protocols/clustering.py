"""``eval clustering``: k-means NMI / AMI / ARI / purity of the test features and a grid of
cluster images (thesis 3.2.2); the work is :func:`nolabel.evaluate.clustering.clustering_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import LABELS, UNUSED, Protocol, frac, given, register


@register
class Clustering(Protocol):
    name, order, title = "clustering", 50, "clustering"
    help = "k-means NMI/AMI/ARI/purity and a cluster image grid (thesis 3.2.2)"
    data = {"train": UNUSED, "test": LABELS}

    def add_options(self, p) -> None:
        p.add_argument("--multiples", type=int, nargs="+", default=None,
                       help="k = multiple x number of classes (default 1 10)")
        p.add_argument("--no-grid", action="store_true", help="skip the PNG of cluster images")

    def options(self, args) -> dict:
        return given(multiples=tuple(args.multiples) if args.multiples else None, grid=not args.no_grid)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.clustering import clustering_protocol
        return clustering_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        return [(f"k-means k={e['k']} ({key.split('=')[1]} classes)", "NMI / AMI / ARI / purity",
                 " / ".join(frac(e[m]) for m in ("nmi", "ami", "ari", "purity")))
                for key, e in r.items() if key.startswith("k=")]
