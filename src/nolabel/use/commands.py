"""The ``nolabel embed``, ``nolabel neighbors`` and ``nolabel duplicates`` subcommands
(the parsers import nothing heavy: ``nolabel --help`` answers before torch is imported).

Features are cached (``--cache DIR``, default :func:`.collection.default_cache_dir`, shared
by the three commands and ``nolabel eval --cache``), so running a second command on the same
model and collection decodes no image. Bad input ends in one line naming the option and what
to do (:class:`.errors.UseError`, exit status 2) before anything is written.
"""
from __future__ import annotations

import sys

COMMANDS = ("embed", "neighbors", "duplicates")
MODEL_HELP = "run folder, exported backbone, random:<backbone>, random:<run> or pixels"
LISTED_UNREADABLE = 10


def _common(p) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="the collection: folder, .tar/.tar.gz, .txt/.csv list, flat:PATH, cifar10:DIR, demo")
    p.add_argument("--image-size", type=int, default=None, help="side images are read at (default: the model's)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache", default=None, help="feature cache folder (default $NOLABEL_CACHE or "
                                                 "~/.cache/nolabel/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached features")


def add_parsers(sub) -> None:
    """Add the three subcommands to the ``nolabel`` subparsers."""
    p = sub.add_parser("embed", help="one embedding per image of a collection (.npy + .csv, or .parquet)",
                       allow_abbrev=False)
    _common(p)
    p.add_argument("--out", required=True, help="FILE.npy (a FILE.csv of paths beside it) or FILE.parquet")
    p.add_argument("--pca", type=int, default=None, metavar="D", help="project onto the top D principal components")
    p = sub.add_parser("neighbors", help="nearest images of a collection to query images, by cosine",
                       allow_abbrev=False)
    _common(p)
    p.add_argument("--query", required=True, help="an image file, or a folder/archive of images")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--out", required=True, help="output folder (neighbors.csv, neighbors.png, neighbors.json)")
    p = sub.add_parser("duplicates", help="groups of near-duplicate and identical images of a collection",
                       allow_abbrev=False)
    _common(p)
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine similarity in [-1, 1] that links two images (default: derived from the collection)")
    p.add_argument("--out", required=True, help="output folder (duplicates.csv, groups/*.png, duplicates.json)")


def _options(args) -> dict:
    from nolabel.evaluate.context import resolve_device
    from nolabel.use.collection import default_cache_dir

    return {"image_size": args.image_size, "batch_size": args.batch_size, "device": resolve_device(args.device),
            "cache_dir": None if args.no_cache else (args.cache or default_cache_dir()), "progress": None}


def _report_unreadable(unreadable: list[dict]) -> None:
    if not unreadable:
        return
    print(f"skipped {len(unreadable)} unreadable file(s):", file=sys.stderr)
    for item in unreadable[:LISTED_UNREADABLE]:
        print(f"  {item['path']}: {item['reason']}", file=sys.stderr)
    if len(unreadable) > LISTED_UNREADABLE:
        print(f"  ... and {len(unreadable) - LISTED_UNREADABLE} more (all listed in the .json output)",
              file=sys.stderr)


def run(args) -> int:
    """Run the subcommand in ``args.command``; UseError propagates to the CLI's handler."""
    if args.command == "embed":
        from nolabel.use.embed import run_embed

        r = run_embed(args.model, args.data, args.out, pca_dim=args.pca, **_options(args))
        pca = f", PCA from {r['pca']['from_dim']} ({100 * r['pca']['explained_variance_ratio']:.1f}% of the " \
              "variance)" if r["pca"] else ""
        print(f"{r['n_images']} embeddings of {r['dim']} dimensions{pca} written to {', '.join(r['files'])}")
    elif args.command == "neighbors":
        from nolabel.use.neighbors import run_neighbors

        r = run_neighbors(args.model, args.data, args.query, args.k, args.out, **_options(args))
        capped = f" (--k {r['k_asked']} capped to the collection)" if r["k"] < r["k_asked"] else ""
        print(f"{r['k']} neighbours{capped} of {r['n_queries']} query image(s) among {r['n_images']}; search: "
              f"{r['index']}; written to {args.out}")
    else:
        from nolabel.use.duplicates import run_duplicates

        r = run_duplicates(args.model, args.data, args.out, threshold=args.threshold, **_options(args))
        print(f"{r['n_groups']} group(s) of duplicates ({r['n_images_in_groups']} of {r['n_images']} images, "
              f"{r['n_exact_copies']} identical copies) at cosine >= {r['threshold']:.4f}, "
              f"{r['threshold_source']}; written to {args.out}")
    _report_unreadable(r["unreadable"])
    return 0
