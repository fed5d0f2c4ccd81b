"""``eval attention``: a ViT's [CLS] attention maps, their 60%-mass masks and, where the test
data has object masks (demo), their Jaccard with them (thesis 5.5.2). The work is
:func:`nolabel.evaluate.attention.attention_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import IMAGES, UNUSED, Protocol, frac, given, register


@register
class Attention(Protocol):
    name, order, title = "attention", 80, "attention maps"
    help = "ViT [CLS] attention maps, 60%%-mass masks and their Jaccard (5.5.2)"
    data = {"train": UNUSED, "test": IMAGES}
    needs_vit = True
    masks = "optional"        # Jaccard needs them; the maps are drawn without
    seeded = False
    fast = {"max_images": 100}

    def add_options(self, p) -> None:
        p.add_argument("--max-images", type=int, default=None, help="images scored for Jaccard (default 500)")
        p.add_argument("--show", type=int, default=None, help="images drawn in attention.png (default 6)")
        p.add_argument("--mass", type=float, default=None, help="attention mass kept by the masks (default 0.6)")

    def options(self, args) -> dict:
        return given(max_images=args.max_images, n_show=args.show, mass=args.mass)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.attention import attention_protocol
        return attention_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        if "best_head" not in r:
            return [(f"{r['heads']} heads, {r['n_images']} images", "Jaccard", r.get("jaccard", "-"))]
        per_head = ", ".join(f"{v:.3f}" for v in r["per_head"])
        return [(f"{r['mass']:.0%}-mass masks, {r['n_images']} images", "Jaccard, best head "
                 f"({r['best_head_index']})", frac(r["best_head"])),
                ("", "Jaccard, mean of heads / per-image oracle", f"{frac(r['head_mean'])} / {frac(r['oracle'])}"),
                ("", "Jaccard per head", per_head)]

    def estimate(self, ctx, options: dict, timer) -> float | None:
        from nolabel.evaluate.attention import MAX_IMAGES

        n = min(options.get("max_images", MAX_IMAGES), timer.n_images("test"))
        return n * timer.forward_per_image()
