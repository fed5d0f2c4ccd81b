"""Checkpoints: atomic save, exact resume, and backbone export as safetensors.

A checkpoint is loaded with ``torch.load(weights_only=True)``: only tensors and plain
containers, never pickled code. RNG states are stored as tensors and ints for that.
An exported backbone is ``backbone.safetensors`` plus ``config.json``.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"
EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_CONFIG = "config.json"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``:
    a crash mid-write never leaves a half-written file in place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def training_complete(path: Path) -> bool:
    """Whether the checkpoint at ``path`` ends its run: every epoch its config asks for
    is done (an interrupted run's checkpoint is mid-way and can be resumed)."""
    state = load_checkpoint(path)
    return state["epoch"] >= state["config"]["run"]["epochs"]


def rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [int(x) for x in random.getstate()[1]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((3, tuple(py), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def state_with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    out = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    if not out:
        raise KeyError(f"no weights under {prefix!r} in this checkpoint")
    return out


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
