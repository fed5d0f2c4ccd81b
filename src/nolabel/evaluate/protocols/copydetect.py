"""``eval copydetect``: strongly distorted copies of test images searched among training
images (thesis 5.5.1, Table 5.4); needs images, not labels. The work is
:func:`nolabel.evaluate.copydetect.copydetect_protocol`."""
from __future__ import annotations

from nolabel.evaluate.protocols import IMAGES, Protocol, frac, given, register


@register
class Copydetect(Protocol):
    name, order, title = "copydetect", 70, "copy detection"
    help = "copy detection of distorted test images among distractors (5.5.1)"
    data = {"train": IMAGES, "test": IMAGES}
    fast = {"n_originals": 30, "copies": 1, "n_distractors": 2000, "n_whiten": 2000}

    def add_options(self, p) -> None:
        p.add_argument("--originals", type=int, default=None, help="test images to copy (default 100)")
        p.add_argument("--copies", type=int, default=None, help="distorted copies per original (default 2)")
        p.add_argument("--distractors", type=int, default=None,
                       help="training images hiding the originals (default 10000)")
        p.add_argument("--whiten", type=int, default=None,
                       help="other training images to learn whitening on (default 20000)")
        p.add_argument("--no-whiten", action="store_true", help="score raw features only")

    def options(self, args) -> dict:
        return given(n_originals=args.originals, copies=args.copies, n_distractors=args.distractors,
                     n_whiten=args.whiten, whiten=not args.no_whiten)

    def run(self, ctx, **options) -> dict:
        from nolabel.evaluate.copydetect import copydetect_protocol
        return copydetect_protocol(ctx, **options)

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        setting = f"{r['n_queries']} copies of {r['n_originals']} originals, {r['n_distractors']} distractors"
        out = [(setting, "mAP", frac(r["map"]))]
        if "map_whitened" in r:
            out.append((f"whitening fitted on {r['n_whiten']} other images", "mAP", frac(r["map_whitened"])))
        return out

    def estimate(self, ctx, options: dict, timer) -> float | None:
        from nolabel.evaluate.copydetect import COPIES, N_ORIGINALS

        n = min(options.get("n_originals", N_ORIGINALS), timer.n_images("test")) * options.get("copies", COPIES)
        return n * timer.forward_per_image()
