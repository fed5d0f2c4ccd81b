"""nolabel: self-supervised visual representation learning from unlabelled images."""
__version__ = "0.1.0"


def load_backbone(path, map_location: str = "cpu"):
    """Load a backbone exported with ``nolabel export`` (safetensors, no unpickling)."""
    from nolabel.checkpoint import load_backbone as _load
    return _load(path, map_location)


__all__ = ["load_backbone", "__version__"]
