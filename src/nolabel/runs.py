"""The two folders nolabel writes and reads back: a run folder and an export folder.

A run folder (``nolabel train --out``) holds ``config.yaml`` (every value of the run),
``checkpoint.pt`` and ``checkpoint.prev.pt`` (:mod:`nolabel.checkpoint`), ``encoder.json``
(the encoder's build arguments as trained), ``metrics.jsonl``, ``train.log`` and
``skipped_files.txt``. An export folder (``nolabel export``) holds ``backbone.safetensors``
and ``config.json`` (the backbone's build arguments plus the image size and preprocessing).
This module names those files, says which folder is which, and loads the encoder of
either; training, the CLI, evaluation and the ``use`` commands import it, it imports
none of them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from nolabel.atomic import atomic_write
from nolabel.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint, state_with_prefix

__all__ = ["CONFIG_FILE", "CHECKPOINT", "PREVIOUS", "ENCODER_FILE", "BAD_FILES", "EXPORT_WEIGHTS", "EXPORT_CONFIG",
           "is_run", "is_export", "encoder_architecture", "load_encoder", "export_backbone", "load_backbone"]

CONFIG_FILE = "config.yaml"
ENCODER_FILE = "encoder.json"
BAD_FILES = "skipped_files.txt"
EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_CONFIG = "config.json"


def is_run(path: str | Path) -> bool:
    """A run folder with a checkpoint to read the encoder from."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINT).is_file()


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path / EXPORT_CONFIG).is_file() and (path / EXPORT_WEIGHTS).is_file()


def encoder_architecture(path: str | Path) -> tuple[dict, int | None]:
    """(``build_backbone`` keyword arguments, image size) of a run or export folder, no weights."""
    from nolabel.config import load_yaml
    from nolabel.presets import backbone_kwargs

    path = Path(path)
    if is_run(path):
        cfg = load_yaml(path / CONFIG_FILE)
        if (path / ENCODER_FILE).is_file():     # written by the loop: the encoder as trained
            return json.loads((path / ENCODER_FILE).read_text()), cfg.data.image_size
        return {"name": cfg.model.backbone, "image_size": cfg.data.image_size, **backbone_kwargs(cfg)}, \
            cfg.data.image_size
    config = json.loads((path / EXPORT_CONFIG).read_text())
    return dict(config["backbone"]), config.get("image_size")


def _run_encoder(path: Path, map_location: str) -> tuple[nn.Module, int]:
    """The trained encoder of a run folder (the method's ``encoder_prefix`` weights of its checkpoint)."""
    from nolabel.backbones import build_backbone
    from nolabel.config import load_yaml
    from nolabel.methods import get_method

    cfg = load_yaml(path / CONFIG_FILE)
    network = build_backbone(**encoder_architecture(path)[0])
    state = load_checkpoint(path / CHECKPOINT, map_location=map_location)["method"]
    network.load_state_dict(state_with_prefix(state, get_method(cfg.method).encoder_prefix))
    return network, cfg.data.image_size


def load_encoder(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, int | None]:
    """(encoder in eval mode, the image size it was trained at) of a run or an export folder.
    Raises ValueError when ``path`` is neither."""
    path = Path(path)
    if is_run(path):
        network, size = _run_encoder(path, map_location)
        return network.eval(), size
    if is_export(path):
        network = load_backbone(path, map_location)
        return network, network.export_config.get("image_size")
    what = "no such path" if not path.exists() else \
        f"neither a run folder ({CONFIG_FILE} + {CHECKPOINT}) nor an export ({EXPORT_CONFIG} + {EXPORT_WEIGHTS})"
    raise ValueError(f"{path}: {what}")


def export_backbone(backbone: nn.Module, out_dir: Path, meta: dict[str, Any]) -> Path:
    """Write ``backbone.safetensors`` and ``config.json`` (the backbone's ``spec`` plus
    ``meta``) into ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    atomic_write(out_dir / EXPORT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    config = {"backbone": backbone.spec, **meta}
    atomic_write(out_dir / EXPORT_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    return out_dir


def load_backbone(path: str | Path, map_location: str = "cpu") -> nn.Module:
    """Rebuild an exported backbone from its folder (safetensors: no unpickling), in
    eval mode. Its ``config.json`` is attached as ``model.export_config``."""
    from safetensors.torch import load_file

    from nolabel.backbones import build_backbone

    path = Path(path)
    cfg_path, weights = path / EXPORT_CONFIG, path / EXPORT_WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path} is not an exported backbone: expected {EXPORT_CONFIG} and "
                                f"{EXPORT_WEIGHTS} (make one with `nolabel export RUN_DIR OUT_DIR`)")
    config = json.loads(cfg_path.read_text())
    model = build_backbone(**config["backbone"])
    model.load_state_dict(load_file(str(weights), device=map_location))
    model.export_config = config
    return model.eval()
