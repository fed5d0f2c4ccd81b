"""nolabel: self-supervised visual representation learning from unlabelled images."""
__version__ = "0.1.0"


def load_backbone(path, map_location: str = "cpu"):
    """Load a trained backbone in eval mode: an export folder (``nolabel export``:
    safetensors, no unpickling) or a run folder (``nolabel train``: its checkpoint)."""
    from nolabel.runs import is_run, load_backbone as _load, load_encoder

    if is_run(path):
        return load_encoder(path, map_location)[0]
    return _load(path, map_location)    # an export, or the message saying what an export holds


def embed(model, images_or_spec, **options):
    """Embeddings of images (a data spec, image files or a uint8 tensor): float32 (N, D).
    See :func:`nolabel.use.api.embed`."""
    from nolabel.use.api import embed as _embed
    return _embed(model, images_or_spec, **options)


def neighbors(model, query, data, k: int = 10, **options):
    """(similarities (Q, k), indices (Q, k)) of the images of ``data`` nearest to each query
    by cosine. See :func:`nolabel.use.api.neighbors`."""
    from nolabel.use.api import neighbors as _neighbors
    return _neighbors(model, query, data, k, **options)


def duplicates(model, data, threshold=None, **options):
    """Groups (arrays of row indices) of near-duplicate images of ``data``. See
    :func:`nolabel.use.api.duplicates`."""
    from nolabel.use.api import duplicates as _duplicates
    return _duplicates(model, data, threshold, **options)


__all__ = ["load_backbone", "embed", "neighbors", "duplicates", "__version__"]
