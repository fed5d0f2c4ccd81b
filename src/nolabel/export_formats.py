"""Backbone export in formats other tools read: timm state dicts and TorchScript.

* ``timm``: ``model.safetensors``, a state dict whose keys and shapes are those of the
  matching timm model built with ``num_classes=0`` (so ``load_state_dict`` is strict):
  ``resnet18`` / ``resnet50`` (ImageNet stem, width 1) and ``vit_{tiny,small,base}_patch16_224``
  (patch 16, 12 blocks, MLP ratio 4; ``img_size`` given when it is not 224). Only two
  names differ from nolabel's: a residual block's ``shortcut`` is timm's ``downsample``,
  and the ViT's patch-embedding conv is ``patch_embed.proj``. A backbone with no timm
  equivalent is refused, naming every value that differs.
* ``torchscript``: ``backbone.pt``, ``torch.jit.trace`` of the backbone at the export's
  image size, loadable with ``torch.jit.load`` without nolabel. It maps normalised images
  (B, 3, S, S) to features (B, D); ``config.json`` is also stored inside it as an extra file.

Both write ``config.json`` beside the weights (the backbone spec, ``mean``/``std`` and the
run's metadata, plus how to load the file).
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nolabel.atomic import atomic_write
from nolabel.runs import EXPORT_CONFIG

TIMM_WEIGHTS = "model.safetensors"
TORCHSCRIPT_FILE = "backbone.pt"

# nolabel ViT size name -> (embed_dim, num_heads) of timm's model of that size.
_TIMM_VIT_SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}


class ExportError(ValueError):
    """A backbone that cannot be written in the asked format; the message says why."""


def timm_model(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The timm model name and ``create_model`` keyword arguments matching a backbone ``spec``.

    Raises:
        ExportError: no timm model has this architecture; names each difference.
    """
    name = spec.get("name")
    differs = []
    if spec.get("sobel"):
        differs.append("sobel=True (timm models take RGB, not a fixed Sobel filter)")
    if name in ("resnet18", "resnet50"):
        if spec.get("small_stem"):
            differs.append("small_stem=True (timm's has the 7x7 stride-2 stem and max-pool; "
                           "train with --model.small_stem=false)")
        if spec.get("width", 1.0) != 1.0:
            differs.append(f"width={spec['width']:g} (timm's {name} has width 1)")
        timm_name, kwargs = name, {"num_classes": 0}
    elif name in _TIMM_VIT_SIZES:
        dim, heads = _TIMM_VIT_SIZES[name]
        wanted = {"patch_size": 16, "embed_dim": dim, "depth": 12, "num_heads": heads, "mlp_ratio": 4.0}
        differs += [f"{key}={spec.get(key)} (timm's is {value})" for key, value in wanted.items()
                    if spec.get(key) != value]
        timm_name = f"{name}_patch16_224"
        kwargs = {"num_classes": 0}
        if spec.get("image_size", 224) != 224:
            kwargs["img_size"] = int(spec["image_size"])
    else:
        raise ExportError(f"backbone {name!r} has no timm equivalent (timm export covers resnet18, "
                          f"resnet50, {', '.join(_TIMM_VIT_SIZES)})")
    if differs:
        raise ExportError(f"this {name} has no timm equivalent: {'; '.join(differs)}")
    return timm_name, kwargs


def _timm_key(key: str, is_vit: bool) -> str:
    """A nolabel state-dict key -> timm's name for the same tensor."""
    if is_vit:
        return key.replace("patch_embed.", "patch_embed.proj.", 1) if key.startswith("patch_embed.") else key
    return key.replace(".shortcut.", ".downsample.")


def timm_state_dict(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's weights under timm's names (CPU, contiguous); see :func:`timm_model`."""
    timm_model(backbone.spec)  # refuses architectures timm does not have
    is_vit = backbone.spec["name"] in _TIMM_VIT_SIZES
    return {_timm_key(k, is_vit): v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}


def _write_config(out_dir: Path, config: dict[str, Any]) -> str:
    text = json.dumps(config, indent=2)
    atomic_write(out_dir / EXPORT_CONFIG, lambda tmp: tmp.write_text(text))
    return text


def export_timm(backbone: nn.Module, out_dir: Path, meta: dict[str, Any]) -> str:
    """Write ``model.safetensors`` (timm names) and ``config.json``; returns how to load it."""
    from safetensors.torch import save_file

    name, kwargs = timm_model(backbone.spec)
    tensors = timm_state_dict(backbone)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / TIMM_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    args = ", ".join([repr(name)] + [f"{k}={v!r}" for k, v in kwargs.items()])
    usage = (f"model = timm.create_model({args}); "
             f"model.load_state_dict(safetensors.torch.load_file('{out_dir / TIMM_WEIGHTS}'))")
    _write_config(out_dir, {"backbone": backbone.spec, **meta, "format": "timm",
                            "timm": {"model": name, "kwargs": kwargs}, "usage": usage})
    return usage


def export_torchscript(backbone: nn.Module, out_dir: Path, meta: dict[str, Any]) -> str:
    """Write ``backbone.pt`` (traced at ``meta['image_size']``, else the backbone's) and
    ``config.json``; returns how to load it."""
    size = int(meta.get("image_size") or backbone.spec["image_size"])
    out_dir = Path(out_dir)
    usage = (f"model = torch.jit.load('{out_dir / TORCHSCRIPT_FILE}'); features = model(images) "
             f"with images float (B, 3, {size}, {size}) normalised by mean {meta.get('mean')} "
             f"and std {meta.get('std')}")
    config = {"backbone": backbone.spec, **meta, "image_size": size, "format": "torchscript", "usage": usage}
    module = copy.deepcopy(backbone).cpu().float().eval()  # the caller's module is left as it was
    example = torch.zeros(1, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants
        warnings.simplefilter("ignore", DeprecationWarning)       # newer torch: asked for by name here
        traced = torch.jit.trace(module, example)
        out_dir.mkdir(parents=True, exist_ok=True)
        text = _write_config(out_dir, config)
        atomic_write(out_dir / TORCHSCRIPT_FILE,
                     lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={EXPORT_CONFIG: text}))
    return usage
