"""``eval tsne``: a t-SNE plot of the test classes' mean features (thesis 5.5.1, Fig. 5.2);
the work is :func:`nolabel.evaluate.tsne.tsne_protocol`. A figure, so no baseline column."""
from __future__ import annotations

from nolabel.evaluate.protocols import LABELS, UNUSED, Protocol, given, register


@register
class Tsne(Protocol):
    name, order, title = "tsne", 90, "t-SNE of class means"
    help = "t-SNE of class means (5.5.1, Fig. 5.2)"
    data = {"train": UNUSED, "test": LABELS}
    baseline = False
    fast = {"iterations": 500}

    def add_options(self, p) -> None:
        p.add_argument("--iterations", type=int, default=None, help="t-SNE iterations (default 5000)")

    def options(self, args) -> dict:
        return given(iterations=args.iterations)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.tsne import tsne_protocol
        return tsne_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        return [(f"PCA {r['pca_dim']}, perplexity {r['perplexity']:g}", "plot", r["png"])]
